// Accounts through NSS (getpwuid_r, getpwnam_r, getgrnam_r, getgrouplist), so users and groups
// from LDAP, SSSD or extrausers are found exactly as login and sudo find them. The reentrant
// calls fill our own buffer, and every pointer they return points into it: we read strings by
// offset and never dereference a foreign address.
import { addressOf, LIBC_C, sysGetgrnamR, sysGetgrouplist, sysGetpwnamR, sysGetpwuidR } from './libc.js';

/** struct passwd and struct group on x86_64 glibc (test/exec-nss-layout.test.ts checks them against <pwd.h>, <grp.h>). */
export const NSS_LAYOUT = {
  'sizeof struct passwd': 48,
  'passwd.pw_name': 0,
  'passwd.pw_uid': 16,
  'passwd.pw_gid': 20,
  'passwd.pw_dir': 32,
  'sizeof struct group': 32,
  'group.gr_name': 0,
  'group.gr_gid': 16,
} as const;

export interface NssUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

const MAX_BUF = 1 << 20;

/** Runs a *_r call with a growing buffer; undefined when there is no such entry. */
function lookup(size: number, call: (entry: Buffer, buf: Buffer, result: Buffer) => number): { entry: Buffer; buf: Buffer } | undefined {
  for (let len = 4096; len <= MAX_BUF; len *= 4) {
    const entry = Buffer.alloc(size);
    const buf = Buffer.alloc(len);
    const result = Buffer.alloc(8);
    const rc = call(entry, buf, result);
    if (rc === LIBC_C.ERANGE) continue;
    // Not found is rc 0 with a NULL result; a failing NSS module (ENOENT, EIO...) is "not found" too.
    if (rc !== 0 || result.readBigUInt64LE(0) === 0n) return undefined;
    return { entry, buf };
  }
  return undefined;
}

/** The NUL-terminated string a pointer in `entry` at `offset` points to, inside `buf`. */
function stringAt(entry: Buffer, offset: number, buf: Buffer): string {
  const p = entry.readBigUInt64LE(offset);
  const start = Number(p - addressOf(buf));
  if (p === 0n || start < 0 || start >= buf.length) return '';
  const end = buf.indexOf(0, start);
  return buf.subarray(start, end < 0 ? buf.length : end).toString('utf8');
}

function user(found: { entry: Buffer; buf: Buffer } | undefined): NssUser | undefined {
  if (!found) return undefined;
  const { entry, buf } = found;
  return {
    name: stringAt(entry, NSS_LAYOUT['passwd.pw_name'], buf),
    uid: entry.readUInt32LE(NSS_LAYOUT['passwd.pw_uid']),
    gid: entry.readUInt32LE(NSS_LAYOUT['passwd.pw_gid']),
    home: stringAt(entry, NSS_LAYOUT['passwd.pw_dir'], buf) || '/',
  };
}

export function nssGetpwuid(uid: number): NssUser | undefined {
  return user(lookup(NSS_LAYOUT['sizeof struct passwd'], (e, b, r) => sysGetpwuidR(uid, e, b, r)));
}

export function nssGetpwnam(name: string): NssUser | undefined {
  if (name === '' || name.includes('\0')) return undefined;
  return user(lookup(NSS_LAYOUT['sizeof struct passwd'], (e, b, r) => sysGetpwnamR(name, e, b, r)));
}

/** A group's gid by name. */
export function nssGetgrnam(name: string): number | undefined {
  if (name === '' || name.includes('\0')) return undefined;
  const found = lookup(NSS_LAYOUT['sizeof struct group'], (e, b, r) => sysGetgrnamR(name, e, b, r));
  return found?.entry.readUInt32LE(NSS_LAYOUT['group.gr_gid']);
}

/** What initgroups(3) would give `name`: `gid` first, then every group NSS lists the user in. */
export function nssGrouplist(name: string, gid: number): number[] {
  let n = 64;
  for (let tries = 0; tries < 8; tries++) {
    const groups = Buffer.alloc(4 * n);
    const count = Buffer.alloc(4);
    count.writeInt32LE(n, 0);
    const rc = sysGetgrouplist(name, gid, groups, count);
    const got = count.readInt32LE(0);
    if (rc >= 0) return [...new Set([gid, ...Array.from({ length: got }, (_, i) => groups.readUInt32LE(4 * i))])];
    n = Math.max(got, n * 2);
  }
  return [gid];
}
