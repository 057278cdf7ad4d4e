// Per-device ioctls on a control socket: flags, MTU, MAC, index, driver name, bridges.
import { readFileSync } from 'node:fs';
import { C, LAYOUT } from './constants.js';
import type { IfName } from './ifname.js';
import { addressOf, sysIoctl, sysSocket, type Ctx } from './libc.js';
import { Mac } from './mac.js';
import { SystemError } from '../errors/system-error.js';

const UNION = LAYOUT['ifreq.ifr_flags'];

/**
 * A zeroed struct ifreq with ifr_name set. Takes only a validated IfName (at most IFNAMSIZ-1
 * bytes), and checks the copy anyway: a name is never truncated on its way to the kernel.
 */
export function ifreq(name: IfName): Buffer {
  const buf = Buffer.alloc(LAYOUT['sizeof struct ifreq']);
  const written = buf.write(name.value, LAYOUT['ifreq.ifr_name'], C.IFNAMSIZ - 1, 'utf8');
  if (written !== Buffer.byteLength(name.value)) throw new RangeError(`interface name ${name.value} does not fit ifr_name`);
  return buf;
}

/** The name the kernel wrote back into an ifreq (TUNSETIFF fills in templates). */
export function ifreqName(buf: Buffer): string {
  const raw = buf.subarray(LAYOUT['ifreq.ifr_name'], LAYOUT['ifreq.ifr_name'] + C.IFNAMSIZ);
  const end = raw.indexOf(0);
  return raw.subarray(0, end < 0 ? raw.length : end).toString('utf8');
}

let controlFd = -1;

/**
 * Runs `fn` with the process's control socket (AF_INET datagram, CLOEXEC): device ioctls need
 * some socket. One is opened on first use and kept; it belongs to the network namespace the
 * process was in then, which for tapd never changes.
 */
export function withControlSocket<T>(fn: (fd: number) => T): T {
  if (controlFd < 0) controlFd = sysSocket(C.AF_INET, C.SOCK_DGRAM | C.SOCK_CLOEXEC, 0, { action: 'open control socket' });
  return fn(controlFd);
}

function ioctlOn(name: IfName, request: number, fill: (buf: Buffer) => void, ctx: Ctx): Buffer {
  const buf = ifreq(name);
  fill(buf);
  withControlSocket((fd) => sysIoctl(fd, request, buf, ctx));
  return buf;
}

export function getFlags(name: IfName): number {
  return ioctlOn(name, C.SIOCGIFFLAGS, () => {}, { action: `read flags of ${name}`, device: name.value }).readUInt16LE(UNION);
}

export function setUp(name: IfName): void {
  const flags = getFlags(name);
  if (flags & C.IFF_UP) return;
  ioctlOn(name, C.SIOCSIFFLAGS, (b) => b.writeUInt16LE(flags | C.IFF_UP, UNION), { action: `bring ${name} up`, device: name.value });
}

export function setDown(name: IfName): void {
  const flags = getFlags(name);
  if (!(flags & C.IFF_UP)) return;
  ioctlOn(name, C.SIOCSIFFLAGS, (b) => b.writeUInt16LE(flags & ~C.IFF_UP, UNION), { action: `bring ${name} down`, device: name.value });
}

export function getMtu(name: IfName): number {
  return ioctlOn(name, C.SIOCGIFMTU, () => {}, { action: `read MTU of ${name}`, device: name.value }).readInt32LE(UNION);
}

export function setMtu(name: IfName, mtu: number): void {
  ioctlOn(name, C.SIOCSIFMTU, (b) => b.writeInt32LE(mtu, UNION), { action: `set MTU ${mtu} on ${name}`, device: name.value });
}

export function getMac(name: IfName): Mac {
  const buf = ioctlOn(name, C.SIOCGIFHWADDR, () => {}, { action: `read MAC of ${name}`, device: name.value });
  const data = UNION + LAYOUT['sockaddr.sa_data'];
  return Mac.fromBytes(buf.subarray(data, data + 6));
}

export function setMac(name: IfName, mac: Mac): void {
  ioctlOn(name, C.SIOCSIFHWADDR, (b) => {
    b.writeUInt16LE(C.ARPHRD_ETHER, UNION + LAYOUT['sockaddr.sa_family']);
    mac.bytes.copy(b, UNION + LAYOUT['sockaddr.sa_data']);
  }, { action: `set MAC ${mac} on ${name}`, device: name.value });
}

/**
 * Whether the device's MAC was set explicitly (addr_assign_type NET_ADDR_SET). A bridge whose MAC
 * is not fixed takes the lowest of its ports' addresses, so a new port can change it.
 */
export function macIsFixed(name: IfName): boolean {
  const NET_ADDR_SET = 3;
  return Number(readFileSync(`/sys/class/net/${name.value}/addr_assign_type`, 'utf8').trim()) === NET_ADDR_SET;
}

export function getIndex(name: IfName): number {
  return ioctlOn(name, C.SIOCGIFINDEX, () => {}, { action: `look up ${name}`, device: name.value }).readInt32LE(UNION);
}

/**
 * The device's index, 0 when there is none (ENODEV). One ioctl on the kept control socket:
 * if_nametoindex(3) opens and closes a socket on every call.
 */
export function indexOrZero(name: IfName): number {
  try {
    return getIndex(name);
  } catch (err) {
    if (err instanceof SystemError && err.errno === C.ENODEV) return 0;
    throw err;
  }
}

/** The kernel driver behind a device ("bridge", "tun", "veth", ...), from ETHTOOL_GDRVINFO. */
export function getDriver(name: IfName): string {
  const info = Buffer.alloc(LAYOUT['sizeof struct ethtool_drvinfo']);
  info.writeUInt32LE(C.ETHTOOL_GDRVINFO, LAYOUT['ethtool_drvinfo.cmd']);
  ioctlOn(name, C.SIOCETHTOOL, (b) => b.writeBigUInt64LE(addressOf(info), LAYOUT['ifreq.ifr_data']), {
    action: `read driver of ${name}`,
    device: name.value,
  });
  const driver = info.subarray(LAYOUT['ethtool_drvinfo.driver'], LAYOUT['ethtool_drvinfo.driver'] + 32);
  const end = driver.indexOf(0);
  return driver.subarray(0, end < 0 ? 32 : end).toString('utf8');
}
