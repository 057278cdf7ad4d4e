// The bench's client and kernel-floor process. bench.mjs starts it inside the bench namespace
// (as uid 65534 for tapd clients, as root for the in-process ioctl floor) and sends it one JSON
// command per line on stdin; it answers each with one JSON line on stdout. All timings are
// taken here, in the process that ends up holding the fds.
//
// Also: `node worker.mjs --hold-and-exit SOCKET NETWORK` opens one TAP, prints the wall-clock
// time (epoch ms) and exits with the fd still open, so the kernel closes it at process exit.
import { closeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';

const DIST = new URL('../../dist/', import.meta.url);
const client = await import(new URL('client/client.js', DIST).href);
const sys = await import(new URL('sys/index.js', DIST).href);

const epochMs = () => performance.timeOrigin + performance.now();

if (process.argv[2] === '--hold-and-exit') {
  const [socket, network] = process.argv.slice(3);
  client.openTapSync(socket, { network, vnet_hdr: true });
  process.stdout.write(`${JSON.stringify({ exit_epoch_ms: epochMs() })}\n`);
  process.exit(0); // the TAP fd is still open: process exit closes it
}

/** Fds we hold between commands (open_hold ... close_all). */
const held = [];

function closeFds(fds) {
  for (const fd of fds) closeSync(fd);
}

async function openOnce(c) {
  const t0 = performance.now();
  const r = c.sync
    ? client.openTapSync(c.socket, { network: c.network, vnet_hdr: true })
    : await client.openTap(c.socket, { network: c.network, vnet_hdr: true });
  return { ms: performance.now() - t0, fds: r.fds, lease: r.lease.id, ifname: r.lease.ifname };
}

/** The daemon's makeTap, in-process (src/daemon/networks.ts): TUNSETIFF, MTU, MAC, BRADDIF, up, index, MTU. */
function floorOnce(bridgeName) {
  const bridge = sys.IfName.parse(bridgeName);
  const mac = sys.Mac.fromBytes(Buffer.from([0xfe, 0x54, 0x00, ...crypto.getRandomValues(new Uint8Array(3))]));
  const t0 = performance.now();
  const tap = sys.createTap({ vnetHdr: true, queues: 1 });
  sys.addPort(bridge, tap.name, { hostMac: mac });
  sys.setUp(tap.name);
  sys.getIndex(tap.name);
  sys.getMtu(tap.name);
  const t1 = performance.now();
  const ifname = tap.name.value;
  sys.closeTapSync(tap);
  return { ms: t1 - t0, close_ms: performance.now() - t1, ifname };
}

const COMMANDS = {
  /** One open, then close its fds (timed: the last close deletes the device in the kernel). */
  async open_close(c) {
    const r = await openOnce(c);
    const t1 = performance.now();
    closeFds(r.fds);
    const t2 = performance.now();
    return { ms: r.ms, close_ms: t2 - t1, close_start_epoch_ms: performance.timeOrigin + t1, lease: r.lease, ifname: r.ifname };
  },
  /** k opens started at once (async client), held. */
  async burst(c) {
    const t0 = performance.now();
    const results = await Promise.all(Array.from({ length: c.k }, () => openOnce(c).catch((e) => ({ error: String(e.message) }))));
    const wall = performance.now() - t0;
    const errors = results.filter((r) => r.error).map((r) => r.error);
    for (const r of results) if (r.fds) held.push(...r.fds);
    const ok = results.filter((r) => r.fds);
    return { wall_ms: wall, lat: ok.map((r) => r.ms), leases: ok.map((r) => r.lease), errors };
  },
  /** n opens one after another, held (sync client unless async is asked). */
  async fill(c) {
    const lat = [];
    const leases = [];
    const t0 = performance.now();
    for (let i = 0; i < c.n; i++) {
      const r = await openOnce(c);
      held.push(...r.fds);
      lat.push(r.ms);
      leases.push(r.lease);
    }
    return { wall_ms: performance.now() - t0, lat, leases };
  },
  /** Closes every held fd (sync); reports when it started (epoch) and how long the closes took. */
  async close_all() {
    const fds = held.splice(0);
    const startEpoch = epochMs();
    const t0 = performance.now();
    closeFds(fds);
    return { count: fds.length, start_epoch_ms: startEpoch, ms: performance.now() - t0 };
  },
  /** n status requests back to back (no kernel work in the daemon: a probe of its event loop). */
  async status(c) {
    const lat = [];
    const end = c.for_ms ? performance.now() + c.for_ms : Infinity;
    for (let i = 0; (c.n === undefined || i < c.n) && performance.now() < end; i++) {
      const t0 = performance.now();
      client.requestSync(c.socket, { op: 'status' });
      lat.push(performance.now() - t0);
      if (c.gap_ms) await new Promise((r) => setTimeout(r, c.gap_ms));
    }
    return { lat };
  },
  /** Opens (sync client) one after another for for_ms, with gap_ms between, closing each. */
  async probe_opens(c) {
    const lat = [];
    const end = performance.now() + c.for_ms;
    while (performance.now() < end) {
      const r = await openOnce({ ...c, sync: true });
      lat.push(r.ms);
      closeFds(r.fds);
      if (c.gap_ms) await new Promise((res) => setTimeout(res, c.gap_ms));
    }
    return { lat };
  },
  /** Open + close as fast as possible for for_ms: a client whose TAPs keep being torn down. */
  async churn(c) {
    let n = 0;
    const end = performance.now() + c.for_ms;
    while (performance.now() < end) {
      const r = client.openTapSync(c.socket, { network: c.network, vnet_hdr: true });
      closeFds(r.fds);
      n++;
    }
    return { opens: n };
  },
  async list(c) {
    const r = client.requestSync(c.socket, { op: 'list' });
    return { leases: r.body.leases.length };
  },
  async floor(c) {
    return floorOnce(c.bridge);
  },
};

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const c = JSON.parse(line);
  if (c.op === 'exit') break;
  let out;
  try {
    out = { ok: true, ...(await COMMANDS[c.op](c)) };
  } catch (err) {
    out = { ok: false, error: `${err.code ?? ''} ${err.message}`.trim() };
  }
  process.stdout.write(`${JSON.stringify({ id: c.id, ...out })}\n`);
}
closeFds(held.splice(0));
process.exit(0);
