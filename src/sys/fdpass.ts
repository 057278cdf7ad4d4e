// File descriptors across Unix sockets (SCM_RIGHTS) and the peer's kernel credentials.
import { readFileSync } from 'node:fs';
import { C, CMSG_LEN, CMSG_SPACE, LAYOUT } from './constants.js';
import {
  addressOf, sysClose, sysFcntl, sysGetsockopt, sysRecvmsg, sysRecvmsgAsync, sysSendmsg, type Ctx,
} from './libc.js';

/** Kernel limit on fds in one SCM_RIGHTS message (SCM_MAX_FD). */
export const SCM_MAX_FD = 253;

interface Msg {
  hdr: Buffer;
  // Held so the memory msghdr points into stays alive for the call.
  keep: Buffer[];
}

function buildMsg(data: Buffer, control: Buffer | undefined): Msg {
  const iov = Buffer.alloc(LAYOUT['sizeof struct iovec']);
  iov.writeBigUInt64LE(addressOf(data), LAYOUT['iovec.iov_base']);
  iov.writeBigUInt64LE(BigInt(data.length), LAYOUT['iovec.iov_len']);
  const hdr = Buffer.alloc(LAYOUT['sizeof struct msghdr']);
  hdr.writeBigUInt64LE(addressOf(iov), LAYOUT['msghdr.msg_iov']);
  hdr.writeBigUInt64LE(1n, LAYOUT['msghdr.msg_iovlen']);
  if (control !== undefined) {
    hdr.writeBigUInt64LE(addressOf(control), LAYOUT['msghdr.msg_control']);
    hdr.writeBigUInt64LE(BigInt(control.length), LAYOUT['msghdr.msg_controllen']);
  }
  return { hdr, keep: control ? [data, iov, control] : [data, iov] };
}

/**
 * Sends `data` (at least one byte: a zero-length stream message carries no fds) with `fds`
 * attached as SCM_RIGHTS. Returns the bytes sent; the caller handles short writes.
 */
export function sendWithFds(sock: number, data: Buffer, fds: readonly number[], ctx: Ctx): number {
  if (data.length === 0) throw new RangeError('sendWithFds needs at least one byte of data');
  if (fds.length > SCM_MAX_FD) throw new RangeError(`at most ${SCM_MAX_FD} fds per message`);
  let control: Buffer | undefined;
  if (fds.length > 0) {
    control = Buffer.alloc(CMSG_SPACE(4 * fds.length));
    control.writeBigUInt64LE(BigInt(CMSG_LEN(4 * fds.length)), LAYOUT['cmsghdr.cmsg_len']);
    control.writeInt32LE(C.SOL_SOCKET, LAYOUT['cmsghdr.cmsg_level']);
    control.writeInt32LE(C.SCM_RIGHTS, LAYOUT['cmsghdr.cmsg_type']);
    fds.forEach((fd, i) => control!.writeInt32LE(fd, CMSG_LEN(0) + 4 * i));
  }
  const msg = buildMsg(data, control);
  const n = sysSendmsg(sock, msg.hdr, C.MSG_NOSIGNAL, ctx);
  void msg.keep;
  return n;
}

export interface Received {
  /** Bytes read (0 = the peer closed). */
  length: number;
  data: Buffer;
  /** Received fds, all O_CLOEXEC (MSG_CMSG_CLOEXEC). */
  fds: number[];
  /** The kernel had more fds than fit (MSG_CTRUNC): those were closed by the kernel, these kept. */
  truncated: boolean;
}

function parseControl(msg: Buffer, control: Buffer, maxFds: number): { fds: number[]; truncated: boolean } {
  const flags = msg.readInt32LE(LAYOUT['msghdr.msg_flags']);
  const controlLen = Number(msg.readBigUInt64LE(LAYOUT['msghdr.msg_controllen']));
  const fds: number[] = [];
  let off = 0;
  while (off + CMSG_LEN(0) <= controlLen) {
    const len = Number(control.readBigUInt64LE(off + LAYOUT['cmsghdr.cmsg_len']));
    if (len < CMSG_LEN(0) || off + len > controlLen) break;
    const level = control.readInt32LE(off + LAYOUT['cmsghdr.cmsg_level']);
    const type = control.readInt32LE(off + LAYOUT['cmsghdr.cmsg_type']);
    if (level === C.SOL_SOCKET && type === C.SCM_RIGHTS) {
      for (let p = off + CMSG_LEN(0); p + 4 <= off + len; p += 4) fds.push(control.readInt32LE(p));
    }
    off += CMSG_SPACE(len - CMSG_LEN(0));
  }
  // CMSG_SPACE rounds up, so the kernel may fit one more fd than asked for: close any extras.
  const extra = fds.splice(maxFds);
  closeAll(extra);
  return { fds, truncated: (flags & C.MSG_CTRUNC) !== 0 || extra.length > 0 };
}

function prepareRecv(maxBytes: number, maxFds: number) {
  const data = Buffer.alloc(maxBytes);
  const control = Buffer.alloc(CMSG_SPACE(4 * Math.max(1, maxFds)));
  return { data, control, maxFds, msg: buildMsg(data, control) };
}

function finishRecv(n: number, p: ReturnType<typeof prepareRecv>): Received {
  const { fds, truncated } = parseControl(p.msg.hdr, p.control, p.maxFds);
  return { length: n, data: p.data.subarray(0, n), fds, truncated };
}

/** One blocking recvmsg of up to maxBytes, accepting up to maxFds fds (all CLOEXEC). */
export function recvWithFds(sock: number, maxBytes: number, maxFds: number, ctx: Ctx): Received {
  const p = prepareRecv(maxBytes, maxFds);
  return finishRecv(sysRecvmsg(sock, p.msg.hdr, C.MSG_CMSG_CLOEXEC, ctx), p);
}

/** recvWithFds on a thread of its own, for callers that must not block the event loop. */
export async function recvWithFdsAsync(sock: number, maxBytes: number, maxFds: number, ctx: Ctx): Promise<Received> {
  const p = prepareRecv(maxBytes, maxFds);
  return finishRecv(await sysRecvmsgAsync(sock, p.msg.hdr, C.MSG_CMSG_CLOEXEC, ctx), p);
}

/** Closes fds we were sent but did not ask for. */
export function closeAll(fds: Iterable<number>): void {
  for (const fd of fds) sysClose(fd);
}

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/** SO_PEERCRED: who connected, as the kernel recorded it at connect() time. */
export function peerCred(sock: number): PeerCred {
  const buf = Buffer.alloc(LAYOUT['sizeof struct ucred']);
  sysGetsockopt(sock, C.SOL_SOCKET, C.SO_PEERCRED, buf, { action: 'read peer credentials' });
  return {
    pid: buf.readInt32LE(LAYOUT['ucred.pid']),
    uid: buf.readUInt32LE(LAYOUT['ucred.uid']),
    gid: buf.readUInt32LE(LAYOUT['ucred.gid']),
  };
}

/**
 * SO_PEERGROUPS: the peer's supplementary groups at connect() time (Linux 4.13+).
 * Any legal count works, up to NGROUPS_MAX (65536): the buffer grows on ERANGE and its last step
 * is exactly NGROUPS_MAX, so a peer with 32769..65536 groups is not turned away.
 */
export function peerGroups(sock: number): number[] {
  for (let size = 64; ; size = Math.min(size * 8, C.NGROUPS_MAX)) {
    const buf = Buffer.alloc(4 * size);
    try {
      const len = sysGetsockopt(sock, C.SOL_SOCKET, C.SO_PEERGROUPS, buf, { action: 'read peer groups' });
      const groups: number[] = [];
      for (let i = 0; i + 4 <= len; i += 4) groups.push(buf.readUInt32LE(i));
      return groups;
    } catch (err) {
      if ((err as { errnoName?: string }).errnoName !== 'ERANGE' || size >= C.NGROUPS_MAX) throw err;
    }
  }
}

/** What SO_PEERPIDFD gave: a pidfd, or why there is none. */
export type PeerPidfd =
  | { kind: 'pidfd'; fd: number }
  /** The kernel has no SO_PEERPIDFD (before Linux 6.5: ENOPROTOOPT). */
  | { kind: 'unsupported' }
  /** The process that connected is gone (kernels that refuse a pidfd for a reaped peer: EINVAL/ESRCH). */
  | { kind: 'gone' };

/**
 * SO_PEERPIDFD (Linux 6.5+): a pidfd for the very process that called connect(), not for
 * whoever holds its pid number now. Always O_CLOEXEC (the kernel makes pidfds so; checked anyway).
 */
export function peerPidfd(sock: number): PeerPidfd {
  const buf = Buffer.alloc(4);
  try {
    sysGetsockopt(sock, C.SOL_SOCKET, C.SO_PEERPIDFD, buf, { action: 'read peer pidfd' });
  } catch (err) {
    const name = (err as { errnoName?: string }).errnoName;
    if (name === 'ENOPROTOOPT') return { kind: 'unsupported' };
    if (name === 'EINVAL' || name === 'ESRCH') return { kind: 'gone' };
    throw err;
  }
  const fd = buf.readInt32LE(0);
  const flags = sysFcntl(fd, C.F_GETFD, 0, { action: 'check peer pidfd' });
  if ((flags & C.FD_CLOEXEC) === 0) sysFcntl(fd, C.F_SETFD, flags | C.FD_CLOEXEC, { action: 'set FD_CLOEXEC on peer pidfd' });
  return { kind: 'pidfd', fd };
}

/**
 * The pid (in our /proc's pid namespace) of the process a pidfd refers to, from the "Pid:" line
 * of /proc/self/fdinfo/FD. undefined once that process has exited and been reaped (the kernel
 * shows -1): from then on its pid number is free for reuse. 0 means not visible from our namespace.
 */
export function pidfdPid(pidfd: number): number | undefined {
  let info: string;
  try {
    info = readFileSync(`/proc/self/fdinfo/${pidfd}`, 'utf8');
  } catch {
    return undefined;
  }
  const m = /^Pid:\s*(-?[0-9]+)$/m.exec(info);
  if (!m) return undefined;
  const pid = Number(m[1]);
  return pid > 0 ? pid : undefined;
}
