// The socket side. One request per connection: accept (the peer's uid from the kernel, against
// the connection caps), read one size-capped frame within the deadline, learn which process
// connected, check the table's `who`, run the handler, write the reply within the deadline, close. A bad or slow peer loses its own connection, and
// a uid over its connection share is refused at once, so nobody can starve the others.
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

export function serve(server: net.Server, ctx: DaemonContext, onActivity: () => void, opts: ServeOptions = {}): void {
  server.on('connection', (socket) => {
    const steps = new Steps();
    onActivity();
    socket.on('error', () => socket.destroy());
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
      steps.mark('accept');
      // With SO_PEERPIDFD the kernel keeps the connecting process's struct pid from connect() on,
      // so identifying once the request is in binds the same process, and an idle connection
      // holds no pidfd. Without it, pid + start time are only as good as how early they are read.
      if (opts.peerPidfd === false || !hasPeerPidfd(fd)) {
        peer = identifyPeer(fd, { pidfd: opts.peerPidfd !== false });
        steps.mark('identify');
      }
    } catch (err) {
      ctx.log.error({ event: 'connection_refused', reason: String((err as Error).message) }, 'no peer credentials');
      socket.destroy();
      return;
    }
    const { uid } = cred;
    c.total++;
    c.byUid.set(uid, (c.byUid.get(uid) ?? 0) + 1);
    socket.once('close', () => {
      peer?.close();
      c.total--;
      const n = (c.byUid.get(uid) ?? 1) - 1;
      if (n > 0) c.byUid.set(uid, n);
      else c.byUid.delete(uid);
      onActivity();
    });
    const identify = (): IdentifiedPeer => {
      if (peer === undefined) {
        // Bound to the process that called connect() (pidfd + start time), not whoever has its
        // pid now: if it has exited, the binding is 'none' and polkit says no.
        peer = identifyPeer(fdOf(socket));
        if (socket.destroyed) peer.close(); // closed while we looked: 'close' has run already
        steps.mark('identify');
      }
      return peer;
    };
    void converse(socket, cred, identify, ctx, steps);
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

/** Resolves with the first frame, or rejects when the deadline passes or the frame is bad. */
function readRequest(socket: net.Socket, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const reader = new FrameReader(MAX_REQUEST_BYTES);
    const done = (err: unknown, body?: Buffer) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.pause();
      if (body) resolve(body);
      else reject(err);
    };
    const onData = (chunk: Buffer) => {
      try {
        const [body] = reader.push(chunk);
        if (body) done(undefined, body);
      } catch (err) {
        done(err);
      }
    };
    const onClose = () => done(new Error('closed'));
    const timer = setTimeout(() => done(new TapdError('bad_request', `no complete request within ${timeoutMs} ms`)), timeoutMs);
    socket.on('data', onData);
    socket.once('close', onClose);
  });
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

async function converse(socket: net.Socket, cred: sys.PeerCred, identify: () => IdentifiedPeer, ctx: DaemonContext, steps: Steps): Promise<void> {
  const { requestTimeoutMs } = ctx.policy.limits;
  const progress = (body: object) => {
    if (!socket.destroyed) socket.write(encodeFrame({ v: 1, ok: true, ...body }));
  };
  let op = 'none';
  let reply: Reply;
  let peer: IdentifiedPeer | undefined;
  try {
    const frame = await readRequest(socket, requestTimeoutMs);
    steps.mark('read');
    peer = identify();
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
    const who = { peer_uid: cred.uid, peer_pid: cred.pid, ...(peer ? { peer_binding: peer.binding } : {}) };
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
  await send(socket, reply, requestTimeoutMs, steps);
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
    socket.once('close', onClose);
    start(() => {
      socket.off('close', onClose);
      resolve();
    });
  });
}
