// macvtap devices: a MAC of its own on a NIC, frames through a character device /dev/tapN
// (N = ifindex). Unlike a TAP, the device outlives its fds: whoever created it deletes it.
import { fstatSync, readFileSync, statSync } from 'node:fs';
import { C, LAYOUT } from './constants.js';
import type { IfName } from './ifname.js';
import { sysClose, sysIoctl, sysOpen } from './libc.js';
import type { Mac } from './mac.js';
import { ifinfomsg, nlattr, request, u32 } from './rtnetlink.js';
import { SystemError } from '../errors/system-error.js';

export type MacvtapMode = 'bridge' | 'vepa' | 'private' | 'passthru';

const MODES: Record<MacvtapMode, number> = {
  bridge: C.MACVLAN_MODE_BRIDGE, vepa: C.MACVLAN_MODE_VEPA, private: C.MACVLAN_MODE_PRIVATE, passthru: C.MACVLAN_MODE_PASSTHRU,
};

export interface MacvtapOptions {
  name: IfName;
  /** ifindex of the NIC it sits on. */
  lower: number;
  mode: MacvtapMode;
  /** The guest's MAC: a macvtap's own address is the one the NIC accepts frames for. */
  address: Mac;
  mtu?: number;
}

/** RTM_NEWLINK kind "macvtap", NLM_F_EXCL (an existing name is EEXIST, never reused). Down. */
export function createMacvtap(o: MacvtapOptions): void {
  const data = nlattr(C.IFLA_INFO_DATA | C.NLA_F_NESTED, nlattr(C.IFLA_MACVLAN_MODE, u32(MODES[o.mode])));
  const linkinfo = nlattr(C.IFLA_LINKINFO | C.NLA_F_NESTED, Buffer.concat([nlattr(C.IFLA_INFO_KIND, Buffer.from('macvtap\0')), data]));
  const attrs = [
    nlattr(C.IFLA_IFNAME, Buffer.from(`${o.name.value}\0`)),
    nlattr(C.IFLA_LINK, u32(o.lower)),
    nlattr(C.IFLA_ADDRESS, o.address.bytes),
    ...(o.mtu !== undefined ? [nlattr(C.IFLA_MTU, u32(o.mtu))] : []),
    linkinfo,
  ];
  request(C.RTM_NEWLINK, C.NLM_F_ACK | C.NLM_F_CREATE | C.NLM_F_EXCL, Buffer.concat([ifinfomsg(C.AF_UNSPEC, 0), ...attrs]),
    `create macvtap ${o.name}`, o.name.value);
}

/** The character device of a macvtap: its node's path and the device number sysfs gives. */
export interface MacvtapNode {
  path: string;
  major: number;
  minor: number;
}

/** /sys/class/net/NAME/macvtap/tapN/dev says "major:minor" (sysfs of this network namespace). */
export function macvtapNode(name: IfName, ifindex: number): MacvtapNode {
  const text = readFileSync(`/sys/class/net/${name.value}/macvtap/tap${ifindex}/dev`, 'utf8').trim();
  const m = /^(\d+):(\d+)$/.exec(text);
  if (!m) throw new Error(`unexpected device number "${text}" for macvtap ${name.value}`);
  return { path: `/dev/tap${ifindex}`, major: Number(m[1]), minor: Number(m[2]) };
}

/** glibc's major()/minor() of a st_rdev. */
function splitRdev(rdev: number): { major: number; minor: number } {
  const r = BigInt(rdev);
  return {
    major: Number(((r >> 8n) & 0xfffn) | ((r >> 32n) & ~0xfffn)),
    minor: Number((r & 0xffn) | ((r >> 12n) & ~0xffn)),
  };
}

/** Whether a path or fd is this character device (a node of another namespace's tapN is not). */
export function isNodeOf(st: { rdev: number; mode: number }, node: MacvtapNode): boolean {
  const { major, minor } = splitRdev(st.rdev);
  return (st.mode & 0o170000) === 0o020000 && major === node.major && minor === node.minor;
}

/** stat of the node's path: undefined when there is no such file. */
export function statNode(node: MacvtapNode): { ino: number; dev: number; rdev: number; mode: number } | undefined {
  try {
    return statSync(node.path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * Opens `queues` queue fds on the node (each open is a queue, O_RDWR|O_CLOEXEC) and sets each
 * queue's flags (the kernel's default has IFF_VNET_HDR on). Every fd is checked to be the
 * device sysfs named, and the inode `expect` (the one being watched). Closes all on failure.
 */
export function openMacvtapQueues(node: MacvtapNode, queues: number, vnetHdr: boolean, expect: { ino: number; dev: number }): number[] {
  const fds: number[] = [];
  try {
    let flags = C.IFF_TAP | C.IFF_NO_PI;
    if (vnetHdr) flags |= C.IFF_VNET_HDR;
    if (queues > 1) flags |= C.IFF_MULTI_QUEUE;
    for (let i = 0; i < queues; i++) {
      const fd = sysOpen(node.path, C.O_RDWR | C.O_CLOEXEC, { action: `open ${node.path}`, device: node.path });
      fds.push(fd);
      const st = fstatSync(fd);
      if (!isNodeOf(st, node) || st.ino !== expect.ino || st.dev !== expect.dev) {
        throw new SystemError(`open ${node.path}`, 'open', C.ENODEV, `${node.path} is not device ${node.major}:${node.minor}`, node.path);
      }
      const req = Buffer.alloc(LAYOUT['sizeof struct ifreq']);
      req.writeUInt16LE(flags, LAYOUT['ifreq.ifr_flags']);
      sysIoctl(fd, C.TUNSETIFF, req, { action: `set flags of ${node.path} queue ${i}`, device: node.path });
    }
    return fds;
  } catch (err) {
    for (const fd of fds) sysClose(fd);
    throw err;
  }
}
