// The socket side. One request per connection: accept (the peer's uid from the kernel, against
// the connection caps), read one size-capped frame within the deadline, learn which process
// connected, check the table's `who`, run the handler, write the reply within the deadline,
// close. A bad or slow peer loses its own connection, and a uid over its connection share is
// refused at once, so nobody can starve the others.
//
// An idle connection (accepted, nothing read yet) is kept small, since a local user may hold
// thousands of them: a socket, one Conn and a place in the deadline queue; its listeners are
// shared functions that find the Conn on the socket; no timer, closure, promise, Steps or pidfd
// of its own. The request's work (converse) starts when its frame is complete.
import net from 'node:net';
import { isPeerErrorCode, type PeerErrorCode } from '../errors/codes.js';
import { TapdError } from '../errors/tapd-error.js';
import { FrameReader, MAX_REQUEST_BYTES, encodeFrame, parseJsonObject } from '../protocol/frame.js';
import { decodeRequest, errorReply, type Request } from '../protocol/messages.js';
import * as sys from '../sys/index.js';
import type { DaemonContext, Peer } from './context.js';
import { DeniedError } from './denied-error.js';
import { HANDLERS, isAdmin, type Reply } from './handlers.js';
import { identifyPeer, type IdentifiedPeer } from './peer.js';
import { Steps } from './steps.js';

/** libuv's handle fd: sendmsg and getsockopt go through it directly (never while libuv has a write pending). */
function fdOf(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no fd');
  return fd;
}

export interface ServeOptions {
  /**
   * Use SO_PEERPIDFD (default: when the kernel has it, learned from the first connection).
   * false: identify at accept by pid + start time, as on a kernel without it (tests).
   */
  peerPidfd?: boolean;
}

/** Does this kernel have SO_PEERPIDFD? One getsockopt on the first connection answers it for good. */
let kernelPeerPidfd: boolean | undefined;
function hasPeerPidfd(fd: number): boolean {
  if (kernelPeerPidfd === undefined) {
    const got = sys.peerPidfd(fd);
    if (got.kind === 'pidfd') sys.closeFd(got.fd);
    kernelPeerPidfd = got.kind !== 'unsupported';
  }
  return kernelPeerPidfd;
}

/** What every connection of one server shares (one pointer each). */
interface Served {
  readonly ctx: DaemonContext;
  readonly onActivity: () => void;
  readonly deadlines: Deadlines;
}

const CONN = Symbol('tapd connection');
type ConnSocket = net.Socket & { [CONN]?: Conn };

/** One connection, from accept to close. */
class Conn {
  peer: IdentifiedPeer | undefined = undefined;
  /** Made on the first bytes: an idle connection has none. */
  reader: FrameReader | undefined = undefined;
  /** Made when the request is in, from `acceptedAt` and `acceptUs` (or at accept, in the fallback). */
  steps: Steps | undefined = undefined;

  constructor(
    readonly socket: ConnSocket,
    readonly served: Served,
    /** SO_PEERCRED at accept (recorded by the kernel at connect(), as identifyPeer's are). */
    readonly uid: number,
    readonly pid: number,
    /** hrtime when accept's work ended: the request deadline counts from it. */
    readonly acceptedAt: bigint,
    /** The accept step's µs. */
    readonly acceptUs: number,
    /** request-timeout when accepted: the reply's deadline is the same (a request keeps its policy). */
    readonly timeoutMs: number,
  ) {}

  stepsNow(): Steps {
    return (this.steps ??= new Steps(this.acceptedAt, { accept: this.acceptUs }));
  }

  /** The process that connected, identified on first use (with SO_PEERPIDFD, once the request is in). */
  identify(): IdentifiedPeer {
    if (this.peer === undefined) {
      // Bound to the process that called connect() (pidfd + start time), not whoever has its pid
      // now: if it has exited, the binding is 'none' and polkit says no.
      this.peer = identifyPeer(fdOf(this.socket));
      this.stepsNow().mark('identify');
    }
    return this.peer;
  }

  onData(chunk: Buffer): void {
    let body: Buffer | undefined;
    try {
      this.reader ??= new FrameReader(MAX_REQUEST_BYTES);
      [body] = this.reader.push(chunk);
    } catch (err) {
      this.readDone(err);
      return;
    }
    if (body) this.readDone(undefined, body);
  }

  /** The request is in, or bad, or late: stop reading and answer it. */
  readDone(err: unknown, body?: Buffer): void {
    this.served.deadlines.delete(this);
    this.reader = undefined;
    this.socket.off('data', onData);
    this.socket.pause();
    void converse(this, this.stepsNow(), err, body);
  }

  onClose(): void {
    const { ctx: { connections: c }, deadlines, onActivity } = this.served;
    // Closed while reading: nothing to answer.
    deadlines.delete(this);
    this.peer?.close();
    c.total--;
    const n = (c.byUid.get(this.uid) ?? 1) - 1;
    if (n > 0) c.byUid.set(this.uid, n);
    else c.byUid.delete(this.uid);
    onActivity();
  }
}

// The listeners every connection shares; `this` is the socket.
function onError(this: net.Socket): void {
  this.destroy();
}
function onData(this: ConnSocket, chunk: Buffer): void {
  this[CONN]!.onData(chunk);
}
function onClose(this: ConnSocket): void {
  this[CONN]!.onClose();
}

/**
 * The request deadlines of the connections still reading, on one timer instead of one each. A
 * FIFO per timeout (every connection has the same one until a reload changes it), so the head of
 * each queue is its earliest deadline and a sweep looks at little more than what expires.
 */
class Deadlines {
  private readonly queues = new Map<number, Set<Conn>>();
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;

  /** hrtime (ms, as a number) at which `c`'s request is late. */
  private static due(c: Conn): number {
    return Number(c.acceptedAt / 1_000_000n) + c.timeoutMs;
  }

  add(c: Conn): void {
    let q = this.queues.get(c.timeoutMs);
    if (!q) this.queues.set(c.timeoutMs, (q = new Set()));
    q.add(c);
    this.arm(Deadlines.due(c));
  }

  delete(c: Conn): void {
    this.queues.get(c.timeoutMs)?.delete(c);
  }

  private arm(at: number): void {
    if (this.timer !== undefined && this.timerAt <= at) return;
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => this.sweep(), Math.max(1, Math.ceil(at - nowMs())));
  }

  private sweep(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    const now = nowMs();
    let next = Infinity;
    for (const [ms, q] of this.queues) {
      for (const c of q) {
        const due = Deadlines.due(c);
        if (due > now) {
          next = Math.min(next, due);
          break;
        }
        // Deleting while iterating is safe for a Set; readDone deletes it too (a no-op then).
        q.delete(c);
        c.readDone(new TapdError('bad_request', `no complete request within ${ms} ms`));
      }
      if (q.size === 0) this.queues.delete(ms);
    }
    if (next !== Infinity) this.arm(next);
  }
}

/** The monotonic clock the deadlines use (hrtime, in ms). */
function nowMs(): number {
  return Number(process.hrtime.bigint() / 1_000_000n);
}

export function serve(server: net.Server, ctx: DaemonContext, onActivity: () => void, opts: ServeOptions = {}): void {
  const served: Served = { ctx, onActivity, deadlines: new Deadlines() };
  server.on('connection', (socket: ConnSocket) => {
    const t0 = process.hrtime.bigint();
    let steps: Steps | undefined;
    onActivity();
    socket.on('error', onError);
    const c = ctx.connections;
    let cred: sys.PeerCred;
    let peer: IdentifiedPeer | undefined;
    try {
      const fd = fdOf(socket);
      // The uid first (one getsockopt): a connection over its uid's share costs no more than that.
      cred = sys.peerCred(fd);
      const { maxConnections, maxConnectionsPerUser } = ctx.policy.limits;
      if (c.total >= maxConnections) return refuse(socket, ctx, cred.uid, 'tapd is serving too many clients');
      if ((c.byUid.get(cred.uid) ?? 0) >= maxConnectionsPerUser) return refuse(socket, ctx, cred.uid, 'you have too many connections open to tapd');
      // With SO_PEERPIDFD the kernel keeps the connecting process's struct pid from connect() on,
      // so identifying once the request is in binds the same process, and an idle connection
      // holds no pidfd. Without it, pid + start time are only as good as how early they are read.
      if (opts.peerPidfd === false || !hasPeerPidfd(fd)) {
        steps = new Steps(t0);
        steps.mark('accept');
        peer = identifyPeer(fd, { pidfd: false });
        steps.mark('identify');
      }
    } catch (err) {
      ctx.log.error({ event: 'connection_refused', reason: String((err as Error).message) }, 'no peer credentials');
      socket.destroy();
      return;
    }
    const t1 = process.hrtime.bigint();
    const conn = new Conn(socket, served, cred.uid, cred.pid, t1, Number((t1 - t0) / 1000n), ctx.policy.limits.requestTimeoutMs);
    conn.peer = peer;
    conn.steps = steps;
    socket[CONN] = conn;
    c.total++;
    c.byUid.set(cred.uid, (c.byUid.get(cred.uid) ?? 0) + 1);
    socket.on('close', onClose); // 'close' comes once: no once() wrapper to keep
    socket.on('data', onData);
    served.deadlines.add(conn);
  });
}

/** A refusal costs one non-blocking send and a close: no timer, no read, no log line per attempt. */
function refuse(socket: net.Socket, ctx: DaemonContext, uid: number, why: string): void {
  try {
    sys.sendAll(fdOf(socket), encodeFrame(errorReply('busy', `${why}; try again in a moment`)), { nonBlocking: true });
  } catch {
    // The peer's buffer is full or it is gone: it gets the close.
  }
  ctx.log.debug({ event: 'connection_refused', peer_uid: uid, reason: why }, 'connection refused');
  socket.destroy();
}

/**
 * The level of a refused request. Failures on our side (a hook, a network the host lacks, a
 * config that does not load) are the admin's to fix: error. The daemon's own cap: warn. What
 * the peer asked for wrongly or may not have: info.
 */
export function refusalLevel(code: PeerErrorCode): 'error' | 'warn' | 'info' {
  if (code === 'hook_failed' || code === 'network_unavailable' || code === 'config_invalid') return 'error';
  return code === 'limit' ? 'warn' : 'info';
}

async function converse(conn: Conn, steps: Steps, readErr: unknown, frame: Buffer | undefined): Promise<void> {
  const { socket, served: { ctx } } = conn;
  const progress = (body: object) => {
    if (!socket.destroyed) socket.write(encodeFrame({ v: 1, ok: true, ...body }));
  };
  let op = 'none';
  let reply: Reply;
  try {
    if (frame === undefined) throw readErr;
    steps.mark('read');
    // Before anything is awaited: the socket is still open (this runs in its 'data' event).
    const peer: Peer = conn.identify();
    const request = decodeRequest(parseJsonObject(frame));
    op = request.op;
    steps.mark('decode');
    const row = HANDLERS[request.op] as { who: string; run: (c: DaemonContext, p: Peer, r: Request, g: typeof progress, s: Steps) => Promise<Reply> };
    if (row.who === 'admin' && !(await isAdmin(ctx, peer))) throw new TapdError('forbidden', `only root or a tapd admin may ${op}`);
    reply = await row.run(ctx, peer, request, progress, steps);
  } catch (err) {
    if (socket.destroyed) return;
    // SO_PEERCRED's uid and pid, the same as identifyPeer's (both recorded at connect()), and
    // how the process was bound ('none': it had gone, so polkit was not asked).
    const who = { peer_uid: conn.uid, peer_pid: conn.pid, ...(conn.peer ? { peer_binding: conn.peer.binding } : {}) };
    if (err instanceof TapdError && isPeerErrorCode(err.code) && err.code !== 'internal') {
      const reason = err instanceof DeniedError && err.logReason ? err.logReason : err.message;
      // By trust, as dhcpleased does: what the peer did wrong or may not do is no admin's error;
      // a failing hook, a missing bridge or a broken config are.
      ctx.log[refusalLevel(err.code)]({ event: 'request_refused', op, ...who, result: err.code, reason }, 'request refused');
      reply = { body: errorReply(err.code, err.message) };
    } else {
      // Kernel failures and bugs stay in our log; the peer learns only that it was on our side.
      ctx.log.error({ event: 'internal_error', op, ...who, reason: String((err as Error)?.stack ?? err) }, 'internal error');
      reply = { body: errorReply('internal', 'tapd failed to handle the request; an admin can find why in the tapd log') };
    }
  }
  await send(socket, reply, conn.timeoutMs, steps);
}

/** Writes the reply (fds on its first byte) within the deadline, then closes the connection. */
async function send(socket: net.Socket, reply: Reply, timeoutMs: number, steps: Steps): Promise<void> {
  const frame = encodeFrame(reply.body);
  let delivered = false;
  const timer = setTimeout(() => socket.destroy(), timeoutMs);
  try {
    await settled(socket, (done) => (socket.writableLength === 0 ? done() : socket.once('drain', done)));
    // Straight through sendmsg so the fds ride with the first byte of the frame; libuv has
    // nothing pending (above), so nothing can overtake it.
    const n = reply.fds?.length ? sys.sendWithFds(fdOf(socket), frame, reply.fds, { action: 'send reply' }) : 0;
    // The fds are in the peer's hands now: the last step ends before the peer can have them.
    steps.mark('send');
    await settled(socket, (done) => socket.end(frame.subarray(n), done));
    delivered = true;
  } catch {
    // Gone, too slow, or the send failed: it gets nothing more.
  } finally {
    clearTimeout(timer);
    // Queued data stays readable for a Unix socket's peer after we close.
    socket.destroy();
    reply.sent?.(delivered);
  }
}

/** Runs `start(done)`; resolves when it calls done, rejects if the socket closes first. */
function settled(socket: net.Socket, start: (done: () => void) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.destroyed) {
      reject(new Error('closed'));
      return;
    }
    const onClose = () => reject(new Error('closed'));
    socket.on('close', onClose); // 'close' comes once: no once() wrapper to keep
    start(() => {
      socket.off('close', onClose);
      resolve();
    });
  });
}
