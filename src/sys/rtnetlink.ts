// rtnetlink requests: configure a link in one message, read one link, delete one, port flags.
// One request socket per process, used synchronously: the kernel answers an rtnetlink request
// inside sendmsg(), so the reply is queued by the time recv() runs.
import { C, LAYOUT } from './constants.js';
import { sysBind, sysRecv, sysSend, sysSocket } from './libc.js';
import { Mac } from './mac.js';
import { SystemError } from '../errors/system-error.js';

const NLMSG_HDR = LAYOUT['sizeof struct nlmsghdr'];
const IFINFO = LAYOUT['sizeof struct ifinfomsg'];
const NLA_HDR = LAYOUT['sizeof struct nlattr'];
const align4 = (n: number): number => (n + 3) & ~3;

export function nlattr(type: number, payload: Buffer): Buffer {
  const len = NLA_HDR + payload.length;
  const buf = Buffer.alloc(align4(len));
  buf.writeUInt16LE(len, 0);
  buf.writeUInt16LE(type, 2);
  payload.copy(buf, NLA_HDR);
  return buf;
}

export function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value, 0);
  return b;
}

export function ifinfomsg(family: number, ifindex: number, flags = 0, change = 0): Buffer {
  const ifi = Buffer.alloc(IFINFO);
  ifi.writeUInt8(family, LAYOUT['ifinfomsg.ifi_family']);
  ifi.writeInt32LE(ifindex, LAYOUT['ifinfomsg.ifi_index']);
  ifi.writeUInt32LE(flags, LAYOUT['ifinfomsg.ifi_flags']);
  ifi.writeUInt32LE(change, LAYOUT['ifinfomsg.ifi_change']);
  return ifi;
}

let requestFd = -1;
let seq = 0;
const replyBuf = Buffer.alloc(64 * 1024);

function socketFd(): number {
  if (requestFd < 0) {
    const fd = sysSocket(C.AF_NETLINK, C.SOCK_RAW | C.SOCK_CLOEXEC, C.NETLINK_ROUTE, { action: 'open rtnetlink socket' });
    const addr = Buffer.alloc(LAYOUT['sizeof struct sockaddr_nl']);
    addr.writeUInt16LE(C.AF_NETLINK, LAYOUT['sockaddr_nl.nl_family']);
    sysBind(fd, addr, { action: 'bind rtnetlink socket' });
    requestFd = fd;
  }
  return requestFd;
}

/**
 * Sends one request and returns the payload of its answer: for a request with NLM_F_ACK the ACK
 * (an error becomes a SystemError), for RTM_GETLINK the RTM_NEWLINK message body.
 */
export function request(type: number, flags: number, body: Buffer, action: string, device: string): Buffer | undefined {
  const fd = socketFd();
  const mySeq = ++seq;
  const hdr = Buffer.alloc(NLMSG_HDR);
  hdr.writeUInt32LE(NLMSG_HDR + body.length, LAYOUT['nlmsghdr.nlmsg_len']);
  hdr.writeUInt16LE(type, LAYOUT['nlmsghdr.nlmsg_type']);
  hdr.writeUInt16LE(C.NLM_F_REQUEST | flags, LAYOUT['nlmsghdr.nlmsg_flags']);
  hdr.writeUInt32LE(mySeq, LAYOUT['nlmsghdr.nlmsg_seq']);
  sysSend(fd, Buffer.concat([hdr, body]), 0, { action, device });
  for (;;) {
    const n = sysRecv(fd, replyBuf, 0, { action, device });
    for (let off = 0; off + NLMSG_HDR <= n;) {
      const len = replyBuf.readUInt32LE(off + LAYOUT['nlmsghdr.nlmsg_len']);
      if (len < NLMSG_HDR || off + len > n) break;
      const msgType = replyBuf.readUInt16LE(off + LAYOUT['nlmsghdr.nlmsg_type']);
      const msgSeq = replyBuf.readUInt32LE(off + LAYOUT['nlmsghdr.nlmsg_seq']);
      const payload = replyBuf.subarray(off + NLMSG_HDR, off + len);
      off += align4(len);
      if (msgSeq !== mySeq) continue; // an answer to an earlier request that gave up
      if (msgType === C.NLMSG_ERROR) {
        const error = -payload.readInt32LE(LAYOUT['nlmsgerr.error']);
        if (error !== 0) throw new SystemError(action, 'rtnetlink', error, `netlink error ${error}`, device);
        return undefined;
      }
      return Buffer.from(payload);
    }
  }
}

/** What a link configuration sets; every field optional. Applied by the kernel in this order. */
export interface LinkConfig {
  address?: Mac;
  mtu?: number;
  /** ifindex of the bridge to enslave to. */
  master?: number;
  up?: boolean;
}

/**
 * One RTM_SETLINK for the whole configuration: one rtnl round trip instead of an ioctl per
 * setting. The kernel applies address, MTU, master, then flags (net/core/rtnetlink.c do_setlink).
 */
export function setLink(ifindex: number, device: string, cfg: LinkConfig): void {
  const attrs: Buffer[] = [];
  if (cfg.address) attrs.push(nlattr(C.IFLA_ADDRESS, cfg.address.bytes));
  if (cfg.mtu !== undefined) attrs.push(nlattr(C.IFLA_MTU, u32(cfg.mtu)));
  if (cfg.master !== undefined) attrs.push(nlattr(C.IFLA_MASTER, u32(cfg.master)));
  const ifi = cfg.up === undefined ? ifinfomsg(C.AF_UNSPEC, ifindex) : ifinfomsg(C.AF_UNSPEC, ifindex, cfg.up ? C.IFF_UP : 0, C.IFF_UP);
  request(C.RTM_SETLINK, C.NLM_F_ACK, Buffer.concat([ifi, ...attrs]), `configure ${device}`, device);
}

/** Deletes a link by index (any kind, TAPs included: the kernel detaches every queue fd). */
export function deleteLink(ifindex: number, device: string): void {
  request(C.RTM_DELLINK, C.NLM_F_ACK, ifinfomsg(C.AF_UNSPEC, ifindex), `delete ${device}`, device);
}

/** What the kernel reports about a tun/tap device (IFLA_INFO_DATA of kind "tun"). */
export interface TunState {
  /** -1 when the device has no owner. */
  owner: number;
  /** -1 when the device has no group. */
  group: number;
  persist: boolean;
  multiQueue: boolean;
  /** Attached queues, detached ones included (multiqueue devices only; 0 otherwise). */
  queues: number;
}

export interface LinkState {
  ifindex: number;
  ifname: string;
  address?: Mac;
  mtu?: number;
  master?: number;
  /** IFLA_LINK: the lower device (a macvtap's NIC). */
  link?: number;
  kind?: string;
  tun?: TunState;
}

/** Attributes of one nlattr stream, by type (the last one of a type wins). */
function attributes(buf: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (let off = 0; off + NLA_HDR <= buf.length;) {
    const len = buf.readUInt16LE(off);
    if (len < NLA_HDR || off + len > buf.length) break;
    out.set(buf.readUInt16LE(off + 2) & ~C.NLA_F_NESTED, buf.subarray(off + NLA_HDR, off + len));
    off += align4(len);
  }
  return out;
}

const cString = (b: Buffer): string => {
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString('utf8');
};

/** Parses the body (ifinfomsg + attributes) of an RTM_NEWLINK message. */
export function parseLink(body: Buffer): LinkState | undefined {
  if (body.length < IFINFO) return undefined;
  const attrs = attributes(body.subarray(IFINFO));
  const name = attrs.get(C.IFLA_IFNAME);
  const state: LinkState = { ifindex: body.readInt32LE(LAYOUT['ifinfomsg.ifi_index']), ifname: name ? cString(name) : '' };
  const address = attrs.get(C.IFLA_ADDRESS);
  if (address?.length === 6) state.address = Mac.fromBytes(address);
  const mtu = attrs.get(C.IFLA_MTU);
  if (mtu?.length === 4) state.mtu = mtu.readUInt32LE(0);
  const master = attrs.get(C.IFLA_MASTER);
  if (master?.length === 4) state.master = master.readUInt32LE(0);
  const lower = attrs.get(C.IFLA_LINK);
  if (lower?.length === 4) state.link = lower.readUInt32LE(0);
  const linkinfo = attrs.get(C.IFLA_LINKINFO);
  if (linkinfo) {
    const info = attributes(linkinfo);
    const kind = info.get(C.IFLA_INFO_KIND);
    if (kind) state.kind = cString(kind);
    const data = info.get(C.IFLA_INFO_DATA);
    if (state.kind === 'tun' && data) {
      const d = attributes(data);
      const u8 = (t: number): number => d.get(t)?.readUInt8(0) ?? 0;
      const id = (t: number): number => {
        const v = d.get(t);
        return v?.length === 4 ? v.readInt32LE(0) : -1;
      };
      state.tun = {
        owner: id(C.IFLA_TUN_OWNER), group: id(C.IFLA_TUN_GROUP), persist: u8(C.IFLA_TUN_PERSIST) !== 0,
        multiQueue: u8(C.IFLA_TUN_MULTI_QUEUE) !== 0,
        queues: (d.get(C.IFLA_TUN_NUM_QUEUES)?.readUInt32LE(0) ?? 0) + (d.get(C.IFLA_TUN_NUM_DISABLED_QUEUES)?.readUInt32LE(0) ?? 0),
      };
    }
  }
  return state;
}

/** The link with this index as the kernel reports it now; undefined when there is none. */
export function getLink(ifindex: number): LinkState | undefined {
  try {
    const body = request(C.RTM_GETLINK, 0, ifinfomsg(C.AF_UNSPEC, ifindex), `read link ${ifindex}`, String(ifindex));
    return body ? parseLink(body.subarray(0)) : undefined;
  } catch (err) {
    if (err instanceof SystemError && err.errno === C.ENODEV) return undefined;
    throw err;
  }
}

/**
 * Port isolation (IFLA_BRPORT_ISOLATED): an isolated port talks only to non-isolated ports, so
 * VMs on one network reach the uplink but not each other.
 */
export function setPortIsolated(ifindex: number, device: string, isolated: boolean): void {
  const protinfo = nlattr(C.IFLA_PROTINFO | C.NLA_F_NESTED, nlattr(C.IFLA_BRPORT_ISOLATED, Buffer.from([isolated ? 1 : 0])));
  request(C.RTM_SETLINK, C.NLM_F_ACK, Buffer.concat([ifinfomsg(C.AF_BRIDGE, ifindex), protinfo]), `${isolated ? 'isolate' : 'un-isolate'} bridge port ${device}`, device);
}
