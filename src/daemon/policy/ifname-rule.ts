/**
 * Linux interface names (network, bridge and NIC names in tapd.conf): 1..15 bytes of
 * [A-Za-z0-9_.-], and not "." or "..". Anything else is rejected, never truncated: a name
 * cut to IFNAMSIZ-1 bytes can name a different interface (CVE-2019-13164, qemu-bridge-helper).
 * The kernel layer (src/sys) has its own check; the two will be unified later.
 */
export function isValidIfName(s: string): boolean {
  return /^[A-Za-z0-9_.-]{1,15}$/.test(s) && s !== '.' && s !== '..';
}
