// Linux bridges through the classic SIOCBR* ioctls.
import { C, LAYOUT } from './constants.js';
import type { IfName } from './ifname.js';
import { sysIoctl } from './libc.js';
import { getDriver, getMac, getMtu, ifreq, indexOrZero, setDown, setMac, setMtu, withControlSocket } from './netdev.js';
import type { Mac } from './mac.js';
import { SystemError } from '../errors/system-error.js';

/** SIOCBRADDBR/SIOCBRDELBR take the bare name (char[IFNAMSIZ]), not an ifreq. */
function nameArg(name: IfName): Buffer {
  const buf = Buffer.alloc(C.IFNAMSIZ);
  if (buf.write(name.value, 0, C.IFNAMSIZ - 1, 'utf8') !== Buffer.byteLength(name.value)) {
    throw new RangeError(`interface name ${name.value} does not fit IFNAMSIZ`);
  }
  return buf;
}

export function exists(name: IfName): boolean {
  return indexOrZero(name) !== 0;
}

/** Whether the device is a bridge; false when there is no such device (one ethtool ioctl). */
export function isBridge(name: IfName): boolean {
  try {
    return getDriver(name) === 'bridge';
  } catch (err) {
    // A device without ethtool support (lo) is simply not a bridge, nor is one that is not there.
    if (err instanceof SystemError && (err.errno === C.EOPNOTSUPP || err.errno === C.ENODEV)) return false;
    throw err;
  }
}

export function createBridge(name: IfName): void {
  withControlSocket((fd) => sysIoctl(fd, C.SIOCBRADDBR, nameArg(name), { action: `create bridge ${name}`, device: name.value }));
}

/** Deletes a bridge; it must be down first or the kernel answers EBUSY. Slow (~35 ms): keep off hot paths. */
export function deleteBridge(name: IfName): void {
  setDown(name);
  withControlSocket((fd) => sysIoctl(fd, C.SIOCBRDELBR, nameArg(name), { action: `delete bridge ${name}`, device: name.value }));
}

function portIoctl(bridge: IfName, port: IfName, request: number, verb: string): void {
  const index = indexOrZero(port);
  const ctx = { action: `${verb} ${port} ${verb === 'add' ? 'to' : 'from'} bridge ${bridge}`, device: port.value };
  if (index === 0) throw new SystemError(ctx.action, 'SIOCGIFINDEX', C.ENODEV, 'No such device', port.value);
  const req = ifreq(bridge);
  req.writeInt32LE(index, LAYOUT['ifreq.ifr_ifindex']);
  withControlSocket((fd) => sysIoctl(fd, request, req, ctx));
}

export function removePort(bridge: IfName, port: IfName): void {
  portIoctl(bridge, port, C.SIOCBRDELIF, 'remove');
}

export interface AddPortOptions {
  /** MTU for the port; default: the bridge's (a smaller port MTU would lower the whole bridge's). */
  mtu?: number;
  /** Host-side MAC for the port, one that cannot become the bridge's address (see Mac.hostSide). */
  hostMac?: Mac;
}

/** Adds `port` to `bridge`, giving it its MTU and host-side MAC first. */
export function addPort(bridge: IfName, port: IfName, opts: AddPortOptions = {}): void {
  const mtu = opts.mtu ?? getMtu(bridge);
  if (getMtu(port) !== mtu) setMtu(port, mtu);
  if (opts.hostMac !== undefined) setMac(port, opts.hostMac);
  portIoctl(bridge, port, C.SIOCBRADDIF, 'add');
}

export { getMac as bridgeMac, getMtu as bridgeMtu };
