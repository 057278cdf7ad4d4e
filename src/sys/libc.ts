// The native boundary: the only module in tapd that imports ffi-rs.
// Everything above this file speaks Buffers, numbers and SystemError.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { SystemError } from '../errors/system-error.js';
import { C } from './constants.js';

// ffi-rs is CommonJS: require() skips the ESM loader's export scan of it. Its loader calls
// process.report.getReport() (~7 ms, every process start) only to tell glibc from musl. When
// this process has glibc's libc.so.6 mapped (read from /proc/self/maps, well under a
// millisecond) it gets that answer without the report; anywhere else ffi-rs asks as it always does.
const require = createRequire(import.meta.url);
const report = process.report as { getReport: () => object } | undefined;
const getReport = report?.getReport;
if (report && runsOnGlibc()) report.getReport = () => ({ header: { glibcVersionRuntime: 'glibc' } });
let ffi: typeof import('ffi-rs');
try {
  ffi = require('ffi-rs') as typeof import('ffi-rs');
} finally {
  if (report && getReport) report.getReport = getReport;
}
const { DataType, define, open } = ffi;

function runsOnGlibc(): boolean {
  try {
    return /\/libc\.so\.6$/m.test(readFileSync('/proc/self/maps', 'latin1'));
  } catch {
    return false;
  }
}

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
  getrandom: { library: 'libc', retType: I64, paramsType: [BUF, U64, DataType.U32], errno },
  inotify_init1: { library: 'libc', retType: I32, paramsType: [I32], errno },
  inotify_add_watch: { library: 'libc', retType: I32, paramsType: [I32, STR, DataType.U32], errno },
  inotify_rm_watch: { library: 'libc', retType: I32, paramsType: [I32, I32], errno },
  if_nametoindex: { library: 'libc', retType: DataType.U32, paramsType: [STR], errno },
  if_indextoname: { library: 'libc', retType: DataType.BigInt, paramsType: [DataType.U32, BUF] },
  // ffi-rs has no address-of: memmove(buf, buf, 0) returns the Buffer's address.
  memmove: { library: 'libc', retType: DataType.BigInt, paramsType: [BUF, BUF, U64] },
  // tapctl becomes the emulator (src/cli/launch.ts).
  execve: { library: 'libc', retType: I32, paramsType: [STR, BUF, BUF], errno },
  dup2: { library: 'libc', retType: I32, paramsType: [I32, I32], errno },
  sigprocmask: { library: 'libc', retType: I32, paramsType: [I32, BUF, U64], errno },
  _exit: { library: 'libc', retType: DataType.Void, paramsType: [I32] },
  // NSS (src/sys/nss.ts): the reentrant forms write into our buffer, so nothing is dereferenced.
  getpwuid_r: { library: 'libc', retType: I32, paramsType: [DataType.U32, BUF, BUF, U64, BUF] },
  getpwnam_r: { library: 'libc', retType: I32, paramsType: [STR, BUF, BUF, U64, BUF] },
  getgrnam_r: { library: 'libc', retType: I32, paramsType: [STR, BUF, BUF, U64, BUF] },
  getgrouplist: { library: 'libc', retType: I32, paramsType: [STR, DataType.U32, BUF, BUF] },
});

// signal(2) with a handler given by value (SIG_DFL is 0): its own table, as for ioctl below.
const handlerByValue = define({
  signal: { library: 'libc', retType: U64, paramsType: [I32, U64] },
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

const { EINTR, EALREADY, EISCONN } = C;

/**
 * A blocking call that a signal can interrupt (EINTR: a handler without SA_RESTART ran, e.g.
 * V8's SIGPROF under --cpu-prof, or a debugger's), made again until it is not interrupted.
 */
function uninterrupted(syscall: string, call: () => Result, ctx: Ctx): number {
  for (;;) {
    const r = call();
    if (Number(r.value) >= 0 || r.errnoCode !== EINTR) return check(syscall, r, ctx);
  }
}

async function uninterruptedAsync(syscall: string, call: () => Promise<Result>, ctx: Ctx): Promise<number> {
  for (;;) {
    const r = await call();
    if (Number(r.value) >= 0 || r.errnoCode !== EINTR) return check(syscall, r, ctx);
  }
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
  connected(raw.connect([fd, addr, addr.length]), () => raw.connect([fd, addr, addr.length]), ctx);
}

/**
 * An interrupted connect() goes on in the kernel (connect(2)); asking again says EISCONN once it
 * is through (or EALREADY while it is not: asked again).
 */
function connected(first: Result, again: () => Result, ctx: Ctx): void {
  let r = first;
  let interrupted = false;
  while (Number(r.value) < 0 && (r.errnoCode === EINTR || (interrupted && r.errnoCode === EALREADY))) {
    interrupted = true;
    r = again();
  }
  if (interrupted && Number(r.value) < 0 && r.errnoCode === EISCONN) return;
  check('connect', r, ctx);
}

export async function sysConnectAsync(fd: number, addr: Buffer, ctx: Ctx): Promise<void> {
  const first = await threaded.connect([fd, addr, addr.length]);
  // Asked again on this thread: after EINTR the connect is already under way, so it does not block long.
  connected(first, () => raw.connect([fd, addr, addr.length]), ctx);
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
  return uninterrupted('sendmsg', () => raw.sendmsg([fd, msghdr, flags]), ctx);
}

export function sysRecvmsg(fd: number, msghdr: Buffer, flags: number, ctx: Ctx): number {
  return uninterrupted('recvmsg', () => raw.recvmsg([fd, msghdr, flags]), ctx);
}

export async function sysRecvmsgAsync(fd: number, msghdr: Buffer, flags: number, ctx: Ctx): Promise<number> {
  return uninterruptedAsync('recvmsg', () => threaded.recvmsg([fd, msghdr, flags]), ctx);
}

export function sysSend(fd: number, data: Buffer, flags: number, ctx: Ctx): number {
  return uninterrupted('send', () => raw.send([fd, data, data.length, flags]), ctx);
}

export function sysRecv(fd: number, into: Buffer, flags: number, ctx: Ctx): number {
  return uninterrupted('recv', () => raw.recv([fd, into, into.length, flags]), ctx);
}

export function sysRead(fd: number, into: Buffer, ctx: Ctx): number {
  return uninterrupted('read', () => raw.read([fd, into, into.length]), ctx);
}

/** getrandom(2) into all of `into` (flags 0: the kernel's CSPRNG, as node:crypto's randomBytes uses). */
export function sysGetrandom(into: Buffer, ctx: Ctx): void {
  let off = 0;
  while (off < into.length) {
    const rest = into.subarray(off);
    off += uninterrupted('getrandom', () => raw.getrandom([rest, rest.length, 0]), ctx);
  }
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

/** The libc constants the exec path and NSS use, under their C names (test/exec-nss-layout.test.ts checks them). */
export const LIBC_C = {
  F_SETFL: 4,
  F_DUPFD_CLOEXEC: 1030,
  O_NONBLOCK: 0o4000,
  SIGPIPE: 13,
  SIGXFSZ: 25,
  SIG_DFL: 0,
  SIG_SETMASK: 2,
  ERANGE: 34,
  ENOEXEC: 8,
} as const;

/** NUL-terminated copies of `strings` and the NULL-terminated array of their addresses. */
function cStringArray(strings: readonly string[]): { array: Buffer; keep: Buffer[] } {
  const keep = strings.map((s) => Buffer.from(`${s}\0`, 'utf8'));
  const array = Buffer.alloc(8 * (keep.length + 1));
  keep.forEach((b, i) => array.writeBigUInt64LE(addressOf(b), 8 * i));
  return { array, keep };
}

/** execve(2). Returns only on failure, by throwing. */
export function sysExecve(path: string, argv: readonly string[], envp: readonly string[], ctx: Ctx): never {
  if (argv.some((a) => a.includes('\0')) || envp.some((e) => e.includes('\0')) || path.includes('\0')) {
    throw new RangeError('execve: an argument contains a NUL byte');
  }
  const a = cStringArray(argv);
  const e = cStringArray(envp);
  const r = raw.execve([path, a.array, e.array]);
  void a.keep;
  void e.keep;
  check('execve', r, ctx);
  throw new Error('execve returned');
}

export function sysDup2(from: number, to: number, ctx: Ctx): void {
  check('dup2', raw.dup2([from, to]), ctx);
}

/** Default dispositions for the signals an exec keeps ignored (Node ignores SIGPIPE and SIGXFSZ), and no blocked signals. */
export function sysResetSignalsForExec(ctx: Ctx): void {
  // signal() cannot fail for a valid signal and SIG_DFL.
  handlerByValue.signal([LIBC_C.SIGPIPE, LIBC_C.SIG_DFL]);
  handlerByValue.signal([LIBC_C.SIGXFSZ, LIBC_C.SIG_DFL]);
  check('sigprocmask', raw.sigprocmask([LIBC_C.SIG_SETMASK, Buffer.alloc(128), 0]), ctx);
}

/** _exit(2): no exit handlers (after the fds were rearranged for an exec, Node's own are gone). */
export function sysExit(status: number): never {
  raw._exit([status]);
  throw new Error('_exit returned');
}

/** The reentrant NSS calls; each returns 0 or an errno (ERANGE: the buffer is too small). */
export function sysGetpwuidR(uid: number, pwd: Buffer, buf: Buffer, result: Buffer): number {
  return raw.getpwuid_r([uid, pwd, buf, buf.length, result]);
}

export function sysGetpwnamR(name: string, pwd: Buffer, buf: Buffer, result: Buffer): number {
  return raw.getpwnam_r([name, pwd, buf, buf.length, result]);
}

export function sysGetgrnamR(name: string, grp: Buffer, buf: Buffer, result: Buffer): number {
  return raw.getgrnam_r([name, grp, buf, buf.length, result]);
}

/** getgrouplist(3): -1 when `groups` is too small (then `ngroups` holds the count needed). */
export function sysGetgrouplist(user: string, gid: number, groups: Buffer, ngroups: Buffer): number {
  return raw.getgrouplist([user, gid, groups, ngroups]);
}
