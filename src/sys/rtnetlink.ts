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

/**
 * Calls visit(type, payloadStart, payloadEnd) for each attribute in buf[start, end): offsets
 * only, no Buffer per attribute (an RTM_NEWLINK carries ~50, of which parseLink uses a few).
 * A later attribute of one type overrides an earlier one.
 */
function eachAttr(buf: Buffer, start: number, end: number, visit: (type: number, from: number, to: number) => void): void {
  for (let off = start; off + NLA_HDR <= end;) {
    const len = buf.readUInt16LE(off);
    if (len < NLA_HDR || off + len > end) break;
    visit(buf.readUInt16LE(off + 2) & ~C.NLA_F_NESTED, off + NLA_HDR, off + len);
    off += align4(len);
  }
}

const cStringAt = (b: Buffer, from: number, to: number): string => {
  const nul = b.indexOf(0, from);
  return b.toString('utf8', from, nul < 0 || nul > to ? to : nul);
};

/** Parses the body (ifinfomsg + attributes) of an RTM_NEWLINK message. */
export function parseLink(body: Buffer): LinkState | undefined {
  if (body.length < IFINFO) return undefined;
  const state: LinkState = { ifindex: body.readInt32LE(LAYOUT['ifinfomsg.ifi_index']), ifname: '' };
  // -1: absent. Only what is used becomes a string, a Mac or a number.
  let name = -1, nameEnd = 0, address = -1, info = -1, infoEnd = 0;
  const u32At = (from: number, to: number): number | undefined => (to - from === 4 ? body.readUInt32LE(from) : undefined);
  eachAttr(body, IFINFO, body.length, (type, from, to) => {
    switch (type) {
      case C.IFLA_IFNAME: name = from; nameEnd = to; break;
      case C.IFLA_ADDRESS: address = to - from === 6 ? from : -1; break;
      case C.IFLA_MTU: state.mtu = u32At(from, to); break;
      case C.IFLA_MASTER: state.master = u32At(from, to); break;
      case C.IFLA_LINK: state.link = u32At(from, to); break;
      case C.IFLA_LINKINFO: info = from; infoEnd = to; break;
    }
  });
  if (state.mtu === undefined) delete state.mtu;
  if (state.master === undefined) delete state.master;
  if (state.link === undefined) delete state.link;
  if (name >= 0) state.ifname = cStringAt(body, name, nameEnd);
  if (address >= 0) state.address = Mac.fromBytes(body.subarray(address, address + 6));
  if (info >= 0) {
    let kind = -1, kindEnd = 0, data = -1, dataEnd = 0;
    eachAttr(body, info, infoEnd, (type, from, to) => {
      if (type === C.IFLA_INFO_KIND) { kind = from; kindEnd = to; } else if (type === C.IFLA_INFO_DATA) { data = from; dataEnd = to; }
    });
    if (kind >= 0) state.kind = cStringAt(body, kind, kindEnd);
    if (state.kind === 'tun' && data >= 0) {
      let owner = -1, group = -1, persist = 0, multiQueue = 0, queues = 0, disabled = 0;
      eachAttr(body, data, dataEnd, (type, from, to) => {
        const n = to - from;
        switch (type) {
          case C.IFLA_TUN_OWNER: owner = n === 4 ? body.readInt32LE(from) : -1; break;
          case C.IFLA_TUN_GROUP: group = n === 4 ? body.readInt32LE(from) : -1; break;
          case C.IFLA_TUN_PERSIST: persist = n >= 1 ? body[from]! : 0; break;
          case C.IFLA_TUN_MULTI_QUEUE: multiQueue = n >= 1 ? body[from]! : 0; break;
          case C.IFLA_TUN_NUM_QUEUES: queues = n >= 4 ? body.readUInt32LE(from) : 0; break;
          case C.IFLA_TUN_NUM_DISABLED_QUEUES: disabled = n >= 4 ? body.readUInt32LE(from) : 0; break;
        }
      });
      state.tun = { owner, group, persist: persist !== 0, multiQueue: multiQueue !== 0, queues: queues + disabled };
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
