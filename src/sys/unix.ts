// Client-side Unix stream sockets owned entirely through libc, so libuv never reads them:
// if libuv reads a socket that carries SCM_RIGHTS, the kernel silently drops the fds.
import { C, LAYOUT } from './constants.js';
import { sysClose, sysConnect, sysConnectAsync, sysSend, sysSetsockopt, sysSocket } from './libc.js';

function sockaddrUn(path: string): Buffer {
  const max = LAYOUT['sizeof struct sockaddr_un'] - LAYOUT['sockaddr_un.sun_path'] - 1;
  const bytes = Buffer.from(path, 'utf8');
  if (bytes.length === 0 || bytes.length > max) throw new RangeError(`socket path must be 1..${max} bytes: ${path}`);
  const addr = Buffer.alloc(LAYOUT['sizeof struct sockaddr_un']);
  addr.writeUInt16LE(C.AF_UNIX, LAYOUT['sockaddr_un.sun_family']);
  bytes.copy(addr, LAYOUT['sockaddr_un.sun_path']);
  return addr;
}

function setTimeouts(fd: number, ms: number): void {
  const tv = Buffer.alloc(LAYOUT['sizeof struct timeval']);
  tv.writeBigInt64LE(BigInt(Math.floor(ms / 1000)), 0);
  tv.writeBigInt64LE(BigInt((ms % 1000) * 1000), 8);
  sysSetsockopt(fd, C.SOL_SOCKET, C.SO_RCVTIMEO, tv, { action: 'set receive timeout' });
  sysSetsockopt(fd, C.SOL_SOCKET, C.SO_SNDTIMEO, tv, { action: 'set send timeout' });
}

function newSocket(timeoutMs: number): number {
  const fd = sysSocket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC, 0, { action: 'create socket' });
  try {
    setTimeouts(fd, timeoutMs);
    return fd;
  } catch (err) {
    sysClose(fd);
    throw err;
  }
}

/** Blocking connect of a CLOEXEC stream socket whose reads and writes time out after timeoutMs. */
export function connectUnix(path: string, timeoutMs: number): number {
  const addr = sockaddrUn(path);
  const fd = newSocket(timeoutMs);
  try {
    sysConnect(fd, addr, { action: `connect to ${path}` });
    return fd;
  } catch (err) {
    sysClose(fd);
    throw err;
  }
}

export async function connectUnixAsync(path: string, timeoutMs: number): Promise<number> {
  const addr = sockaddrUn(path);
  const fd = newSocket(timeoutMs);
  try {
    await sysConnectAsync(fd, addr, { action: `connect to ${path}` });
    return fd;
  } catch (err) {
    sysClose(fd);
    throw err;
  }
}

/**
 * Writes all of `data` (blocking, bounded by the socket's send timeout). With nonBlocking, one
 * MSG_DONTWAIT send: it throws EAGAIN rather than wait for a peer that does not read.
 */
export function sendAll(fd: number, data: Buffer, opts: { nonBlocking?: boolean } = {}): void {
  const flags = C.MSG_NOSIGNAL | (opts.nonBlocking ? C.MSG_DONTWAIT : 0);
  let off = 0;
  while (off < data.length) off += sysSend(fd, data.subarray(off), flags, { action: 'send' });
}

export { sysClose as closeFd };
