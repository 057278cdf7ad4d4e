// The bench's client and kernel-floor process. bench.ts compiles this file to plain JS in its run
// dir (it runs as uid 65534, outside vite-node) and starts it inside the bench namespace: as
// uid 65534 for tapd clients, as root for the in-process ioctl floor. It reads one JSON command a
// line on stdin and answers each with one JSON line on stdout. All timings are taken here, in the
// process that ends up holding the fds.
//
//   node worker.mjs DIST                               the command loop (DIST: the built dist/ dir)
//   node worker.mjs DIST --hold-and-exit SOCKET NET    opens one TAP, prints the wall-clock time
//                                                      (epoch ms) and exits with the fd still open,
//                                                      so the kernel closes it at process exit
import { closeSync } from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import type * as ClientLib from '../../src/client/client.js';
import type * as SysLib from '../../src/sys/index.js';

/** The uid the floor's TAPs are owned by (TUNSETOWNER), as a lease's are by its caller. */
const FLOOR_OWNER = 65534;

interface Target {
  socket: string;
  network: string;
}

/** Each command: what it takes and what it answers (besides `ok`). */
export interface WorkerOps {
  /** One open, then close its fds (timed: the last close deletes the device in the kernel). */
  open_close: [Target & { sync?: boolean }, { ms: number; close_ms: number; close_start_epoch_ms: number; lease: string; ifname: string }];
  /** k opens started at once (async client), held. */
  burst: [Target & { k: number }, { wall_ms: number; lat: number[]; leases: string[]; errors: string[] }];
  /** n opens one after another, held (sync client unless sync is false). */
  fill: [Target & { n: number; sync?: boolean }, { wall_ms: number; lat: number[]; leases: string[] }];
  /** Closes every held fd; when it started (epoch) and how long the closes took. */
  close_all: [Record<string, never>, { count: number; start_epoch_ms: number; ms: number }];
  /** Status requests back to back: no kernel work in the daemon, a probe of its event loop. */
  status: [{ socket: string; n?: number; for_ms?: number; gap_ms?: number }, { lat: number[] }];
  /** Opens (sync client) one after another for for_ms, gap_ms apart, closing each. */
  probe_opens: [Target & { for_ms: number; gap_ms?: number }, { lat: number[] }];
  list: [{ socket: string }, { leases: number }];
  /**
   * n connections that send nothing, held until release_idle; at most `parallel` connecting at a
   * time, a connect the full backlog refuses (EAGAIN) tried again 5 ms later.
   */
  hold_idle: [{ socket: string; n: number; parallel: number }, { connected: number; retries: number; failed: number; first_error?: string; ms: number }];
  /** Closes the idle connections; `refused`: how many the daemon had closed or answered first (busy, timeout). */
  release_idle: [Record<string, never>, { released: number; refused: number; first_refusal?: string }];
  /** The daemon's makeTap (src/daemon/networks.ts) in-process: TUNSETIFF, MAC, BRADDIF, up, index, MTU. */
  floor: [{ bridge: string }, { ms: number; close_ms: number; ifname: string }];
}
export type WorkerOp = keyof WorkerOps;
export type WorkerRequest = { [K in WorkerOp]: { id: number; op: K } & WorkerOps[K][0] }[WorkerOp] | { op: 'exit' };
export type WorkerReply = { id: number } & ({ ok: true } & Record<string, unknown> | { ok: false; error: string });

const [dist, mode, ...rest] = process.argv.slice(2);
if (!dist) throw new Error('usage: worker.mjs DIST [--hold-and-exit SOCKET NETWORK]');
const load = <T>(rel: string) => import(pathToFileURL(path.join(dist, rel)).href) as Promise<T>;
const client = await load<typeof ClientLib>('client/client.js');
const epochMs = () => performance.timeOrigin + performance.now();

if (mode === '--hold-and-exit') {
  const [socket, network] = rest;
  client.openTapSync(socket!, { network: network!, vnet_hdr: true });
  process.stdout.write(`${JSON.stringify({ exit_epoch_ms: epochMs() })}\n`);
  process.exit(0); // the TAP fd is still open: process exit closes it
}

const sys = await load<typeof SysLib>('sys/index.js');
/** Fds we hold between commands (burst, fill ... close_all). */
const held: number[] = [];
const closeFds = (fds: number[]) => fds.forEach((fd) => closeSync(fd));
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Idle connections (hold_idle); `refusals`: what the daemon said or did to one before we let go. */
const idle: net.Socket[] = [];
const refusals: string[] = [];

/** One idle connection, once connected; EAGAIN (backlog full) is retried. */
async function connectIdle(socket: string): Promise<{ s: net.Socket; retries: number }> {
  for (let retries = 0; ; retries++) {
    const s = net.connect(socket);
    const err = await new Promise<(Error & { code?: string }) | undefined>((resolve) => {
      s.once('connect', () => resolve(undefined));
      s.once('error', resolve);
    });
    if (!err) {
      let seen = false;
      const refused = (what: string) => {
        if (seen || !idle.includes(s)) return;
        seen = true;
        refusals.push(what);
      };
      s.on('data', (d: Buffer) => refused(`reply: ${d.subarray(4).toString().slice(0, 200)}`));
      s.on('close', () => refused('closed by the daemon'));
      s.on('error', () => {});
      return { s, retries };
    }
    s.destroy();
    if (err.code !== 'EAGAIN' || retries >= 1000) throw err;
    await pause(5);
  }
}

async function openOnce(c: Target & { sync?: boolean }) {
  const t0 = performance.now();
  const r = c.sync
    ? client.openTapSync(c.socket, { network: c.network, vnet_hdr: true })
    : await client.openTap(c.socket, { network: c.network, vnet_hdr: true });
  return { ms: performance.now() - t0, fds: r.fds, lease: r.lease.id, ifname: r.lease.ifname };
}

type Handlers = { [K in WorkerOp]: (c: WorkerOps[K][0]) => Promise<WorkerOps[K][1]> };
const COMMANDS: Handlers = {
  async open_close(c) {
    const r = await openOnce(c);
    const t1 = performance.now();
    closeFds(r.fds);
    const t2 = performance.now();
    return { ms: r.ms, close_ms: t2 - t1, close_start_epoch_ms: performance.timeOrigin + t1, lease: r.lease, ifname: r.ifname };
  },
  async burst(c) {
    const t0 = performance.now();
    const results = await Promise.all(Array.from({ length: c.k }, () => openOnce(c).then((r) => ({ ...r, error: undefined }),
      (e: Error & { code?: string }) => ({ error: `${e.code ?? ''} ${e.message}`.trim(), fds: undefined, ms: 0, lease: '' }))));
    const wall = performance.now() - t0;
    const ok = results.filter((r) => r.fds !== undefined);
    for (const r of ok) held.push(...r.fds!);
    return { wall_ms: wall, lat: ok.map((r) => r.ms), leases: ok.map((r) => r.lease), errors: results.flatMap((r) => (r.error ? [r.error] : [])) };
  },
  async fill(c) {
    const lat: number[] = [];
    const leases: string[] = [];
    const t0 = performance.now();
    for (let i = 0; i < c.n; i++) {
      const r = await openOnce({ ...c, sync: c.sync ?? true });
      held.push(...r.fds);
      lat.push(r.ms);
      leases.push(r.lease);
    }
    return { wall_ms: performance.now() - t0, lat, leases };
  },
  async close_all() {
    const fds = held.splice(0);
    const startEpoch = epochMs();
    const t0 = performance.now();
    closeFds(fds);
    return { count: fds.length, start_epoch_ms: startEpoch, ms: performance.now() - t0 };
  },
  async status(c) {
    const lat: number[] = [];
    const end = c.for_ms ? performance.now() + c.for_ms : Infinity;
    for (let i = 0; (c.n === undefined || i < c.n) && performance.now() < end; i++) {
      const t0 = performance.now();
      client.requestSync(c.socket, { op: 'status' });
      lat.push(performance.now() - t0);
      if (c.gap_ms) await pause(c.gap_ms);
    }
    return { lat };
  },
  async probe_opens(c) {
    const lat: number[] = [];
    const end = performance.now() + c.for_ms;
    while (performance.now() < end) {
      const r = await openOnce({ ...c, sync: true });
      lat.push(r.ms);
      closeFds(r.fds);
      if (c.gap_ms) await pause(c.gap_ms);
    }
    return { lat };
  },
  async list(c) {
    const r = client.requestSync(c.socket, { op: 'list' });
    return { leases: (r.body.leases as unknown[]).length };
  },
  async hold_idle(c) {
    const t0 = performance.now();
    let next = 0;
    let retries = 0;
    const errors: string[] = [];
    const lane = async () => {
      while (next < c.n) {
        next++;
        try {
          const r = await connectIdle(c.socket);
          idle.push(r.s);
          retries += r.retries;
        } catch (err) {
          const e = err as Error & { code?: string };
          errors.push(`${e.code ?? ''} ${e.message}`.trim());
        }
      }
    };
    await Promise.all(Array.from({ length: c.parallel }, lane));
    return { connected: idle.length, retries, failed: errors.length, ...(errors[0] ? { first_error: errors[0] } : {}), ms: performance.now() - t0 };
  },
  async release_idle() {
    const all = idle.splice(0);
    for (const s of all) s.destroy();
    return { released: all.length, refused: refusals.length, ...(refusals[0] ? { first_refusal: refusals[0] } : {}) };
  },
  async floor(c) {
    // The daemon's kernel calls for a bridged open (src/daemon/open.ts: create, configure,
    // verify), in the same order, with the bridge's index and MTU known beforehand as the
    // daemon's ensureBridge has them.
    const bridge = sys.IfName.parse(c.bridge);
    const bridgeIndex = sys.getIndex(bridge);
    const bridgeMtu = sys.getMtu(bridge);
    const mac = sys.Mac.fromBytes(Buffer.from([0xfe, 0x54, 0x00, ...crypto.getRandomValues(new Uint8Array(3))]));
    const t0 = performance.now();
    const tap = sys.createTap({ vnetHdr: true, queues: 1, owner: FLOOR_OWNER });
    const ifindex = sys.getIndex(tap.name);
    sys.setLink(ifindex, tap.name.value, { address: mac, mtu: bridgeMtu, master: bridgeIndex, up: true });
    if (sys.getMtu(bridge) !== bridgeMtu) throw new Error(`bridge ${bridge} MTU moved`);
    const state = sys.getLink(ifindex)?.tun;
    if (state?.owner !== FLOOR_OWNER) throw new Error(`${tap.name}: owner ${state?.owner}, expected ${FLOOR_OWNER}`);
    const t1 = performance.now();
    const ifname = tap.name.value;
    sys.closeTapSync(tap);
    return { ms: t1 - t0, close_ms: performance.now() - t1, ifname };
  },
};

for await (const text of createInterface({ input: process.stdin })) {
  if (!text.trim()) continue;
  const c = JSON.parse(text) as WorkerRequest;
  if (c.op === 'exit') break;
  let reply: WorkerReply;
  try {
    const run = COMMANDS[c.op] as (x: typeof c) => Promise<object>;
    reply = { id: c.id, ok: true, ...(await run(c)) };
  } catch (err) {
    const e = err as Error & { code?: string };
    reply = { id: c.id, ok: false, error: `${e.code ?? ''} ${e.message}`.trim() };
  }
  process.stdout.write(`${JSON.stringify(reply)}\n`);
}
closeFds(held.splice(0));
process.exit(0);
