// Tells when network devices disappear, keyed by ifindex (names are reused; indexes are not,
// until the counter wraps), and what tun/tap devices report about themselves. Learns it from
// rtnetlink RTM_DELLINK and RTM_NEWLINK, read on a worker thread.
import { EventEmitter } from 'node:events';
import { Worker } from 'node:worker_threads';
import { C, LAYOUT } from './constants.js';
import { sysBind, sysClose, sysIfIndexToName, sysSetsockopt, sysSocket } from './libc.js';
import type { TunState } from './rtnetlink.js';

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

/** True while a device with this index exists and, when given, still has this name. */
export function linkAlive(ifindex: number, name?: string): boolean {
  const current = sysIfIndexToName(ifindex);
  return current !== undefined && (name === undefined || current === name);
}

export class LinkWatch extends EventEmitter<LinkWatchEvents> {
  private fd = -1;
  private worker: Worker | undefined;
  private readonly stop = new SharedArrayBuffer(4);

  /** Subscribes to link events. Call before relying on events; check existing devices after. */
  start(): void {
    this.fd = sysSocket(C.AF_NETLINK, C.SOCK_RAW | C.SOCK_CLOEXEC, C.NETLINK_ROUTE, { action: 'open rtnetlink socket' });
    try {
      const addr = Buffer.alloc(LAYOUT['sizeof struct sockaddr_nl']);
      addr.writeUInt16LE(C.AF_NETLINK, LAYOUT['sockaddr_nl.nl_family']);
      addr.writeUInt32LE(C.RTMGRP_LINK, LAYOUT['sockaddr_nl.nl_groups']);
      sysBind(this.fd, addr, { action: 'subscribe to link events' });
      // A big receive buffer so 1000 TAPs vanishing at once do not overflow it; then a timeout
      // so the worker can notice stop() within 200 ms.
      const size = Buffer.alloc(4);
      size.writeInt32LE(4 * 1024 * 1024, 0);
      sysSetsockopt(this.fd, C.SOL_SOCKET, C.SO_RCVBUF, size, { action: 'size link event buffer' });
      const tv = Buffer.alloc(LAYOUT['sizeof struct timeval']);
      tv.writeBigInt64LE(200_000n, 8);
      sysSetsockopt(this.fd, C.SOL_SOCKET, C.SO_RCVTIMEO, tv, { action: 'set link event timeout' });
    } catch (err) {
      sysClose(this.fd);
      this.fd = -1;
      throw err;
    }
    const url = new URL('./link-watch-worker.js', import.meta.url);
    this.worker = new Worker(url, { workerData: { fd: this.fd, stop: this.stop } });
    this.worker.on('message', (m: { kind: string; ifindex?: number; reason?: string } & Partial<TunReport>) => {
      if (m.kind === 'gone') this.emit('gone', m.ifindex!);
      else if (m.kind === 'changed') this.emit('changed', m.ifindex!);
      else if (m.kind === 'tun') this.emit('tun', { ifindex: m.ifindex!, ifname: m.ifname!, address: m.address, tun: m.tun! });
      else this.emit('overflow', m.reason ?? 'overflow');
    });
    this.worker.on('error', (err) => this.emit('error', err));
    this.worker.once('exit', () => {
      this.worker = undefined;
    });
    this.worker.unref();
  }

  async close(): Promise<void> {
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
