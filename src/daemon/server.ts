// The socket side: accept, learn who the peer is from the kernel, read one size-capped frame at
// a time, dispatch through HANDLERS, reply. A bad peer loses its own connection, nobody else's.
import net from 'node:net';
import { TapdError } from '../errors/tapd-error.js';
import { FrameReader, MAX_REQUEST_BYTES, encodeFrame, parseJsonObject } from '../protocol/frame.js';
import { decodeRequest, errorReply, type Request } from '../protocol/messages.js';
import * as sys from '../sys/index.js';
import type { DaemonContext, Peer } from './context.js';
import { DeniedError } from './denied-error.js';
import { HANDLERS, type Reply } from './handlers.js';

/** libuv's handle fd: sendmsg and getsockopt go through it directly (never while libuv has a write pending). */
function fdOf(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no fd');
  return fd;
}

export class ConnectionServer {
  private live = 0;

  constructor(
    private readonly server: net.Server,
    private readonly ctx: () => DaemonContext,
    private readonly onActivity: () => void,
  ) {
    server.on('connection', (socket) => this.accept(socket));
  }

  get connections(): number {
    return this.live;
  }

  private accept(socket: net.Socket): void {
    const ctx = this.ctx();
    this.live++;
    this.onActivity();
    socket.once('close', () => {
      this.live--;
      this.onActivity();
    });
    socket.on('error', () => socket.destroy());
    if (this.live > ctx.policy.limits.maxConnections) {
      ctx.log.warn({ event: 'connection_refused', reason: 'too many connections' }, 'connection refused');
      // Read and discard until the peer closes, or 'close' never comes on a half-open socket.
      socket.resume();
      socket.end(encodeFrame(errorReply('busy', 'tapd is serving too many clients; try again in a moment')));
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    let peer: Peer;
    try {
      const fd = fdOf(socket);
      const cred = sys.peerCred(fd);
      peer = { ...cred, groups: sys.peerGroups(fd) };
    } catch (err) {
      ctx.log.warn({ event: 'connection_refused', reason: String((err as Error).message) }, 'no peer credentials');
      socket.destroy();
      return;
    }
    new Connection(socket, peer, this.ctx).start();
  }
}

class Connection {
  private readonly reader = new FrameReader(MAX_REQUEST_BYTES);
  private readonly queue: Buffer[] = [];
  private busy = false;
  private deadline: NodeJS.Timeout | undefined;

  constructor(
    private readonly socket: net.Socket,
    private readonly peer: Peer,
    private readonly ctx: () => DaemonContext,
  ) {}

  start(): void {
    this.armDeadline();
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.socket.once('close', () => clearTimeout(this.deadline));
  }

  /** A client gets requestTimeoutMs to send each complete request; idle or slow ones are dropped. */
  private armDeadline(): void {
    clearTimeout(this.deadline);
    this.deadline = setTimeout(() => {
      this.ctx().log.info({ event: 'connection_dropped', uid: this.peer.uid, pid: this.peer.pid, reason: 'request timeout' }, 'client too slow');
      this.socket.destroy();
    }, this.ctx().policy.limits.requestTimeoutMs);
  }

  private onData(chunk: Buffer): void {
    try {
      this.queue.push(...this.reader.push(chunk));
    } catch (err) {
      this.fail(err);
      return;
    }
    void this.drain();
  }

  /** One request at a time per connection, in order. */
  private async drain(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    this.socket.pause();
    while (this.queue.length > 0 && !this.socket.destroyed) {
      clearTimeout(this.deadline);
      const body = this.queue.shift()!;
      let request: Request;
      try {
        request = decodeRequest(parseJsonObject(body));
      } catch (err) {
        this.fail(err);
        return;
      }
      const reply = await this.dispatch(request);
      await this.send(reply);
      this.armDeadline();
    }
    this.busy = false;
    if (!this.socket.destroyed) this.socket.resume();
  }

  private async dispatch(request: Request): Promise<Reply> {
    const ctx = this.ctx();
    try {
      const handler = HANDLERS[request.op] as (c: DaemonContext, p: Peer, r: Request) => Promise<Reply>;
      return await handler(ctx, this.peer, request);
    } catch (err) {
      if (err instanceof TapdError) {
        const reason = err instanceof DeniedError && err.logReason ? err.logReason : err.message;
        ctx.log.info({ event: 'request_refused', op: request.op, uid: this.peer.uid, pid: this.peer.pid, result: err.code, reason }, 'request refused');
        return { body: errorReply(err.code, err.message) as unknown as Record<string, unknown> };
      }
      // Internals stay in our log; the peer learns only that something went wrong on our side.
      ctx.log.error({ event: 'internal_error', op: request.op, uid: this.peer.uid, reason: String((err as Error)?.stack ?? err) }, 'internal error');
      return { body: errorReply('internal', 'tapd failed to handle the request; an admin can find why in the tapd log') as unknown as Record<string, unknown> };
    }
  }

  private async send(reply: Reply): Promise<void> {
    const frame = encodeFrame(reply.body);
    let delivered = false;
    try {
      if (reply.fds && reply.fds.length > 0) {
        // Straight through sendmsg so the fds ride with the first byte of the frame. Nothing is
        // queued in libuv: we only ever write after the previous write has flushed.
        const n = sys.sendWithFds(fdOf(this.socket), frame, reply.fds, { action: 'send reply' });
        if (n < frame.length) await this.write(frame.subarray(n));
      } else {
        await this.write(frame);
      }
      delivered = true;
    } catch {
      this.socket.destroy();
    } finally {
      reply.sent?.(delivered);
    }
  }

  private write(data: Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(data, (err) => (err ? reject(err) : resolve())));
  }

  /** A malformed frame costs the peer its connection, after one error reply saying why. */
  private fail(err: unknown): void {
    const e = err instanceof TapdError ? err : new TapdError('bad_request', 'malformed request');
    this.ctx().log.info({ event: 'connection_dropped', uid: this.peer.uid, pid: this.peer.pid, result: e.code, reason: e.message }, 'bad request');
    clearTimeout(this.deadline);
    this.queue.length = 0;
    this.socket.removeAllListeners('data');
    this.socket.resume();
    this.socket.end(encodeFrame(errorReply(e.code, e.message)));
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }
}
