// The client library: connect, send one request, receive the reply and any fds through recvmsg
// only (libuv never reads our socket, so SCM_RIGHTS fds cannot be dropped).
import { TapdError } from '../errors/tapd-error.js';
import { SystemError } from '../errors/system-error.js';
import { FrameReader, MAX_REPLY_BYTES, encodeFrame } from '../protocol/frame.js';
import { MAX_QUEUES, PROTOCOL_VERSION, type LeaseInfo } from '../protocol/messages.js';
import * as sys from '../sys/index.js';
import { DaemonError } from './daemon-error.js';

export const DEFAULT_SOCKET = '/run/tapd/tapd.sock';
const DEFAULT_TIMEOUT_MS = 30_000;

export interface WireRequest {
  op: 'open' | 'check' | 'list' | 'status' | 'reload';
  network?: string;
  mac?: string;
  mtu?: number;
  queues?: number;
  vnet_hdr?: boolean;
  vhost?: boolean;
  as_uid?: number;
  /** ovs networks: the logical port (OVN iface-id) to bind. */
  port?: string;
}

export interface Response {
  body: Record<string, unknown>;
  /** Fds that came with the reply (CLOEXEC). The caller owns them. */
  fds: number[];
}

export interface OpenedTap {
  lease: LeaseInfo;
  /** One fd per queue, CLOEXEC: clear it (or dup) before handing to an emulator. */
  fds: number[];
}

function explainConnectError(err: unknown, socketPath: string): never {
  if (err instanceof SystemError) {
    switch (err.errnoName) {
      case 'ENOENT':
      case 'ECONNREFUSED':
        throw new TapdError('not_running', `tapd is not running (no daemon at ${socketPath}); start it with: systemctl start tapd.socket`);
      case 'EACCES':
      case 'EPERM':
        throw new TapdError('no_access', `permission denied on ${socketPath}; ask an admin to add you to group tapd (then log in again)`);
    }
  }
  throw err;
}

function withoutUndefined(req: WireRequest): Record<string, unknown> {
  return Object.fromEntries(Object.entries({ v: PROTOCOL_VERSION, ...req }).filter(([, v]) => v !== undefined));
}

/** Collects one reply frame and the fds that ride on it, from successive recvmsg results. */
class ReplyAssembler {
  private readonly reader = new FrameReader(MAX_REPLY_BYTES);
  readonly fds: number[] = [];

  /** The reply once complete, else undefined. Throws on truncation or a closed connection. */
  add(r: sys.Received): Response | undefined {
    this.fds.push(...r.fds);
    if (r.truncated) throw new TapdError('protocol', 'the daemon sent more fds than expected; they were closed');
    if (r.length === 0) throw new TapdError('protocol', 'tapd closed the connection without a reply');
    const frames = this.reader.push(Buffer.from(r.data));
    if (frames.length === 0) return undefined;
    return { body: JSON.parse(frames[0]!.toString('utf8')) as Record<string, unknown>, fds: this.fds };
  }

  /** Closes every fd received so far and turns a receive timeout into words. */
  fail(err: unknown): never {
    sys.closeAll(this.fds);
    if (err instanceof SystemError && err.errnoName === 'EAGAIN') {
      throw new TapdError('timeout', 'tapd did not answer in time; check that it is running (systemctl status tapd)');
    }
    throw err;
  }
}

const MAX_RECV = 64 * 1024;
const RECV_CTX = { action: 'read reply from tapd' };

function readReplySync(fd: number): Response {
  const a = new ReplyAssembler();
  try {
    for (;;) {
      const res = a.add(sys.recvWithFds(fd, MAX_RECV, MAX_QUEUES, RECV_CTX));
      if (res) return res;
    }
  } catch (err) {
    return a.fail(err);
  }
}

async function readReplyAsync(fd: number): Promise<Response> {
  const a = new ReplyAssembler();
  try {
    for (;;) {
      const res = a.add(await sys.recvWithFdsAsync(fd, MAX_RECV, MAX_QUEUES, RECV_CTX));
      if (res) return res;
    }
  } catch (err) {
    return a.fail(err);
  }
}

function resultOf(res: Response): Record<string, unknown> {
  if (res.body.ok === true) return res.body;
  sys.closeAll(res.fds);
  const e = (res.body.error ?? {}) as { code?: unknown; message?: unknown };
  throw new DaemonError(String(e.code ?? 'unknown'), String(e.message ?? 'tapd refused the request'));
}

/** One request, blocking (for command-line tools). Throws DaemonError when tapd says no. */
export function requestSync(socketPath: string, req: WireRequest, timeoutMs = DEFAULT_TIMEOUT_MS): Response {
  let fd: number;
  try {
    fd = sys.connectUnix(socketPath, timeoutMs);
  } catch (err) {
    explainConnectError(err, socketPath);
  }
  try {
    sys.sendAll(fd, encodeFrame(withoutUndefined(req)));
    const res = readReplySync(fd);
    resultOf(res);
    return res;
  } finally {
    sys.closeFd(fd);
  }
}

/** One request without blocking the event loop (connect and recvmsg run on threads). */
export async function request(socketPath: string, req: WireRequest, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Response> {
  let fd: number;
  try {
    fd = await sys.connectUnixAsync(socketPath, timeoutMs);
  } catch (err) {
    explainConnectError(err, socketPath);
  }
  try {
    sys.sendAll(fd, encodeFrame(withoutUndefined(req)));
    const res = await readReplyAsync(fd);
    resultOf(res);
    return res;
  } finally {
    sys.closeFd(fd);
  }
}

function asOpened(res: Response): OpenedTap {
  const lease = res.body.lease as LeaseInfo;
  if (res.fds.length !== lease.queues) {
    sys.closeAll(res.fds);
    throw new TapdError('protocol', `expected ${lease.queues} TAP fds from tapd, got ${res.fds.length}`);
  }
  return { lease, fds: res.fds };
}

export function openTapSync(socketPath: string, req: Omit<WireRequest, 'op'>, timeoutMs?: number): OpenedTap {
  return asOpened(requestSync(socketPath, { op: 'open', ...req }, timeoutMs));
}

export async function openTap(socketPath: string, req: Omit<WireRequest, 'op'>, timeoutMs?: number): Promise<OpenedTap> {
  return asOpened(await request(socketPath, { op: 'open', ...req }, timeoutMs));
}
