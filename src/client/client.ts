// The client library: connect, send one request, receive the reply and any fds through recvmsg
// only (libuv never reads our socket, so SCM_RIGHTS fds cannot be dropped).
import { TapdError } from '../errors/tapd-error.js';
import { SystemError } from '../errors/system-error.js';
import { FrameReader, MAX_REPLY_BYTES, encodeFrame } from '../protocol/frame.js';
import { MAX_QUEUES, PROTOCOL_VERSION, type LeaseInfo } from '../protocol/messages.js';
// Straight from the modules, not the src/sys barrel: a client has no use for the rest of src/sys,
// and loading it is start-up time for every tapctl.
import { closeAll, recvWithFds, recvWithFdsAsync, type Received } from '../sys/fdpass.js';
import { closeFd, connectUnix, connectUnixAsync, sendAll } from '../sys/unix.js';
import { C, LAYOUT } from '../sys/constants.js';
import { sysSetsockopt } from '../sys/libc.js';
import { DaemonError } from './daemon-error.js';

export const DEFAULT_SOCKET = '/run/tapd/tapd.sock';
const DEFAULT_TIMEOUT_MS = 30_000;
/** Beyond a `pending` frame's timeout_ms: the daemon still has to clean up and reply. */
export const PENDING_MARGIN_MS = 5_000;

export interface WireRequest {
  op: 'open' | 'check' | 'list' | 'status' | 'reload' | 'networks' | 'revoke';
  network?: string;
  mac?: string;
  mtu?: number;
  queues?: number;
  vnet_hdr?: boolean;
  vhost?: boolean;
  as_uid?: number;
  /** open/check: we read `pending` frames (and wait as long as they say). */
  progress?: boolean;
  /** ovs networks: the logical port (OVN iface-id) to bind. */
  port?: string;
  /** revoke: a lease id. */
  lease?: string;
  /** list, revoke: a uid. */
  user?: number;
}

/** What a `pending` frame says the daemon is waiting for. */
export interface Pending {
  waiting_for: string;
  timeout_ms: number;
}

export interface Response {
  body: Record<string, unknown>;
  /** Fds that came with the reply (CLOEXEC). The caller owns them. */
  fds: number[];
}

export interface OpenedTap {
  /** Our own opens never say bridge_helper, so tapd always names the guest's MAC. */
  lease: LeaseInfo & { mac: string };
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

function isPending(body: Record<string, unknown>): Pending | undefined {
  const p = body.pending as Partial<Pending> | undefined;
  if (body.ok !== true || typeof p !== 'object' || p === null) return undefined;
  return { waiting_for: String(p.waiting_for ?? 'something'), timeout_ms: Number(p.timeout_ms) || 0 };
}

/**
 * Collects the reply frame and the fds that ride on it, from successive recvmsg results. A
 * `pending` frame before it moves the receive deadline to the daemon's own timeout plus a margin.
 */
class ReplyAssembler {
  private readonly reader = new FrameReader(MAX_REPLY_BYTES);
  readonly fds: number[] = [];
  private waitingFor: Pending | undefined;

  constructor(private readonly fd: number, private readonly onPending?: (p: Pending) => void) {}

  /** The reply once complete, else undefined. Throws on truncation or a closed connection. */
  add(r: Received): Response | undefined {
    this.fds.push(...r.fds);
    if (r.truncated) throw new TapdError('protocol', 'the daemon sent more fds than expected; they were closed');
    if (r.length === 0) {
      throw new TapdError('protocol', this.waitingFor
        ? `tapd closed the connection while waiting for ${this.waitingFor.waiting_for}`
        : 'tapd closed the connection without a reply');
    }
    for (const frame of this.reader.push(Buffer.from(r.data))) {
      const body = JSON.parse(frame.toString('utf8')) as Record<string, unknown>;
      const pending = isPending(body);
      if (!pending) return { body, fds: this.fds };
      this.waitingFor = pending;
      setReceiveTimeout(this.fd, pending.timeout_ms + PENDING_MARGIN_MS);
      this.onPending?.(pending);
    }
    return undefined;
  }

  /** Closes every fd received so far and turns a receive timeout into words. */
  fail(err: unknown): never {
    closeAll(this.fds);
    if (err instanceof SystemError && err.errnoName === 'EAGAIN') {
      if (this.waitingFor) {
        throw new TapdError('timeout', `tapd is still running ${this.waitingFor.waiting_for} after ${Math.round(this.waitingFor.timeout_ms / 1000)} s, its limit; gave up waiting (an admin can find why in the tapd log)`);
      }
      throw new TapdError('timeout', 'tapd did not answer in time; check that it is running (systemctl status tapd)');
    }
    throw err;
  }
}

function setReceiveTimeout(fd: number, ms: number): void {
  const tv = Buffer.alloc(LAYOUT['sizeof struct timeval']);
  tv.writeBigInt64LE(BigInt(Math.floor(ms / 1000)), 0);
  tv.writeBigInt64LE(BigInt((ms % 1000) * 1000), 8);
  sysSetsockopt(fd, C.SOL_SOCKET, C.SO_RCVTIMEO, tv, { action: 'set receive timeout' });
}

const MAX_RECV = 64 * 1024;
const RECV_CTX = { action: 'read reply from tapd' };

function readReplySync(fd: number, onPending?: (p: Pending) => void): Response {
  const a = new ReplyAssembler(fd, onPending);
  try {
    for (;;) {
      const res = a.add(recvWithFds(fd, MAX_RECV, MAX_QUEUES, RECV_CTX));
      if (res) return res;
    }
  } catch (err) {
    return a.fail(err);
  }
}

async function readReplyAsync(fd: number, onPending?: (p: Pending) => void): Promise<Response> {
  const a = new ReplyAssembler(fd, onPending);
  try {
    for (;;) {
      const res = a.add(await recvWithFdsAsync(fd, MAX_RECV, MAX_QUEUES, RECV_CTX));
      if (res) return res;
    }
  } catch (err) {
    return a.fail(err);
  }
}

/**
 * Sends the request. A peer that already closed (EPIPE, ECONNRESET) may still have written why,
 * e.g. a refusal at accept for too many connections: that reply waits in our receive queue, so
 * the caller reads it before reporting that the daemon hung up.
 */
function sendRequest(fd: number, req: WireRequest): SystemError | undefined {
  try {
    sendAll(fd, encodeFrame(withoutUndefined(req)));
    return undefined;
  } catch (err) {
    if (err instanceof SystemError && (err.errnoName === 'EPIPE' || err.errnoName === 'ECONNRESET')) return err;
    throw err;
  }
}

/** When the send failed and no reply came either. */
function closedBeforeRequest(): TapdError {
  return new TapdError('protocol', 'tapd closed the connection before it read the request, without saying why; see the tapd log');
}

function resultOf(res: Response): Record<string, unknown> {
  if (res.body.ok === true) return res.body;
  closeAll(res.fds);
  const e = (res.body.error ?? {}) as { code?: unknown; message?: unknown };
  throw new DaemonError(String(e.code ?? 'unknown'), String(e.message ?? 'tapd refused the request'));
}

export interface RequestOptions {
  timeoutMs?: number;
  /** Called for each `pending` frame (the request must have `progress: true`). */
  onPending?: (p: Pending) => void;
}

function optionsOf(o: number | RequestOptions | undefined): RequestOptions {
  return typeof o === 'number' ? { timeoutMs: o } : o ?? {};
}

/** One request, blocking (for command-line tools). Throws DaemonError when tapd says no. */
export function requestSync(socketPath: string, req: WireRequest, options?: number | RequestOptions): Response {
  const { timeoutMs = DEFAULT_TIMEOUT_MS, onPending } = optionsOf(options);
  let fd: number;
  try {
    fd = connectUnix(socketPath, timeoutMs);
  } catch (err) {
    explainConnectError(err, socketPath);
  }
  try {
    const sendErr = sendRequest(fd, req);
    let res: Response;
    try {
      res = readReplySync(fd, onPending);
    } catch (err) {
      throw sendErr ? closedBeforeRequest() : err;
    }
    resultOf(res);
    return res;
  } finally {
    closeFd(fd);
  }
}

/** One request without blocking the event loop (connect and recvmsg run on threads). */
export async function request(socketPath: string, req: WireRequest, options?: number | RequestOptions): Promise<Response> {
  const { timeoutMs = DEFAULT_TIMEOUT_MS, onPending } = optionsOf(options);
  let fd: number;
  try {
    fd = await connectUnixAsync(socketPath, timeoutMs);
  } catch (err) {
    explainConnectError(err, socketPath);
  }
  try {
    const sendErr = sendRequest(fd, req);
    let res: Response;
    try {
      res = await readReplyAsync(fd, onPending);
    } catch (err) {
      throw sendErr ? closedBeforeRequest() : err;
    }
    resultOf(res);
    return res;
  } finally {
    closeFd(fd);
  }
}

function asOpened(res: Response): OpenedTap {
  const lease = res.body.lease as LeaseInfo;
  if (res.fds.length !== lease.queues || typeof lease.mac !== 'string') {
    closeAll(res.fds);
    throw new TapdError('protocol', `expected ${lease.queues} TAP fds and the guest's MAC from tapd, got ${res.fds.length} fds and MAC ${lease.mac}`);
  }
  return { lease: { ...lease, mac: lease.mac }, fds: res.fds };
}

/** An open that waits as long as the network's up hook may take (it asks for `pending` frames). */
export function openTapSync(socketPath: string, req: Omit<WireRequest, 'op'>, options?: number | RequestOptions): OpenedTap {
  return asOpened(requestSync(socketPath, { op: 'open', progress: true, ...req }, options));
}

export async function openTap(socketPath: string, req: Omit<WireRequest, 'op'>, options?: number | RequestOptions): Promise<OpenedTap> {
  return asOpened(await request(socketPath, { op: 'open', progress: true, ...req }, options));
}
