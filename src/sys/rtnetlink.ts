// One-shot rtnetlink requests, for what no ioctl can do (bridge port flags).
import { C, LAYOUT } from './constants.js';
import { sysBind, sysClose, sysRecv, sysSend, sysSocket } from './libc.js';
import { SystemError } from '../errors/system-error.js';

function nlattr(type: number, payload: Buffer): Buffer {
  const len = LAYOUT['sizeof struct nlattr'] + payload.length;
  const buf = Buffer.alloc((len + 3) & ~3);
  buf.writeUInt16LE(len, 0);
  buf.writeUInt16LE(type, 2);
  payload.copy(buf, LAYOUT['sizeof struct nlattr']);
  return buf;
}

/** Sends one request and waits for its ACK; a negative error in the ACK becomes a SystemError. */
function request(type: number, body: Buffer, action: string, device: string): void {
  const fd = sysSocket(C.AF_NETLINK, C.SOCK_RAW | C.SOCK_CLOEXEC, C.NETLINK_ROUTE, { action: 'open rtnetlink socket' });
  try {
    const addr = Buffer.alloc(LAYOUT['sizeof struct sockaddr_nl']);
    addr.writeUInt16LE(C.AF_NETLINK, LAYOUT['sockaddr_nl.nl_family']);
    sysBind(fd, addr, { action: 'bind rtnetlink socket' });
    const hdr = Buffer.alloc(LAYOUT['sizeof struct nlmsghdr']);
    hdr.writeUInt32LE(hdr.length + body.length, LAYOUT['nlmsghdr.nlmsg_len']);
    hdr.writeUInt16LE(type, LAYOUT['nlmsghdr.nlmsg_type']);
    hdr.writeUInt16LE(C.NLM_F_REQUEST | C.NLM_F_ACK, LAYOUT['nlmsghdr.nlmsg_flags']);
    hdr.writeUInt32LE(1, LAYOUT['nlmsghdr.nlmsg_seq']);
    sysSend(fd, Buffer.concat([hdr, body]), 0, { action, device });
    const reply = Buffer.alloc(4096);
    const n = sysRecv(fd, reply, 0, { action, device });
    const replyType = n >= LAYOUT['sizeof struct nlmsghdr'] ? reply.readUInt16LE(LAYOUT['nlmsghdr.nlmsg_type']) : -1;
    if (replyType !== C.NLMSG_ERROR) throw new SystemError(action, 'recv', C.EPROTO, 'no netlink acknowledgement', device);
    const error = -reply.readInt32LE(LAYOUT['sizeof struct nlmsghdr'] + LAYOUT['nlmsgerr.error']);
    if (error !== 0) throw new SystemError(action, 'rtnetlink', error, `netlink error ${error}`, device);
  } finally {
    sysClose(fd);
  }
}

/**
 * Port isolation (IFLA_BRPORT_ISOLATED): an isolated port talks only to non-isolated ports, so
 * VMs on one network reach the uplink but not each other.
 */
export function setPortIsolated(ifindex: number, device: string, isolated: boolean): void {
  const ifi = Buffer.alloc(LAYOUT['sizeof struct ifinfomsg']);
  ifi.writeUInt8(C.AF_BRIDGE, LAYOUT['ifinfomsg.ifi_family']);
  ifi.writeInt32LE(ifindex, LAYOUT['ifinfomsg.ifi_index']);
  const protinfo = nlattr(C.IFLA_PROTINFO | C.NLA_F_NESTED, nlattr(C.IFLA_BRPORT_ISOLATED, Buffer.from([isolated ? 1 : 0])));
  request(C.RTM_SETLINK, Buffer.concat([ifi, protinfo]), `${isolated ? 'isolate' : 'un-isolate'} bridge port ${device}`, device);
}
