// TAP devices through /dev/net/tun.
import { closeSync } from 'node:fs';
import { C, LAYOUT } from './constants.js';
import { IfName } from './ifname.js';
import { sysClose, sysIoctl, sysIoctlInt, sysOpen } from './libc.js';
import { ifreq, ifreqName } from './netdev.js';
import { TapdError } from '../errors/tapd-error.js';

/** The kernel's limit (MAX_TAP_QUEUES in drivers/net/tun.c); tapd's own, smaller one is the protocol's. */
export const MAX_TAP_QUEUES = 256;

export interface TapOptions {
  /** An explicit name, or a template with one %d (default `tap%d`). */
  name?: IfName;
  vnetHdr?: boolean;
  /** Number of queue fds, 1..16. More than 1 creates an IFF_MULTI_QUEUE device. */
  queues?: number;
  /**
   * The uid that owns the device (TUNSETOWNER), set before any further queue attaches. The
   * kernel (tun_not_capable) lets anyone without CAP_NET_ADMIN attach a queue to an unowned
   * TAP by name; an owned one only its owner.
   */
  owner?: number;
}

export interface Tap {
  name: IfName;
  /** One fd per queue, each O_CLOEXEC; the device lives while any is open. */
  fds: number[];
  flags: number;
}

function setIff(fd: number, name: IfName, flags: number, action: string): Buffer {
  const req = ifreq(name);
  req.writeUInt16LE(flags, LAYOUT['ifreq.ifr_flags']);
  sysIoctl(fd, C.TUNSETIFF, req, { action, device: name.value });
  return req;
}

/**
 * Creates a non-persistent TAP: the kernel deletes it when its last fd closes.
 * Always IFF_TUN_EXCL, so we never attach to a device that already exists (the kernel would
 * otherwise let a CAP_NET_ADMIN caller grab another user's persistent TAP): an existing name is EBUSY.
 */
export function createTap(opts: TapOptions = {}): Tap {
  const queues = opts.queues ?? 1;
  if (!Number.isInteger(queues) || queues < 1 || queues > MAX_TAP_QUEUES) {
    throw new TapdError('invalid_queues', `queue count must be 1..${MAX_TAP_QUEUES}, got ${queues}`);
  }
  const template = opts.name ?? IfName.parseTemplate('tap%d');
  let flags = C.IFF_TAP | C.IFF_NO_PI;
  if (opts.vnetHdr) flags |= C.IFF_VNET_HDR;
  if (queues > 1) flags |= C.IFF_MULTI_QUEUE;

  const fds: number[] = [];
  try {
    const first = sysOpen('/dev/net/tun', C.O_RDWR | C.O_CLOEXEC, { action: 'open /dev/net/tun' });
    fds.push(first);
    const req = setIff(first, template, flags | C.IFF_TUN_EXCL, `create TAP ${template}`);
    // The kernel's own answer is the name we use from here on (it filled in any %d).
    const name = IfName.parse(ifreqName(req));
    // Until the owner is set, anyone may attach a queue to a multiqueue TAP by name: the caller
    // checks the queue count afterwards (getLink(...).tun.queues) to catch such a racer.
    if (opts.owner !== undefined) sysIoctlInt(first, C.TUNSETOWNER, opts.owner, { action: `set owner of ${name}`, device: name.value });
    for (let i = 1; i < queues; i++) {
      const fd = sysOpen('/dev/net/tun', C.O_RDWR | C.O_CLOEXEC, { action: 'open /dev/net/tun' });
      fds.push(fd);
      setIff(fd, name, flags, `attach queue ${i} to ${name}`);
    }
    return { name, fds, flags };
  } catch (err) {
    for (const fd of fds) sysClose(fd);
    throw err;
  }
}

/** TUNGETIFF on a TAP fd: the device's name and its IFF_* flags. Works on any fd we hold. */
export function tapInfo(fd: number): { name: string; flags: number } {
  const req = Buffer.alloc(LAYOUT['sizeof struct ifreq']);
  sysIoctl(fd, C.TUNGETIFF, req, { action: `read TAP info of fd ${fd}` });
  return { name: ifreqName(req), flags: req.readUInt16LE(LAYOUT['ifreq.ifr_flags']) };
}

/** Closes every queue fd synchronously (the last close deletes the device: ~16 ms in the kernel). */
export function closeTapSync(tap: Tap): void {
  for (const fd of tap.fds.splice(0)) closeSync(fd);
}
