// Tells when network devices disappear, keyed by ifindex (names are reused; indexes are not,
// until the counter wraps), and what tun/tap devices report about themselves. Learns it from
// rtnetlink RTM_DELLINK and RTM_NEWLINK.
//
// The socket is read on the event loop: libuv polls it as a pipe handle (a non-blocking fd
// whose read() returns one netlink datagram), so no thread waits for events. A worker thread
// costs ~11 MB of RSS (its own V8 isolate); it is kept only as the fallback for a Node without
// the pipe binding.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { Worker } from 'node:worker_threads';
import { C, LAYOUT } from './constants.js';
import { sysBind, sysClose, sysIfIndexToName, sysSetsockopt, sysSocket } from './libc.js';
import { parseLink, type TunState } from './rtnetlink.js';

/** A tun/tap device's state report (RTM_NEWLINK). */
export interface TunReport {
  ifindex: number;
  ifname: string;
  address?: string;
  tun: TunState;
}

export interface LinkWatchEvents {
  /** The device with this ifindex was deleted. */
  gone: [ifindex: number];
  /** A tun/tap device reported its state (after any change: persist, owner, MAC, flags...). */
  tun: [report: TunReport];
  /** A device of another kind (a macvtap) changed: judge it afresh. */
  changed: [ifindex: number];
  /** Events may have been lost (socket overflow): re-check every device you care about. */
  overflow: [reason: string];
  error: [err: Error];
}

/** One event the daemon acts on, as decoded from a netlink datagram. */
export type LinkEvent =
  | { kind: 'gone'; ifindex: number }
  | { kind: 'changed'; ifindex: number }
  | ({ kind: 'tun' } & TunReport);

/**
 * The events in `n` bytes of netlink messages: every device deletion, and every state report
 * of a tun/tap device (its holder can change persist, owner, group and MAC through its fd) or
 * of a macvtap.
 */
export function decodeLinkEvents(buf: Buffer, n: number): LinkEvent[] {
  const out: LinkEvent[] = [];
  for (let off = 0; off + LAYOUT['sizeof struct nlmsghdr'] <= n; ) {
    const len = buf.readUInt32LE(off + LAYOUT['nlmsghdr.nlmsg_len']);
    if (len < LAYOUT['sizeof struct nlmsghdr'] || off + len > n) break;
    const type = buf.readUInt16LE(off + LAYOUT['nlmsghdr.nlmsg_type']);
    const body = buf.subarray(off + LAYOUT['sizeof struct nlmsghdr'], off + len);
    // AF_BRIDGE messages only speak of a port's bridge side; the device itself is AF_UNSPEC.
    const family = body.length > 0 ? body.readUInt8(LAYOUT['ifinfomsg.ifi_family']) : -1;
    if (family === C.AF_UNSPEC && type === C.RTM_DELLINK) {
      out.push({ kind: 'gone', ifindex: body.readInt32LE(LAYOUT['ifinfomsg.ifi_index']) });
    } else if (family === C.AF_UNSPEC && type === C.RTM_NEWLINK) {
      const link = parseLink(body);
      if (link?.tun) out.push({ kind: 'tun', ifindex: link.ifindex, ifname: link.ifname, address: link.address?.toString(), tun: link.tun });
      else if (link?.kind === 'macvtap') out.push({ kind: 'changed', ifindex: link.ifindex });
    }
    off += (len + 3) & ~3;
  }
  return out;
}

/** True while a device with this index exists and, when given, still has this name. */
export function linkAlive(ifindex: number, name?: string): boolean {
  const current = sysIfIndexToName(ifindex);
  return current !== undefined && (name === undefined || current === name);
}

interface PipeHandle {
  open(fd: number): number;
}
type PipeBinding = { Pipe: new (type: number) => PipeHandle; constants: { SOCKET: number } };

/** Node's pipe binding (libuv uv_pipe_t), or undefined on a Node that no longer offers it. */
function pipeBinding(): PipeBinding | undefined {
  try {
    const b = (process as unknown as { binding(name: string): PipeBinding }).binding('pipe_wrap');
    return typeof b?.Pipe === 'function' && typeof b.constants?.SOCKET === 'number' ? b : undefined;
  } catch {
    return undefined;
  }
}

/** A bound rtnetlink socket subscribed to link events, with a receive buffer for bursts. */
function subscribe(timeoutUs: number, rcvbuf: number): number {
  const fd = sysSocket(C.AF_NETLINK, C.SOCK_RAW | C.SOCK_CLOEXEC, C.NETLINK_ROUTE, { action: 'open rtnetlink socket' });
  try {
    const addr = Buffer.alloc(LAYOUT['sizeof struct sockaddr_nl']);
    addr.writeUInt16LE(C.AF_NETLINK, LAYOUT['sockaddr_nl.nl_family']);
    addr.writeUInt32LE(C.RTMGRP_LINK, LAYOUT['sockaddr_nl.nl_groups']);
    sysBind(fd, addr, { action: 'subscribe to link events' });
    const size = Buffer.alloc(4);
    size.writeInt32LE(rcvbuf, 0);
    sysSetsockopt(fd, C.SOL_SOCKET, C.SO_RCVBUF, size, { action: 'size link event buffer' });
    if (timeoutUs > 0) {
      const tv = Buffer.alloc(LAYOUT['sizeof struct timeval']);
      tv.writeBigInt64LE(BigInt(timeoutUs), 8);
      sysSetsockopt(fd, C.SOL_SOCKET, C.SO_RCVTIMEO, tv, { action: 'set link event timeout' });
    }
    return fd;
  } catch (err) {
    sysClose(fd);
    throw err;
  }
}

export interface LinkWatchOptions {
  /** Read on a worker thread even where the event loop could poll the socket (tests the fallback). */
  thread?: boolean;
  /** SO_RCVBUF in bytes (tests make it small to overflow it). */
  rcvbuf?: number;
}

/** Room for 1000 TAPs vanishing at once. */
const RCVBUF = 4 * 1024 * 1024;

export class LinkWatch extends EventEmitter<LinkWatchEvents> {
  private fd = -1;
  private socket: net.Socket | undefined;
  private worker: Worker | undefined;
  private closed = false;
  private readonly stop = new SharedArrayBuffer(4);

  constructor(private readonly opts: LinkWatchOptions = {}) {
    super();
  }

  /** Subscribes to link events. Call before relying on events; check existing devices after. */
  start(): void {
    const binding = this.opts.thread ? undefined : pipeBinding();
    if (binding) this.listen(binding);
    else this.startWorker();
  }

  /** How events are read: 'event-loop' or 'worker' (for the tests and the bench). */
  get mode(): 'event-loop' | 'worker' | 'stopped' {
    return this.socket ? 'event-loop' : this.worker ? 'worker' : 'stopped';
  }

  private emitEvent(e: LinkEvent): void {
    if (e.kind === 'gone') this.emit('gone', e.ifindex);
    else if (e.kind === 'changed') this.emit('changed', e.ifindex);
    else this.emit('tun', { ifindex: e.ifindex, ifname: e.ifname, address: e.address, tun: e.tun });
  }

  private listen(binding: PipeBinding): void {
    const fd = subscribe(0, this.opts.rcvbuf ?? RCVBUF);
    const pipe = new binding.Pipe(binding.constants.SOCKET);
    // uv_pipe_open makes the fd non-blocking; libuv then read()s one datagram per wakeup. From
    // here on the handle owns the fd: destroying the socket closes it.
    const rc = pipe.open(fd);
    if (rc !== 0) {
      sysClose(fd);
      throw new Error(`cannot poll the rtnetlink socket (libuv error ${rc})`);
    }
    const socket = new net.Socket({ handle: pipe as never, readable: true, writable: false } as net.SocketConstructorOpts);
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      for (const e of decodeLinkEvents(chunk, chunk.length)) this.emitEvent(e);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      socket.destroy();
      if (this.closed) return;
      // ENOBUFS: the kernel dropped events, and libuv stops reading a handle after any error.
      // Subscribe afresh first, then tell the owner to re-check every lease, so nothing that
      // happens from here on is missed.
      try {
        this.listen(binding);
      } catch (again) {
        this.emit('error', again as Error);
        return;
      }
      this.emit('overflow', String(err.message));
    });
    socket.on('end', () => {
      if (this.socket === socket && !this.closed) socket.emit('error', new Error('link event socket closed'));
    });
    // The listening server keeps the daemon alive, not this.
    socket.unref();
  }

  private startWorker(): void {
    // The worker blocks in recv(); a timeout lets it notice stop() within 200 ms.
    this.fd = subscribe(200_000, this.opts.rcvbuf ?? RCVBUF);
    // '../sys/': the same directory from dist/sys/, and dist/sys/ from the bundled dist/cli/tapd.js.
    const url = new URL('../sys/link-watch-worker.js', import.meta.url);
    this.worker = new Worker(url, { workerData: { fd: this.fd, stop: this.stop } });
    this.worker.on('message', (m: LinkEvent | { kind: 'overflow'; reason: string }) => {
      if (m.kind === 'overflow') this.emit('overflow', m.reason);
      else this.emitEvent(m);
    });
    this.worker.on('error', (err) => this.emit('error', err));
    this.worker.once('exit', () => {
      this.worker = undefined;
    });
    this.worker.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    const socket = this.socket;
    this.socket = undefined;
    if (socket) await new Promise<void>((resolve) => socket.destroy().once('close', () => resolve()));
    Atomics.store(new Int32Array(this.stop), 0, 1);
    const worker = this.worker;
    if (worker) {
      // Unref'd, the worker alone would let Node end the process before its 'exit' event, and
      // with it whatever the caller meant to do after close() (tapd's last record).
      worker.ref();
      await new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    }
    if (this.fd >= 0) sysClose(this.fd);
    this.fd = -1;
  }
}
