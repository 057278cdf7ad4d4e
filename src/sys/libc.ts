// The native boundary: the only module in tapd that imports ffi-rs.
// Everything above this file speaks Buffers, numbers and SystemError.
import { DataType, define, open } from 'ffi-rs';
import { SystemError } from '../errors/system-error.js';

open({ library: 'libc', path: 'libc.so.6' });

const I32 = DataType.I32;
const I64 = DataType.I64;
const U64 = DataType.U64;
const BUF = DataType.U8Array;
const STR = DataType.String;
const errno = true as const;

const raw = define({
  open: { library: 'libc', retType: I32, paramsType: [STR, I32], errno },
  close: { library: 'libc', retType: I32, paramsType: [I32], errno },
  ioctl: { library: 'libc', retType: I32, paramsType: [I32, U64, BUF], errno },
  socket: { library: 'libc', retType: I32, paramsType: [I32, I32, I32], errno },
  socketpair: { library: 'libc', retType: I32, paramsType: [I32, I32, I32, BUF], errno },
  connect: { library: 'libc', retType: I32, paramsType: [I32, BUF, I32], errno },
  bind: { library: 'libc', retType: I32, paramsType: [I32, BUF, I32], errno },
  fcntl: { library: 'libc', retType: I32, paramsType: [I32, I32, I32], errno },
  getsockopt: { library: 'libc', retType: I32, paramsType: [I32, I32, I32, BUF, BUF], errno },
  setsockopt: { library: 'libc', retType: I32, paramsType: [I32, I32, I32, BUF, I32], errno },
  sendmsg: { library: 'libc', retType: I64, paramsType: [I32, BUF, I32], errno },
  recvmsg: { library: 'libc', retType: I64, paramsType: [I32, BUF, I32], errno },
  send: { library: 'libc', retType: I64, paramsType: [I32, BUF, U64, I32], errno },
  recv: { library: 'libc', retType: I64, paramsType: [I32, BUF, U64, I32], errno },
  read: { library: 'libc', retType: I64, paramsType: [I32, BUF, U64], errno },
  inotify_init1: { library: 'libc', retType: I32, paramsType: [I32], errno },
  inotify_add_watch: { library: 'libc', retType: I32, paramsType: [I32, STR, DataType.U32], errno },
  inotify_rm_watch: { library: 'libc', retType: I32, paramsType: [I32, I32], errno },
  if_nametoindex: { library: 'libc', retType: DataType.U32, paramsType: [STR], errno },
  if_indextoname: { library: 'libc', retType: DataType.BigInt, paramsType: [DataType.U32, BUF] },
  // ffi-rs has no address-of: memmove(buf, buf, 0) returns the Buffer's address.
  memmove: { library: 'libc', retType: DataType.BigInt, paramsType: [BUF, BUF, U64] },
});

// ioctl with an integer argument (TUNSETOWNER...): define() names the C symbol by its key, so
// the by-value signature needs a table of its own.
const byValue = define({
  ioctl: { library: 'libc', retType: I32, paramsType: [I32, U64, U64], errno },
});

// Blocking variants, run on a thread of their own so the event loop keeps going.
const threaded = define({
  recvmsg: { library: 'libc', retType: I64, paramsType: [I32, BUF, I32], errno, runInNewThread: true },
  connect: { library: 'libc', retType: I32, paramsType: [I32, BUF, I32], errno, runInNewThread: true },
});

interface Result {
  value: number | bigint;
  errnoCode: number;
  errnoMessage: string;
}

/** Context for an error message: what we were doing, and on which device. */
export interface Ctx {
  action: string;
  device?: string;
}

function check(syscall: string, r: Result, ctx: Ctx): number {
  const value = Number(r.value);
  if (value < 0) throw new SystemError(ctx.action, syscall, r.errnoCode, r.errnoMessage, ctx.device);
  return value;
}

/** Address of a Buffer's memory; valid while the Buffer is referenced. */
export function addressOf(buf: Buffer): bigint {
  return raw.memmove([buf, buf, 0]) as bigint;
}

export function sysOpen(path: string, flags: number, ctx: Ctx): number {
  return check('open', raw.open([path, flags]), ctx);
}

export function sysClose(fd: number): void {
  // close() errors are not actionable (the fd is gone either way); EINTR must not be retried on Linux.
  raw.close([fd]);
}

export function sysIoctl(fd: number, request: number, arg: Buffer, ctx: Ctx): number {
  return check('ioctl', raw.ioctl([fd, request, arg]), ctx);
}

export function sysIoctlInt(fd: number, request: number, arg: number, ctx: Ctx): number {
  return check('ioctl', byValue.ioctl([fd, request, arg]), ctx);
}

export function sysSocket(domain: number, type: number, protocol: number, ctx: Ctx): number {
  return check('socket', raw.socket([domain, type, protocol]), ctx);
}

export function sysSocketpair(domain: number, type: number, ctx: Ctx): [number, number] {
  const sv = Buffer.alloc(8);
  check('socketpair', raw.socketpair([domain, type, 0, sv]), ctx);
  return [sv.readInt32LE(0), sv.readInt32LE(4)];
}

export function sysConnect(fd: number, addr: Buffer, ctx: Ctx): void {
  check('connect', raw.connect([fd, addr, addr.length]), ctx);
}

export async function sysConnectAsync(fd: number, addr: Buffer, ctx: Ctx): Promise<void> {
  check('connect', await threaded.connect([fd, addr, addr.length]), ctx);
}

export function sysBind(fd: number, addr: Buffer, ctx: Ctx): void {
  check('bind', raw.bind([fd, addr, addr.length]), ctx);
}

export function sysFcntl(fd: number, cmd: number, arg: number, ctx: Ctx): number {
  return check('fcntl', raw.fcntl([fd, cmd, arg]), ctx);
}

/** getsockopt into `out`; returns the length the kernel wrote. */
export function sysGetsockopt(fd: number, level: number, name: number, out: Buffer, ctx: Ctx): number {
  const len = Buffer.alloc(4);
  len.writeUInt32LE(out.length, 0);
  check('getsockopt', raw.getsockopt([fd, level, name, out, len]), ctx);
  return len.readUInt32LE(0);
}

export function sysSetsockopt(fd: number, level: number, name: number, value: Buffer, ctx: Ctx): void {
  check('setsockopt', raw.setsockopt([fd, level, name, value, value.length]), ctx);
}

export function sysSendmsg(fd: number, msghdr: Buffer, flags: number, ctx: Ctx): number {
  return check('sendmsg', raw.sendmsg([fd, msghdr, flags]), ctx);
}

export function sysRecvmsg(fd: number, msghdr: Buffer, flags: number, ctx: Ctx): number {
  return check('recvmsg', raw.recvmsg([fd, msghdr, flags]), ctx);
}

export async function sysRecvmsgAsync(fd: number, msghdr: Buffer, flags: number, ctx: Ctx): Promise<number> {
  return check('recvmsg', await threaded.recvmsg([fd, msghdr, flags]), ctx);
}

export function sysSend(fd: number, data: Buffer, flags: number, ctx: Ctx): number {
  return check('send', raw.send([fd, data, data.length, flags]), ctx);
}

export function sysRecv(fd: number, into: Buffer, flags: number, ctx: Ctx): number {
  return check('recv', raw.recv([fd, into, into.length, flags]), ctx);
}

export function sysRead(fd: number, into: Buffer, ctx: Ctx): number {
  return check('read', raw.read([fd, into, into.length]), ctx);
}

export function sysInotifyInit(flags: number, ctx: Ctx): number {
  return check('inotify_init1', raw.inotify_init1([flags]), ctx);
}

export function sysInotifyAddWatch(fd: number, path: string, mask: number, ctx: Ctx): number {
  return check('inotify_add_watch', raw.inotify_add_watch([fd, path, mask]), ctx);
}

/** inotify_rm_watch; EINVAL (the watch went with its inode) is not an error worth raising. */
export function sysInotifyRmWatch(fd: number, wd: number): void {
  raw.inotify_rm_watch([fd, wd]);
}

/** if_nametoindex; 0 when there is no such device. */
export function sysIfNameToIndex(name: string): number {
  return Number(raw.if_nametoindex([name]).value);
}

/** if_indextoname; undefined when there is no device with that index. */
export function sysIfIndexToName(index: number): string | undefined {
  const buf = Buffer.alloc(16);
  if ((raw.if_indextoname([index, buf]) as bigint) === 0n) return undefined;
  const end = buf.indexOf(0);
  return buf.subarray(0, end < 0 ? 16 : end).toString('utf8');
}
