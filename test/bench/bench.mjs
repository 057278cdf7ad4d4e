#!/usr/bin/env node
// tapd's benchmark (npm run bench → scripts/bench.sh → this). Needs root; everything that
// touches network devices happens inside one network namespace made here and deleted at the end.
//
// It measures, against a real tapd running in that namespace:
//   1. open latency (request sent → bridged, up TAP fd in the client's hand) of tapd and its peers
//      (qemu-bridge-helper driven the way QEMU drives it, iproute2, the in-process ioctl floor);
//   2. whole-command latency (tapctl run with Node's start-up included; the C tapd-bridge-helper);
//   3. cold start through systemd-socket-activate;
//   4. 1, 8 and 64 clients opening at once;
//   5. 1000 live leases on one bridge: memory, latency, teardown, and that nothing is left;
//   6. lease end: holder gone → down hook has run;
// and prints one table (every figure absolute and as ratios to its peers), writes
// bench/results.json, and lists what was slow under "notes".
//
// Environment (all optional; scripts/bench.sh sets the first three so its trap can clean up
// whatever a killed run left): TAPD_BENCH_DIR (a root-owned 0755 temp dir), TAPD_BENCH_SHM (a
// temp dir on tmpfs for the state dir, like /run/tapd), TAPD_BENCH_NS (namespace name),
// TAPD_BENCH_N (open iterations per method, default 300), TAPD_BENCH_QUICK=1 (a fast smoke run).
import { spawn, spawnSync } from 'node:child_process';
import {
  appendFileSync, chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync,
  rmdirSync, statSync, writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DIST = path.join(ROOT, 'dist');
const TAPD = path.join(DIST, 'cli/tapd.js');
// The daemon's node flags, as installed: they live on tapd.js's first line.
const TAPD_FLAGS = (() => {
  const m = /^#!\/usr\/bin\/env -S node (.*)$/.exec(readFileSync(TAPD, 'utf8').split('\n', 1)[0]);
  if (!m) throw new Error(`${TAPD}: first line is not '#!/usr/bin/env -S node FLAGS'`);
  return m[1].split(' ');
})();
const TAPCTL = path.join(DIST, 'cli/tapctl.js');
const BRIDGE_HELPER = path.join(ROOT, 'native/build/tapd-bridge-helper');
const WORKER = path.join(ROOT, 'test/bench/worker.mjs');
const QEMU_HELPER = '/usr/lib/qemu/qemu-bridge-helper';
const BRIDGE_CONF = '/etc/qemu/bridge.conf';
const NODE = process.execPath;
const NOBODY = 65534;

const QUICK = process.env.TAPD_BENCH_QUICK === '1';
const N_OPEN = Number(process.env.TAPD_BENCH_N ?? (QUICK ? 40 : 300));
const N_CMD = QUICK ? 5 : 30;
const N_COLD = QUICK ? 2 : 5;
const N_SCALE = QUICK ? 100 : 1000;
const N_END = QUICK ? 3 : 10;
const BLOCKS = QUICK ? 1 : 3; // open-latency runs are split into blocks, methods interleaved

const client = await import(path.join(DIST, 'client/client.js'));

if (process.getuid() !== 0) {
  console.error('the bench needs root (network namespaces, TAP devices); run: sudo npm run bench');
  process.exit(1);
}

// ---------------------------------------------------------------- resources and cleanup

const res = {
  ns: process.env.TAPD_BENCH_NS || `tapd-bench-${randomBytes(3).toString('hex')}`,
  dir: process.env.TAPD_BENCH_DIR || '',
  shm: process.env.TAPD_BENCH_SHM || '',
  ownDirs: [],
  nsMade: false,
  children: new Set(),
  bridgeConf: null, // { existed, content, dirExisted } while we changed /etc/qemu/bridge.conf
};

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000, maxBuffer: 64 << 20, ...opts });
  if (r.status !== 0 && !opts.allowFail) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.error?.message}): ${(r.stderr || r.stdout || '').slice(0, 2000)}`);
  }
  return r;
}

function restoreBridgeConf() {
  const saved = res.bridgeConf;
  if (!saved) return;
  if (saved.existed) writeFileSync(BRIDGE_CONF, saved.content, { mode: saved.mode });
  else {
    rmSync(BRIDGE_CONF, { force: true });
    if (!saved.dirExisted) rmdirSync(path.dirname(BRIDGE_CONF), { recursive: false });
  }
  res.bridgeConf = null;
}

function allowBridgeForQemuHelper(bridge) {
  const existed = existsSync(BRIDGE_CONF);
  res.bridgeConf = {
    existed,
    content: existed ? readFileSync(BRIDGE_CONF) : null,
    mode: existed ? statSync(BRIDGE_CONF).mode & 0o7777 : 0o644,
    dirExisted: existsSync(path.dirname(BRIDGE_CONF)),
  };
  mkdirSync(path.dirname(BRIDGE_CONF), { recursive: true, mode: 0o755 });
  writeFileSync(BRIDGE_CONF, `allow ${bridge}\n`, { mode: 0o644 });
}

let cleaning = false;
async function cleanup() {
  if (cleaning) return;
  cleaning = true;
  try {
    restoreBridgeConf();
  } catch (err) {
    console.error(`cleanup: could not restore ${BRIDGE_CONF}: ${err.message}`);
  }
  // Our children only, by pid: SIGTERM, then SIGKILL after 3 s.
  const alive = [...res.children].filter((c) => c.exitCode === null && c.signalCode === null);
  for (const c of alive) c.kill('SIGTERM');
  await Promise.all(alive.map((c) => new Promise((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) return resolve();
    const t = setTimeout(() => {
      c.kill('SIGKILL');
    }, 3000);
    c.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
  })));
  if (res.nsMade) sh('ip', ['netns', 'del', res.ns], { allowFail: true });
  for (const d of res.ownDirs) rmSync(d, { recursive: true, force: true });
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    console.error(`\n${sig}: cleaning up`);
    void cleanup().then(() => process.exit(130));
  });
}

function ownTempDir(prefix, base = os.tmpdir()) {
  const d = mkdtempSync(path.join(base, prefix));
  chmodSync(d, 0o755);
  res.ownDirs.push(d);
  return d;
}

/** Runs argv inside the namespace (as uid 65534 with user: true). Tracked for cleanup. */
function spawnIn(argv, { user = false, env = {} } = {}) {
  const pre = user ? ['setpriv', '--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups', '--'] : [];
  const child = spawn('ip', ['netns', 'exec', res.ns, ...pre, ...argv], {
    stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env }, cwd: '/',
  });
  res.children.add(child);
  // `ip netns exec` and setpriv exec: the pid is the final program's. The shell trap in
  // scripts/bench.sh kills what is listed here if this process itself is killed.
  if (res.dir) appendFileSync(path.join(res.dir, 'pids'), `${child.pid}\n`);
  child.stdin.on('error', () => {}); // a paced child may exit before reading our last newline
  child.stderrText = '';
  child.stderr.on('data', (d) => {
    if (child.stderrText.length < 20_000) child.stderrText += d.toString();
  });
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    res.children.delete(child);
    resolve({ code, signal });
  }));
  return child;
}

function nsRun(argv) {
  return sh('ip', ['netns', 'exec', res.ns, ...argv]).stdout;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const epochNow = () => performance.timeOrigin + performance.now();

/**
 * A TAP's deletion runs on in the kernel for ~15 ms after tapd has seen RTM_DELLINK and logged
 * lease_end (often on tapd's libuv pool, when tapd's copy of the fd was the last). Before a
 * measured open we wait until SETTLE_MS after the previous close began, so no open overlaps it.
 */
const SETTLE_MS = 30;
async function settle(sinceEpochMs) {
  const left = sinceEpochMs + SETTLE_MS - epochNow();
  if (left > 0) await sleep(left);
}

async function until(cond, timeoutMs, what) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (cond()) return;
    await sleep(5);
  }
  if (!cond()) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

// ---------------------------------------------------------------- statistics and formatting

function quantile(xs, q) {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  // Nearest rank: the smallest value with at least q of the samples at or below it.
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

function summary(xs) {
  return {
    p50: round(quantile(xs, 0.5)), p99: round(quantile(xs, 0.99)),
    min: round(Math.min(...xs)), max: round(Math.max(...xs)), n: xs.length,
  };
}

function round(x, d = 3) {
  if (!Number.isFinite(x)) return null;
  const f = 10 ** d;
  return Math.round(x * f) / f;
}

const fmt = (x, d = 2) => (x === null || x === undefined || !Number.isFinite(x) ? '—' : x >= 1000 ? x.toFixed(0) : x >= 100 ? x.toFixed(1) : x.toFixed(d));
const ratio = (a, b) => (a && b ? round(a / b, 2) : null);
const fmtRatio = (r) => (r === null ? '—' : `${r >= 10 ? r.toFixed(0) : r.toFixed(2)}×`);

const out = [];
const line = (s = '') => out.push(s);
function table(headers, rows) {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i] ?? '').length)));
  const fmtRow = (r) => r.map((c, i) => (i === 0 ? String(c ?? '').padEnd(widths[i]) : String(c ?? '').padStart(widths[i]))).join('  ');
  line(fmtRow(headers));
  line(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) line(fmtRow(r));
}

const notes = [];
const note = (s) => notes.push(s);
const progress = (s) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${s}\n`);

// ---------------------------------------------------------------- the daemon and the workers

class Daemon {
  constructor(label) {
    this.label = label;
    this.events = [];
    this.active = 0;
    this.granted = 0;
    this.ended = new Map(); // lease id → epoch ms at which we read its lease_end
    this.waiters = [];
  }

  /** Starts tapd in the namespace (argv: the whole command) and waits for "started" unless activated. */
  async start(argv, { waitStarted = true } = {}) {
    this.proc = spawnIn(argv);
    this.proc.stdin.end();
    const rl = createInterface({ input: this.proc.stdout });
    rl.on('line', (l) => this.onLine(l));
    if (waitStarted) await this.waitFor((e) => e.event === 'started', 20_000, 'tapd to start');
    return this;
  }

  onLine(l) {
    if (!l.startsWith('{')) return;
    let e;
    try {
      e = JSON.parse(l);
    } catch {
      return;
    }
    e.seen_epoch_ms = epochNow();
    this.events.push(e);
    if (e.event === 'lease_start' && e.result === 'granted') {
      this.active++;
      this.granted++;
    }
    if (e.event === 'lease_end') {
      this.active--;
      this.ended.set(e.lease, e.seen_epoch_ms);
    }
    for (const w of this.waiters.slice()) if (w.pred(e)) w.done(e);
  }

  waitFor(pred, timeoutMs, what) {
    const found = this.events.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        done: (e) => {
          clearTimeout(w.timer);
          this.waiters.splice(this.waiters.indexOf(w), 1);
          resolve(e);
        },
      };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`${this.label}: timed out after ${timeoutMs} ms waiting for ${what}\n${this.proc.stderrText}`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  leaseEnded(id, timeoutMs = 15_000) {
    return this.waitFor((e) => e.event === 'lease_end' && e.lease === id, timeoutMs, `lease_end of ${id}`);
  }

  /** No lease of ours is live in the daemon: every granted lease has its lease_end. */
  idle(timeoutMs = 60_000) {
    return until(() => this.active <= 0, timeoutMs, `${this.label} to have no leases (${this.active} left)`);
  }

  get pid() {
    return this.proc.pid;
  }

  rssKb() {
    return procStatus(this.pid, 'VmRSS');
  }

  async stop() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGTERM');
    const r = await Promise.race([this.proc.exited, sleep(5000).then(() => null)]);
    if (!r) {
      this.proc.kill('SIGKILL');
      await this.proc.exited;
    }
  }
}

/** A number field of /proc/PID/status (VmRSS in kB, Threads, ...). */
function procStatus(pid, field) {
  const m = new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : null;
}

class Worker {
  constructor(label, { user }) {
    this.label = label;
    this.proc = spawnIn([NODE, WORKER, '--run', res.dir], { user }); // --run: so scripts/bench.sh can tell it is ours
    this.nextId = 1;
    this.pending = new Map();
    createInterface({ input: this.proc.stdout }).on('line', (l) => {
      const m = JSON.parse(l);
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m);
      else p.reject(new Error(`${this.label} ${p.op}: ${m.error}`));
    });
    this.proc.exited.then(({ code, signal }) => {
      for (const p of this.pending.values()) p.reject(new Error(`${this.label} exited (${code ?? signal}): ${this.proc.stderrText}`));
    });
  }

  call(op, args = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, op });
      this.proc.stdin.write(`${JSON.stringify({ id, op, ...args })}\n`);
    });
  }

  async stop() {
    this.proc.stdin.end(`${JSON.stringify({ op: 'exit' })}\n`);
    await this.proc.exited;
  }
}

/**
 * Runs qdrive (test/bench/qdrive.c) in the namespace; returns its per-iteration lines.
 * With pace(), qdrive waits before each next iteration until pace resolves.
 */
async function qdrive(args, { user = false, pace } = {}) {
  const p = spawnIn([res.qdrive, ...args], { user });
  const rows = [];
  const rl = createInterface({ input: p.stdout });
  let chain = Promise.resolve();
  rl.on('line', (l) => {
    if (!l.startsWith('{')) return;
    const row = JSON.parse(l);
    rows.push(row);
    if (pace) {
      chain = chain.then(() => pace(row)).then(() => {
        if (!p.stdin.destroyed) p.stdin.write('\n');
      }).catch((err) => {
        p.paceError = err;
        p.kill('SIGTERM');
      });
    }
  });
  if (!pace) p.stdin.end();
  const { code, signal } = await p.exited;
  await chain;
  if (p.paceError) throw p.paceError;
  if (code !== 0) throw new Error(`qdrive ${args.join(' ')} failed (${code ?? signal}): ${p.stderrText.trim()}`);
  return rows;
}

// ---------------------------------------------------------------- setup

function machine() {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? 'unknown';
  return {
    cpu: model, cores: os.cpus().length, kernel: os.release(), node: process.version,
    qemu: sh('qemu-system-x86_64', ['--version'], { allowFail: true }).stdout?.split('\n')[0] ?? '',
    date: new Date().toISOString(),
  };
}

function builtCli(file) {
  if (!existsSync(file)) return `not built (${path.relative(ROOT, file)} missing)`;
  const r = sh(NODE, [file, '--help'], { allowFail: true });
  if (r.status !== 0) return `not built (${path.relative(ROOT, file)} --help exited ${r.status}: ${(r.stderr || '').split('\n')[0]})`;
  return null;
}

/** The C bridge helper (npm run build → native/build.sh): a reason to skip its row, or null. */
function builtHelper(file) {
  if (!existsSync(file)) return `not built (${path.relative(ROOT, file)} missing)`;
  const r = sh(file, ['--help'], { allowFail: true });
  if (r.status !== 0) return `not built (${path.relative(ROOT, file)} --help exited ${r.status}: ${(r.stderr || '').split('\n')[0]})`;
  return null;
}

async function setup() {
  if (!res.dir) res.dir = ownTempDir('tapd-bench-');
  if (!res.shm) res.shm = ownTempDir('tapd-bench-', '/dev/shm');
  // Compile the C driver.
  res.qdrive = path.join(res.dir, 'qdrive');
  sh('gcc', ['-O2', '-Wall', '-o', res.qdrive, path.join(ROOT, 'test/bench/qdrive.c')]);
  // Hooks: root-owned, 0755, in a root-owned 0755 dir.
  const hooks = path.join(res.dir, 'hooks');
  mkdirSync(hooks, { mode: 0o755 });
  chmodSync(hooks, 0o755);
  res.downLog = path.join(res.dir, 'down.log');
  writeFileSync(res.downLog, '', { mode: 0o644 });
  writeFileSync(path.join(hooks, 'up'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  writeFileSync(path.join(hooks, 'down'), `#!/bin/sh\necho "$1 $(date +%s.%N)" >> ${res.downLog}\n`, { mode: 0o755 });
  res.config = path.join(res.dir, 'tapd.conf');
  writeFileSync(res.config, [
    'network lan bridge br0',
    `network hooked bridge br1 up ${hooks}/up down ${hooks}/down`,
    'permit @nogroup on lan leases 1024 total 1024',
    'permit @nogroup on hooked leases 1024 total 1024',
    'permit root on any',
    'limits max-leases 1024 max-connections 256',
    '',
  ].join('\n'), { mode: 0o644 });
  // The namespace: two bridges with fixed MACs (so TAP host MACs never become theirs).
  sh('ip', ['netns', 'add', res.ns]);
  res.nsMade = true;
  nsRun(['ip', 'link', 'set', 'lo', 'up']);
  for (const [br, mac, addr] of [['br0', '02:00:00:00:00:01', '198.18.0.1/24'], ['br1', '02:00:00:00:01:01', '198.18.1.1/24']]) {
    nsRun(['ip', 'link', 'add', br, 'type', 'bridge']);
    nsRun(['ip', 'link', 'set', br, 'address', mac, 'up']);
    nsRun(['ip', 'addr', 'add', addr, 'dev', br]);
  }
  res.socket = path.join(res.dir, 'tapd.sock');
}

function tapdArgv(socket, stateDir) {
  return [NODE, ...TAPD_FLAGS, TAPD, '--config', res.config, '--socket', socket, '--state-dir', stateDir, '--log-level', 'info'];
}

function tunDevicesInNs() {
  return JSON.parse(nsRun(['ip', '-j', 'link', 'show', 'type', 'tun'])).map((l) => l.ifname);
}

// ---------------------------------------------------------------- the measurements

const R = {
  machine: null,
  methodology: {},
  methods: {},
  e2e_command_ms: {},
  cold_start: {},
  concurrency: {},
  scale: {},
  lease_end_ms: {},
  teardown_interference: {},
  notes,
};

const OPEN_PEERS = ['ioctl-floor', 'tapd', 'qemu-bridge-helper', 'iproute2'];
const PEER_ABBR = { 'ioctl-floor': 'floor', tapd: 'tapd', 'qemu-bridge-helper': 'qbh', iproute2: 'ip' };

async function phaseOpen(daemon, user, rootw) {
  progress(`1. open latency: ${N_OPEN} runs per method, in ${BLOCKS} interleaved blocks`);
  const per = Math.ceil(N_OPEN / BLOCKS);
  const samples = {};
  const add = (m, key, xs) => {
    samples[m] ??= {};
    (samples[m][key] ??= []).push(...xs);
  };
  // Warm the daemon and the client (JIT, ffi-rs, page cache) before anything counts.
  for (let i = 0; i < 30; i++) {
    const r = await user.call('open_close', { socket: res.socket, network: 'lan' });
    await daemon.leaseEnded(r.lease);
    await settle(r.close_start_epoch_ms);
  }
  for (let i = 0; i < 20; i++) await rootw.call('floor', { bridge: 'br0' });

  for (let b = 0; b < BLOCKS; b++) {
    // tapd, async client (openTap): one at a time, each lease ended before the next open.
    for (const [m, sync] of [['tapd', false], ['tapd-sync', true]]) {
      for (let i = 0; i < per; i++) {
        const r = await user.call('open_close', { socket: res.socket, network: 'lan', sync });
        await daemon.leaseEnded(r.lease);
        add(m, 'open', [r.ms]);
        add(m, 'close', [r.close_ms]);
        add(m, 'lease_end_seen', [daemon.ended.get(r.lease) - r.close_start_epoch_ms]);
        await settle(r.close_start_epoch_ms);
      }
    }
    // ioctl floor in-process (Node + ffi-rs, exactly the daemon's makeTap), and the same in C.
    for (let i = 0; i < per; i++) {
      const r = await rootw.call('floor', { bridge: 'br0' });
      add('ioctl-floor', 'open', [r.ms]);
      add('ioctl-floor', 'close', [r.close_ms]);
    }
    const c = await qdrive(['ioctl', String(per), 'br0']);
    add('ioctl-floor-c', 'open', c.map((r) => r.ms));
    add('ioctl-floor-c', 'close', c.map((r) => r.close_ms));
    // qemu-bridge-helper, run as QEMU runs it; bridge.conf says "allow br0" only meanwhile.
    allowBridgeForQemuHelper('br0');
    try {
      const q = await qdrive(['helper', String(per), 'br0', '--', QEMU_HELPER]);
      add('qemu-bridge-helper', 'open', q.map((r) => r.ms));
      add('qemu-bridge-helper', 'close', q.map((r) => r.close_ms));
    } finally {
      restoreBridgeConf();
    }
    // iproute2: ip tuntap add; ip link set master up; attach an fd. Teardown: close + ip link del.
    const ipr = await qdrive(['iproute', String(per), 'br0', 'biptap0']);
    add('iproute2', 'open', ipr.map((r) => r.ms));
    add('iproute2', 'teardown', ipr.map((r) => r.close_ms));
    progress(`   block ${b + 1}/${BLOCKS} done`);
  }

  // State dir on this machine's disk (ext4) instead of tmpfs: the journal append lands on disk.
  progress('   tapd with its state dir on disk (ext4) instead of tmpfs');
  const diskState = path.join(res.dir, 'disk-state'); // /tmp: ext4 here
  const diskSock = path.join(res.dir, 'disk.sock');
  const disk = await new Daemon('tapd (state on disk)').start(tapdArgv(diskSock, diskState));
  try {
    const n = Math.min(N_OPEN, 100);
    for (let i = 0; i < n + 10; i++) {
      const r = await user.call('open_close', { socket: diskSock, network: 'lan' });
      await disk.leaseEnded(r.lease);
      await settle(r.close_start_epoch_ms);
      if (i >= 10) add('tapd-state-on-disk', 'open', [r.ms]);
    }
  } finally {
    await disk.stop();
  }

  for (const [m, s] of Object.entries(samples)) {
    R.methods[m] = { open_ms: summary(s.open) };
    // tapd: the client's close() (often not the last reference: tapd's copy may still be open);
    // the others: the close() of the last fd, which deletes the device.
    if (s.close) R.methods[m][m.startsWith('tapd') ? 'client_close_ms' : 'last_close_ms'] = summary(s.close);
    if (s.teardown) R.methods[m].teardown_ms = summary(s.teardown);
    if (s.lease_end_seen) R.methods[m].client_close_call_to_lease_end_logged_ms = summary(s.lease_end_seen);
    // Who deleted the device: a client close() over 3 ms was the last reference (kernel teardown);
    // otherwise tapd's own copy was still open and its fs.close on the libuv pool did it.
    if (m.startsWith('tapd') && s.close) R.methods[m].client_close_was_last_fraction = round(s.close.filter((x) => x > 3).length / s.close.length, 3);
  }
  R.methodology.open = `${N_OPEN} opens per method, one at a time, interleaved in ${BLOCKS} blocks; each TAP is closed, (tapd) its lease_end logged, and ${SETTLE_MS} ms since its close() began have passed before the next open, so no open overlaps a teardown (devices do not accumulate); warm daemon (30 opens before); vnet_hdr on; p99 by nearest rank`;
}

function openRatios() {
  const ratios = {};
  for (const m of Object.keys(R.methods)) {
    ratios[m] = {};
    for (const q of ['p50', 'p99']) {
      ratios[m][q] = {};
      for (const peer of OPEN_PEERS) ratios[m][q][peer] = ratio(R.methods[m].open_ms[q], R.methods[peer]?.open_ms[q]);
    }
  }
  R.open_ratios = ratios;
}

async function phaseCommands(daemon) {
  progress(`2. whole commands: ${N_CMD} runs each`);
  // Pace: the next run starts only when this one's lease was granted and has ended.
  const paced = () => {
    const base = daemon.granted;
    let runs = 0;
    return async () => {
      runs++;
      await until(() => daemon.granted >= base + runs && daemon.active <= 0, 15_000, 'the last run\'s lease to end');
      await sleep(SETTLE_MS);
    };
  };
  const untilIdle = () => daemon.idle(15_000);
  // Node's own start-up, for scale.
  const nodeStart = await qdrive(['run', String(N_CMD), '--', NODE, '-e', '0'], { user: true });
  R.e2e_command_ms.node_startup = { ...summary(nodeStart.map((r) => r.ms)), what: 'node -e 0 (fork+exec+exit), uid 65534' };
  const imp = `await import(${JSON.stringify(path.join(DIST, 'client/client.js'))})`;
  const nodeImport = await qdrive(['run', String(N_CMD), '--', NODE, '--input-type=module', '-e', imp], { user: true });
  R.e2e_command_ms.node_import_client = { ...summary(nodeImport.map((r) => r.ms)), what: 'node importing dist/client/client.js (pulls in dist/sys and ffi-rs), then exit' };

  const tapctlProblem = builtCli(TAPCTL);
  if (tapctlProblem) {
    R.e2e_command_ms.tapctl_run = { skipped: tapctlProblem };
    note(`tapctl: ${tapctlProblem}; row skipped`);
  } else {
    try {
      const rows = await qdrive(['run', String(N_CMD), '-p', '--', NODE, TAPCTL, '--socket', res.socket, 'run', '-b', 'lan', '--', '/bin/true'],
        { user: true, pace: paced() });
      R.e2e_command_ms.tapctl_run = { ...summary(rows.map((r) => r.ms)), what: 'tapctl run -b lan -- /bin/true, whole process (fork → exit), uid 65534' };
    } catch (err) {
      R.e2e_command_ms.tapctl_run = { skipped: `failed: ${err.message.split('\n')[0]}` };
      note(`tapctl run failed, row skipped: ${err.message.split('\n')[0]}`);
    }
  }
  const helperProblem = builtHelper(BRIDGE_HELPER);
  if (helperProblem) {
    R.e2e_command_ms['tapd-bridge-helper'] = { skipped: helperProblem };
    note(`tapd-bridge-helper: ${helperProblem}; row skipped`);
  } else {
    try {
      const rows = await qdrive(['helper', String(N_CMD), 'lan', '-p', '--', BRIDGE_HELPER, `--socket=${res.socket}`],
        { user: true, pace: paced() });
      R.e2e_command_ms['tapd-bridge-helper'] = { ...summary(rows.map((r) => r.ms)), what: 'run as QEMU runs a helper (socketpair, fork, exec, recvmsg, waitpid), uid 65534' };
    } catch (err) {
      R.e2e_command_ms['tapd-bridge-helper'] = { skipped: `failed: ${err.message.split('\n')[0]}` };
      note(`tapd-bridge-helper failed, row skipped: ${err.message.split('\n')[0]}`);
    }
  }
  R.e2e_command_ms['qemu-bridge-helper'] = { ...R.methods['qemu-bridge-helper'].open_ms, what: 'the same driver as tapd-bridge-helper (section 1 runs), as root: it is not setuid here' };
  await untilIdle();
}

async function phaseCold(user) {
  progress(`3. cold start through systemd-socket-activate: ${N_COLD} runs`);
  const rows = [];
  for (let i = 0; i < N_COLD; i++) {
    const sock = path.join(res.dir, `cold${i}.sock`);
    const state = path.join(res.shm, `cold${i}`);
    const d = new Daemon(`socket-activated tapd #${i}`);
    await d.start(['systemd-socket-activate', '-l', sock, ...tapdArgv(sock, state)], { waitStarted: false });
    try {
      await until(() => existsSync(sock), 10_000, 'systemd-socket-activate to listen');
      chmodSync(sock, 0o666); // it binds with the umask; the unit's SocketMode=0666 does this in real life
      await sleep(200); // let the system settle: nothing of tapd runs yet
      const t0 = epochNow();
      const r = await user.call('open_close', { socket: sock, network: 'lan' });
      const started = await d.waitFor((e) => e.event === 'started', 10_000, 'started');
      await d.leaseEnded(r.lease);
      const warm = await user.call('open_close', { socket: sock, network: 'lan' });
      await d.leaseEnded(warm.lease);
      rows.push({ first_open_ms: r.ms, started_logged_after_ms: started.seen_epoch_ms - t0, second_open_ms: warm.ms });
    } finally {
      await d.stop();
    }
  }
  R.cold_start = {
    first_open_ms: summary(rows.map((r) => r.first_open_ms)),
    tapd_ready_logged_after_ms: summary(rows.map((r) => r.started_logged_after_ms)),
    second_open_ms: summary(rows.map((r) => r.second_open_ms)),
    runs: rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, round(v, 2)]))),
    what: 'systemd-socket-activate -l SOCK node dist/cli/tapd.js ...; no daemon before the connect; first open = connect → fd in hand (includes Node start-up, module load, policy load, link watch)',
  };
}

async function phaseConcurrency(daemon, user) {
  progress('4. concurrency: 1, 8, 64 clients at once');
  const plan = QUICK ? [[1, 10], [8, 4], [64, 2]] : [[1, 100], [8, 30], [64, 6]];
  for (const [k, rounds] of plan) {
    const lat = [];
    let wall = 0;
    const errors = [];
    for (let r = 0; r < rounds; r++) {
      const b = await user.call('burst', { socket: res.socket, network: 'lan', k });
      lat.push(...b.lat);
      wall += b.wall_ms;
      errors.push(...b.errors);
      const c = await user.call('close_all');
      await daemon.idle(30_000);
      await settle(c.start_epoch_ms + c.ms);
    }
    R.concurrency[String(k)] = {
      clients: k, rounds, opens: lat.length, opens_per_s: round((lat.length / wall) * 1000, 1),
      open_ms: summary(lat), errors: errors.length, first_error: errors[0],
    };
  }
  R.methodology.concurrency = 'one client process (uid 65534), k openTap calls started together (each its own connection); a round ends when all have their fds; fds closed and all leases ended between rounds; opens/s = opens / summed round wall time';
}

/** Status requests from here (root, async client) every gapMs until stop() — a probe of tapd's event loop. */
function statusProber(socket, gapMs = 10) {
  const lat = [];
  let on = true;
  const done = (async () => {
    while (on) {
      const t0 = performance.now();
      try {
        await client.request(socket, { op: 'status' });
        lat.push(performance.now() - t0);
      } catch {
        // a refused probe is simply not counted
      }
      await sleep(gapMs);
    }
  })();
  return { stop: async () => { on = false; await done; return lat; } };
}

async function phaseInterference(daemon, user) {
  progress('4b. does an open wait on another client\'s teardown?');
  const H = QUICK ? 60 : 200;
  const holder = new Worker('holder (uid 65534)', { user: true });
  const I = R.teardown_interference;
  try {
    // Quiet: nothing else happening.
    let prober = statusProber(res.socket);
    const quiet = await user.call('probe_opens', { socket: res.socket, network: 'lan', for_ms: QUICK ? 800 : 2000, gap_ms: 20 });
    const quietStatus = await prober.stop();
    await daemon.idle();
    // Another client holds H leases and closes them all (as when a process holding them exits).
    await holder.call('fill', { socket: res.socket, network: 'lan', n: H, sync: true });
    await until(() => daemon.active === H, 30_000, `${H} leases held`);
    const closing = holder.call('close_all');
    prober = statusProber(res.socket);
    const busy = await user.call('probe_opens', { socket: res.socket, network: 'lan', for_ms: H * 11, gap_ms: 20 });
    const busyStatus = await prober.stop();
    const closed = await closing;
    await daemon.idle();
    // The kernel alone, in C, no daemon: TAP creation while another process deletes H TAPs.
    const nFg = QUICK ? 40 : 150;
    const fgQuiet = await qdrive(['ioctl', String(nFg), 'br0']);
    let fg;
    const bg = qdrive(['teardown', String(H), 'br0'], {
      pace: async () => {
        fg ??= sleep(30).then(() => qdrive(['ioctl', String(nFg), 'br0']));
      },
    });
    const bgRows = await bg;
    const fgBusy = await fg;
    Object.assign(I, {
      other_client_leases_closed: H,
      other_client_close_all_ms: round(closed.ms, 1),
      tapd_open_ms_quiet: summary(quiet.lat),
      tapd_open_ms_while_other_client_tears_down: summary(busy.lat),
      status_ms_quiet: summary(quietStatus),
      status_ms_while_other_client_tears_down: summary(busyStatus),
      c_ioctl_floor_ms_quiet: summary(fgQuiet.map((r) => r.ms)),
      c_ioctl_floor_ms_while_other_process_tears_down: summary(fgBusy.map((r) => r.ms)),
      other_process_close_all_ms: round(bgRows[1]?.close_ms, 1),
      what: `another uid-65534 client holds ${H} leases and closes them all; meanwhile a probe client opens (sync openTap + close, 20 ms apart) and the bench sends status requests (no kernel work: an event-loop probe) every 10 ms. The C rows: qdrive ioctl while another process closes ${H} TAPs, no daemon.`,
    });
  } finally {
    await holder.stop();
  }
}

/**
 * The lease journal's cost (src/daemon/leases.ts record()): one appendFileSync of one JSON line
 * per lease change, on tapd's event loop. Replayed with a real line from the daemon's journal,
 * next to a journal as long as the daemon's at N (appending does not depend on the length).
 */
function journalReplica() {
  const lines = readFileSync(path.join(res.shm, 'main', 'leases.journal'), 'utf8').trim().split('\n');
  const line = `${lines[lines.length - 1]}\n`;
  const time = (dir, prefill) => {
    const file = path.join(dir, 'replica.journal');
    writeFileSync(file, prefill);
    const lat = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      appendFileSync(file, line, { mode: 0o600 });
      lat.push(performance.now() - t0);
    }
    rmSync(file, { force: true });
    return summary(lat);
  };
  const full = `${lines.join('\n')}\n`;
  return {
    leases: lines.length,
    tmpfs_ms_at_n: time(res.shm, full),
    tmpfs_ms_at_1: time(res.shm, line),
    ext4_ms_at_n: time(res.dir, full),
    ext4_ms_at_1: time(res.dir, line),
  };
}

async function phaseScale(daemon, user, rootw) {
  progress(`5. scale: ${N_SCALE} live leases on br0`);
  const S = R.scale;
  S.leases = N_SCALE;
  S.daemon_rss_kb_at_start = R.daemon_rss_kb_at_start;
  S.daemon_rss_kb_before = daemon.rssKb();
  S.daemon_threads = procStatus(daemon.pid, 'Threads');
  S.client_process_rss_kb = procStatus(user.proc.pid, 'VmRSS'); // node + dist/client + ffi-rs, for scale
  const probe = await user.call('status', { socket: res.socket, n: 20 });
  S.status_ms_at_0 = summary(probe.lat);
  const fill = await user.call('fill', { socket: res.socket, network: 'lan', n: N_SCALE, sync: true });
  await until(() => daemon.active === N_SCALE, 30_000, `${N_SCALE} leases in the daemon`);
  S.fill_wall_ms = round(fill.wall_ms, 1);
  S.open_ms_first_50 = summary(fill.lat.slice(0, 50));
  S.open_ms_last_50 = summary(fill.lat.slice(-50));
  S.daemon_rss_kb_at_n = daemon.rssKb();
  S.state_file_bytes_at_n = statSync(path.join(res.shm, 'main', 'leases.journal')).size;
  S.tun_devices_at_n = tunDevicesInNs().length;
  // Open latency with N live: one more lease at a time, each ended before the next.
  const atN = [];
  for (let i = 0; i < (QUICK ? 5 : 30); i++) {
    const r = await user.call('open_close', { socket: res.socket, network: 'lan', sync: true });
    await daemon.leaseEnded(r.lease);
    await settle(r.close_start_epoch_ms);
    atN.push(r.ms);
  }
  // The kernel's share: the same ioctls with no daemon, on a bridge with N ports.
  const floorAtN = [];
  for (let i = 0; i < (QUICK ? 5 : 30); i++) floorAtN.push((await rootw.call('floor', { bridge: 'br0' })).ms);
  S.ioctl_floor_ms_at_n = summary(floorAtN);
  S.lease_journal_append_ms = journalReplica();
  S.open_ms_at_n = summary(atN);
  S.status_ms_at_n = summary((await user.call('status', { socket: res.socket, n: 20 })).lat);

  // Teardown: the holder closes all N fds. Meanwhile the bench probes tapd's event loop with
  // status requests (every 10 ms) and another client opens (sync openTap + close, 50 ms apart).
  // The same two probes run first for a while with the N leases live and nothing else going on.
  const prober2 = new Worker('probe (uid 65534)', { user: true });
  await prober2.call('list', { socket: res.socket }); // loaded and warm
  let statusProbe = statusProber(res.socket);
  const quietOpens = await prober2.call('probe_opens', { socket: res.socket, network: 'lan', for_ms: QUICK ? 500 : 2000, gap_ms: 50 });
  const quietStatus = await statusProbe.stop();
  await until(() => daemon.active === N_SCALE, 10_000, 'the probe\'s leases to end');
  await sleep(SETTLE_MS);
  statusProbe = statusProber(res.socket);
  const closing = user.call('close_all');
  const probed = prober2.call('probe_opens', { socket: res.socket, network: 'lan', for_ms: N_SCALE * 12, gap_ms: 50 });
  const closed = await closing;
  const held = fill.leases;
  await until(() => held.every((id) => daemon.ended.has(id)), 180_000, `lease_end of all ${N_SCALE} leases`);
  const busyStatus = await statusProbe.stop();
  S.other_client_open_ms_at_n_quiet = summary(quietOpens.lat);
  S.other_client_open_ms_during_teardown = summary((await probed).lat);
  S.status_ms_at_n_quiet = summary(quietStatus);
  S.status_ms_during_teardown = summary(busyStatus);
  await prober2.stop();
  const lastEnd = Math.max(...held.map((id) => daemon.ended.get(id)));
  S.teardown_ms = round(lastEnd - closed.start_epoch_ms, 1);
  S.holder_close_all_ms = round(closed.ms, 1);
  S.last_lease_end_after_last_close_ms = round(lastEnd - (closed.start_epoch_ms + closed.ms), 1);
  S.daemon_rss_kb_after_teardown = daemon.rssKb();
  // Nothing left: devices, leases, quota.
  const left = tunDevicesInNs();
  const list = client.requestSync(res.socket, { op: 'list' }); // root is an admin: sees every lease
  const fresh = await user.call('open_close', { socket: res.socket, network: 'lan' }).then((r) => daemon.leaseEnded(r.lease).then(() => true), () => false);
  S.after_teardown = { tun_devices_left: left.length, list_leases: list.body.leases.length, fresh_open_ok: fresh };
  if (left.length || list.body.leases.length || !fresh) note(`scale: NOT clean after teardown: ${JSON.stringify(S.after_teardown)}`);
}

async function phaseLeaseEnd(daemon, user) {
  progress(`6. lease end → down hook: ${N_END} runs by fd close, ${N_END} by process exit`);
  const downLines = () => readFileSync(res.downLog, 'utf8').trim().split('\n').filter(Boolean);
  const waitDown = async (count) => {
    await until(() => downLines().length >= count, 15_000, 'the down hook');
    return Number(downLines()[count - 1].split(' ')[1]) * 1000;
  };
  const byClose = [];
  const upOpen = [];
  const closeMs = [];
  for (let i = 0; i < N_END; i++) {
    const n0 = downLines().length;
    const b = await user.call('burst', { socket: res.socket, network: 'hooked', k: 1 });
    if (b.errors.length) throw new Error(`open on hooked: ${b.errors[0]}`);
    upOpen.push(b.lat[0]);
    await sleep(50);
    const c = await user.call('close_all');
    const hookAt = await waitDown(n0 + 1);
    byClose.push(hookAt - c.start_epoch_ms);
    closeMs.push(c.ms);
    await daemon.idle();
  }
  const byExit = [];
  for (let i = 0; i < N_END; i++) {
    const n0 = downLines().length;
    const p = spawnIn([NODE, WORKER, '--hold-and-exit', res.socket, 'hooked'], { user: true });
    p.stdin.end();
    let outText = '';
    p.stdout.on('data', (d) => (outText += d));
    const { code } = await p.exited;
    if (code !== 0) throw new Error(`holder exited ${code}: ${p.stderrText}`);
    const { exit_epoch_ms: exitAt } = JSON.parse(outText.trim().split('\n').pop());
    const hookAt = await waitDown(n0 + 1);
    byExit.push(hookAt - exitAt);
    await daemon.idle();
  }
  R.lease_end_ms = {
    fd_close_to_down_hook: summary(byClose),
    process_exit_to_down_hook: summary(byExit),
    holder_last_close_ms: summary(closeMs),
    tapd_open_ms_with_up_hook: summary(upOpen),
    what: 'network with up (exit 0) and down (appends `date +%s.%N`) hooks; from the holder calling close() on its last TAP fd (or calling process.exit with it open) to the timestamp the down hook wrote',
  };
}

// ---------------------------------------------------------------- report

function report() {
  const M = R.methods;
  const m = R.machine;
  line(`tapd bench — ${m.date}`);
  line(`machine: ${m.cpu}, ${m.cores} cores, Linux ${m.kernel}, Node ${m.node}${m.qemu ? `, ${m.qemu}` : ''}`);
  line('');
  line(`1. Open latency: request sent → bridged, up TAP fd in the client's hand (${N_OPEN} runs each, one at a time,`);
  line(`   each TAP closed, its lease ended and ${SETTLE_MS} ms since its close() passed before the next open; ratios = this row ÷ the peer)`);
  const order = ['ioctl-floor', 'ioctl-floor-c', 'tapd', 'tapd-sync', 'tapd-state-on-disk', 'qemu-bridge-helper', 'iproute2'];
  const rows = order.filter((k) => M[k]).map((k) => {
    const o = M[k].open_ms;
    const rs = (q) => OPEN_PEERS.filter((p) => p !== k).map((p) => `${fmtRatio(R.open_ratios[k][q][p])} ${PEER_ABBR[p]}`).join(', ');
    return [k, fmt(o.p50), rs('p50'), fmt(o.p99), rs('p99'), M[k].last_close_ms ? fmt(M[k].last_close_ms.p50) : M[k].client_close_ms ? `${fmt(M[k].client_close_ms.p50)}†` : M[k].teardown_ms ? `${fmt(M[k].teardown_ms.p50)}*` : '—'];
  });
  table(['method', 'p50 ms', 'p50 vs peers', 'p99 ms', 'p99 vs peers', 'close p50 ms'], rows);
  line('   ioctl-floor = the daemon\'s ioctls in-process via ffi-rs; ioctl-floor-c = the same in C; tapd = async openTap;');
  line('   tapd-sync = openTapSync (what tapctl and tapd-bridge-helper use); tapd-state-on-disk = tapd with --state-dir on ext4;');
  line('   close = the holder\'s close() of the last fd (the kernel deletes the device); * iproute2: close + `ip link del`;');
  line('   † tapd: the client\'s close(): the last reference only if tapd had closed its copy already (on its libuv pool).');
  line('');

  const E = R.e2e_command_ms;
  line(`2. Whole commands (fork → exit; ${N_CMD} runs; Node start-up included where they are Node)`);
  const peers2 = [['qbh', E['qemu-bridge-helper']?.p50], ['node -e 0', E.node_startup?.p50], ['tapd in-process', M.tapd.open_ms.p50]];
  const peers2p99 = [['qbh', E['qemu-bridge-helper']?.p99], ['node -e 0', E.node_startup?.p99], ['tapd in-process', M.tapd.open_ms.p99]];
  const row2 = (name, s) => (s.skipped ? [name, '—', s.skipped, '—', ''] : [
    name, fmt(s.p50), peers2.filter(([, v]) => v !== s.p50).map(([n, v]) => `${fmtRatio(ratio(s.p50, v))} ${n}`).join(', '),
    fmt(s.p99), peers2p99.filter(([, v]) => v !== s.p99).map(([n, v]) => `${fmtRatio(ratio(s.p99, v))} ${n}`).join(', '),
  ]);
  table(['command', 'p50 ms', 'p50 vs', 'p99 ms', 'p99 vs'], [
    row2('tapctl run -b lan -- /bin/true', E.tapctl_run),
    row2('tapd-bridge-helper', E['tapd-bridge-helper']),
    row2('qemu-bridge-helper', E['qemu-bridge-helper']),
    row2('node + import dist/client (ffi-rs)', E.node_import_client),
    row2('node -e 0', E.node_startup),
  ]);
  line('');

  const C = R.cold_start;
  line(`3. Cold start: first open through systemd-socket-activate, no daemon running before (${N_COLD} runs)`);
  table(['figure', 'p50 ms', 'max ms', 'vs'], [
    ['first open (connect → fd)', fmt(C.first_open_ms.p50), fmt(C.first_open_ms.max),
      `${fmtRatio(ratio(C.first_open_ms.p50, M.tapd.open_ms.p50))} warm tapd open, ${fmtRatio(ratio(C.first_open_ms.p50, E.node_startup.p50))} node -e 0`],
    ['tapd "started" logged after', fmt(C.tapd_ready_logged_after_ms.p50), fmt(C.tapd_ready_logged_after_ms.max),
      `${fmtRatio(ratio(C.tapd_ready_logged_after_ms.p50, C.first_open_ms.p50))} first open`],
    ['second open, same daemon', fmt(C.second_open_ms.p50), fmt(C.second_open_ms.max),
      `${fmtRatio(ratio(C.second_open_ms.p50, M.tapd.open_ms.p50))} warm tapd open`],
  ]);
  line('');

  line('4. Concurrency: k clients open at once (async client, one process; all leases ended between rounds)');
  const c1 = R.concurrency['1'];
  table(['clients', 'opens', 'opens/s', 'vs 1 client', 'p50 ms', 'p99 ms', 'p99 vs 1 client', 'p99 vs ioctl-floor p99', 'errors'],
    Object.values(R.concurrency).map((c) => [
      c.clients, c.opens, fmt(c.opens_per_s, 1), fmtRatio(ratio(c.opens_per_s, c1.opens_per_s)), fmt(c.open_ms.p50), fmt(c.open_ms.p99),
      fmtRatio(ratio(c.open_ms.p99, c1.open_ms.p99)), fmtRatio(ratio(c.open_ms.p99, M['ioctl-floor'].open_ms.p99)), c.errors,
    ]));
  const I = R.teardown_interference;
  if (I.tapd_open_ms_quiet) {
    line(`   While another client's ${I.other_client_leases_closed} TAPs are being torn down (it closes them all; ${fmt(I.other_client_close_all_ms)} ms):`);
    table(['figure', 'quiet p50', 'busy p50', 'busy/quiet', 'quiet p99', 'busy p99', 'busy/quiet'], [
      ['tapd open (sync client)', I.tapd_open_ms_quiet, I.tapd_open_ms_while_other_client_tears_down],
      ['tapd status (no kernel work)', I.status_ms_quiet, I.status_ms_while_other_client_tears_down],
      ['C ioctl floor, no daemon', I.c_ioctl_floor_ms_quiet, I.c_ioctl_floor_ms_while_other_process_tears_down],
    ].map(([n, q, b]) => [n, fmt(q.p50), fmt(b.p50), fmtRatio(ratio(b.p50, q.p50)), fmt(q.p99), fmt(b.p99), fmtRatio(ratio(b.p99, q.p99))]));
  }
  line('');

  const S = R.scale;
  line(`5. Scale: ${S.leases} live leases on one bridge`);
  table(['figure', 'value', 'vs'], [
    ['daemon RSS just after start', `${S.daemon_rss_kb_at_start} kB`, `${fmtRatio(ratio(S.daemon_rss_kb_at_start, S.client_process_rss_kb))} the bench's client process`],
    ['daemon RSS before (after sections 1-4)', `${S.daemon_rss_kb_before} kB`, `${fmtRatio(ratio(S.daemon_rss_kb_before, S.client_process_rss_kb))} the bench's client process (${S.client_process_rss_kb} kB); ${S.daemon_threads} threads`],
    [`daemon RSS at ${S.leases}`, `${S.daemon_rss_kb_at_n} kB`, `${fmtRatio(ratio(S.daemon_rss_kb_at_n, S.daemon_rss_kb_before))} before (${(S.daemon_rss_kb_at_n - S.daemon_rss_kb_before) >= 0 ? '+' : ''}${fmt((S.daemon_rss_kb_at_n - S.daemon_rss_kb_before) / S.leases, 2)} kB/lease; GC noise)`],
    ['daemon RSS after teardown', `${S.daemon_rss_kb_after_teardown} kB`, `${fmtRatio(ratio(S.daemon_rss_kb_after_teardown, S.daemon_rss_kb_before))} before`],
    [`filling 0 → ${S.leases} (sequential)`, `${fmt(S.fill_wall_ms)} ms`, `${fmt(S.fill_wall_ms / S.leases)} ms/open`],
    ['open p50, first 50 / last 50 of the fill', `${fmt(S.open_ms_first_50.p50)} / ${fmt(S.open_ms_last_50.p50)} ms`, `${fmtRatio(ratio(S.open_ms_last_50.p50, S.open_ms_first_50.p50))}`],
    [`open at ${S.leases} live, p50 / p99`, `${fmt(S.open_ms_at_n.p50)} / ${fmt(S.open_ms_at_n.p99)} ms`,
      `${fmtRatio(ratio(S.open_ms_at_n.p50, M['tapd-sync'].open_ms.p50))} / ${fmtRatio(ratio(S.open_ms_at_n.p99, M['tapd-sync'].open_ms.p99))} tapd-sync at 0`],
    [`ioctl floor (no daemon) at 0 / at ${S.leases} ports, p50`, `${fmt(M['ioctl-floor'].open_ms.p50)} / ${fmt(S.ioctl_floor_ms_at_n.p50)} ms`,
      `${fmtRatio(ratio(S.ioctl_floor_ms_at_n.p50, M['ioctl-floor'].open_ms.p50))}; tapd's extra at ${S.leases}: ${fmt(S.open_ms_at_n.p50 - S.ioctl_floor_ms_at_n.p50)} ms vs ${fmt(M['tapd-sync'].open_ms.p50 - M['ioctl-floor'].open_ms.p50)} ms at 0`],
    [`lease journal append at 1 / ${S.leases} leases, tmpfs`, `${fmt(S.lease_journal_append_ms.tmpfs_ms_at_1.p50)} / ${fmt(S.lease_journal_append_ms.tmpfs_ms_at_n.p50)} ms`,
      `${fmtRatio(ratio(S.lease_journal_append_ms.tmpfs_ms_at_n.p50, S.lease_journal_append_ms.tmpfs_ms_at_1.p50))}; once per lease change, on the event loop`],
    [`lease journal append at 1 / ${S.leases} leases, ext4`, `${fmt(S.lease_journal_append_ms.ext4_ms_at_1.p50)} / ${fmt(S.lease_journal_append_ms.ext4_ms_at_n.p50)} ms`,
      `${fmtRatio(ratio(S.lease_journal_append_ms.ext4_ms_at_n.p50, S.lease_journal_append_ms.tmpfs_ms_at_n.p50))} tmpfs at ${S.leases}`],
    [`status at 0 / at ${S.leases}, p50`, `${fmt(S.status_ms_at_0.p50)} / ${fmt(S.status_ms_at_n.p50)} ms`, fmtRatio(ratio(S.status_ms_at_n.p50, S.status_ms_at_0.p50))],
    [`lease journal at ${S.leases}`, `${S.state_file_bytes_at_n} bytes`, 'one line appended per change; compacted past 4 lines per live lease'],
    ['teardown: close all → last lease_end', `${fmt(S.teardown_ms)} ms`, `${fmt(S.teardown_ms / S.leases)} ms/lease, ${fmtRatio(ratio(S.teardown_ms / S.leases, M['ioctl-floor'].last_close_ms.p50))} one kernel close`],
    ['  of which the holder\'s close() calls', `${fmt(S.holder_close_all_ms)} ms`, `${fmtRatio(ratio(S.holder_close_all_ms, S.teardown_ms))} of teardown`],
    ['  last lease_end minus last close() return', `${fmt(S.last_lease_end_after_last_close_ms)} ms`, 'negative: logged before close() returned'],
    ['another client\'s open during teardown, p50 / p99', `${fmt(S.other_client_open_ms_during_teardown.p50)} / ${fmt(S.other_client_open_ms_during_teardown.p99)} ms`,
      `${fmtRatio(ratio(S.other_client_open_ms_during_teardown.p50, S.other_client_open_ms_at_n_quiet.p50))} / ${fmtRatio(ratio(S.other_client_open_ms_during_teardown.p99, S.other_client_open_ms_at_n_quiet.p99))} the same probe before (${fmt(S.other_client_open_ms_at_n_quiet.p50)} / ${fmt(S.other_client_open_ms_at_n_quiet.p99)} ms)`],
    ['status during teardown, p50 / p99', `${fmt(S.status_ms_during_teardown.p50)} / ${fmt(S.status_ms_during_teardown.p99)} ms`,
      `${fmtRatio(ratio(S.status_ms_during_teardown.p50, S.status_ms_at_n_quiet.p50))} / ${fmtRatio(ratio(S.status_ms_during_teardown.p99, S.status_ms_at_n_quiet.p99))} the same probe before (${fmt(S.status_ms_at_n_quiet.p50)} / ${fmt(S.status_ms_at_n_quiet.p99)} ms)`],
    ['after: tun devices / list / fresh open', `${S.after_teardown.tun_devices_left} / ${S.after_teardown.list_leases} / ${S.after_teardown.fresh_open_ok ? 'ok' : 'FAILED'}`, ''],
  ]);
  line('');

  line(`   daemon RSS after each section (kB): ${Object.entries(R.daemon_rss_kb_after_section).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  line('');

  const L = R.lease_end_ms;
  line(`6. Lease end: holder gone → down hook has run (${N_END} runs each)`);
  table(['figure', 'p50 ms', 'p99 ms', 'p50 vs'], [
    ['close() of last fd → down hook wrote', fmt(L.fd_close_to_down_hook.p50), fmt(L.fd_close_to_down_hook.p99),
      `${fmtRatio(ratio(L.fd_close_to_down_hook.p50, L.holder_last_close_ms.p50))} the close() itself`],
    ['process.exit with fd open → down hook wrote', fmt(L.process_exit_to_down_hook.p50), fmt(L.process_exit_to_down_hook.p99),
      `${fmtRatio(ratio(L.process_exit_to_down_hook.p50, L.fd_close_to_down_hook.p50))} by close()`],
    ['the holder\'s close() of the last fd', fmt(L.holder_last_close_ms.p50), fmt(L.holder_last_close_ms.p99),
      `${fmtRatio(ratio(L.holder_last_close_ms.p50, M['ioctl-floor'].last_close_ms.p50))} the floor's close()`],
    ['tapd open with an up hook (network "hooked")', fmt(L.tapd_open_ms_with_up_hook.p50), fmt(L.tapd_open_ms_with_up_hook.p99),
      `${fmtRatio(ratio(L.tapd_open_ms_with_up_hook.p50, M.tapd.open_ms.p50))} tapd without hooks`],
  ]);
  line('');
  line('notes');
  for (const n of notes) line(`- ${n}`);
}

function deriveNotes() {
  const M = R.methods;
  const floor = M['ioctl-floor'].open_ms.p50;
  const floorC = M['ioctl-floor-c']?.open_ms.p50;
  note(`tapd open p50 ${fmt(M.tapd.open_ms.p50)} ms = ioctl floor ${fmt(floor)} ms + ${fmt(M.tapd.open_ms.p50 - floor)} ms of connect, peer credentials, policy, state file, log line, SCM_RIGHTS reply and client. `
    + `The sync client (tapctl, tapd-bridge-helper) takes ${fmt(M['tapd-sync'].open_ms.p50)} ms; the async client runs connect() and each recvmsg() on a new OS thread (ffi-rs runInNewThread).`);
  if (floorC) note(`ffi-rs: the daemon's ioctl sequence takes ${fmt(floor)} ms through ffi-rs vs ${fmt(floorC)} ms in C (${fmtRatio(ratio(floor, floorC))}): the cost of calling through ffi-rs.`);
  const closeP50 = M['ioctl-floor'].last_close_ms.p50;
  note(`The slowest step of a TAP's life is its deletion: the last close() takes ${fmt(closeP50)} ms (p50) in the kernel. `
    + 'tapd does not do it on its event loop (handlers.ts → networks.ts releaseFds closes its copies with fs.close on the libuv pool); the client or the exiting VM pays it. '
    + `tapd logged lease_end ${fmt(M.tapd.client_close_call_to_lease_end_logged_ms?.p50)} ms (p50) after the client called close(). `
    + `The client's close() was the last reference in ${fmt(100 * M.tapd.client_close_was_last_fraction, 0)}% (async client) / ${fmt(100 * M['tapd-sync'].client_close_was_last_fraction, 0)}% (sync) of opens; `
    + 'in the rest tapd\'s own copy was still open and the deletion ran on one of tapd\'s 4 libuv pool threads (not the event loop; more than 4 at once would queue there).');
  const disk = M['tapd-state-on-disk'];
  if (disk) {
    const r50 = ratio(disk.open_ms.p50, M.tapd.open_ms.p50);
    const r99 = ratio(disk.open_ms.p99, M.tapd.open_ms.p99);
    note(`State dir on ext4 instead of tmpfs: open p50 ${fmt(disk.open_ms.p50)} ms vs ${fmt(M.tapd.open_ms.p50)} ms (${fmtRatio(r50)}), p99 ${fmt(disk.open_ms.p99)} vs ${fmt(M.tapd.open_ms.p99)} ms (${fmtRatio(r99)}). `
      + 'The lease journal (src/daemon/leases.ts) appends one line per lease change on the event loop, without fsync. '
      + `Replayed, one append at ${R.scale.lease_journal_append_ms?.leases ?? '?'} journal lines takes ${fmt(R.scale.lease_journal_append_ms?.tmpfs_ms_at_n.p50)} ms on tmpfs and ${fmt(R.scale.lease_journal_append_ms?.ext4_ms_at_n.p50)} ms on ext4. `
      + 'The state dir belongs on tmpfs (/run on a normal systemd host).');
  }
  const S = R.scale;
  if (S.open_ms_last_50) {
    const sv = S.lease_journal_append_ms;
    note(`Filling to ${S.leases} leases: open p50 ${fmt(S.open_ms_first_50.p50)} ms for the first 50, ${fmt(S.open_ms_last_50.p50)} ms for the last 50 (${fmtRatio(ratio(S.open_ms_last_50.p50, S.open_ms_first_50.p50))}); one open at ${S.leases} live ${fmt(S.open_ms_at_n.p50)} ms. `
      + `The kernel's part: the same ioctls with no daemon take ${fmt(S.ioctl_floor_ms_at_n.p50)} ms on a bridge with ${S.leases} ports vs ${fmt(M['ioctl-floor'].open_ms.p50)} ms with none (+${fmt(S.ioctl_floor_ms_at_n.p50 - M['ioctl-floor'].open_ms.p50)} ms: adding a port and bringing it up walk the bridge's ports), and each deletion takes ${fmt(S.teardown_ms / S.leases)} ms instead of ${fmt(closeP50)}. `
      + `tapd's own part went from ${fmt(M['tapd-sync'].open_ms.p50 - M['ioctl-floor'].open_ms.p50)} to ${fmt(S.open_ms_at_n.p50 - S.ioctl_floor_ms_at_n.p50)} ms (differences of p50s taken minutes apart on a noisy machine: rough). The lease journal appends one line per change (${fmt(sv.tmpfs_ms_at_1.p50)} ms with 1 line, ${fmt(sv.tmpfs_ms_at_n.p50)} ms with ${sv.leases} on tmpfs): O(1) per open and per lease end.`);
    note(`Daemon memory: ${S.daemon_rss_kb_at_start} kB RSS just after start, ${S.daemon_rss_kb_at_n} kB with ${S.leases} leases, ${S.daemon_rss_kb_after_teardown} kB after; after each section: ${Object.values(R.daemon_rss_kb_after_section ?? {}).join(', ')} kB. It rises with work done and falls again (V8 heap sizing), so the per-lease cost is below this noise; it did not grow without bound.`);
    note(`Teardown of ${S.leases}: ${fmt(S.teardown_ms)} ms from the first close() to the last lease_end. The holder's ${S.leases} close() calls took ${fmt(S.holder_close_all_ms)} ms (${fmt(S.holder_close_all_ms / S.leases)} ms each, one after another: kernel device deletion), `
      + `and tapd logged the last lease_end ${fmt(S.last_lease_end_after_last_close_ms)} ms after the last close returned (the lease ends as the kernel unregisters the device, before close() returns): tapd keeps up, the kernel sets the pace. `
      + `During it, status p50/p99 ${fmt(S.status_ms_during_teardown.p50)}/${fmt(S.status_ms_during_teardown.p99)} ms vs ${fmt(S.status_ms_at_n_quiet.p50)}/${fmt(S.status_ms_at_n_quiet.p99)} ms just before; another client's open ${fmt(S.other_client_open_ms_during_teardown.p50)}/${fmt(S.other_client_open_ms_during_teardown.p99)} ms vs ${fmt(S.other_client_open_ms_at_n_quiet.p50)}/${fmt(S.other_client_open_ms_at_n_quiet.p99)} ms.`);
  }
  const I = R.teardown_interference;
  if (I.tapd_open_ms_quiet) {
    const t50 = ratio(I.tapd_open_ms_while_other_client_tears_down.p50, I.tapd_open_ms_quiet.p50);
    const t99 = ratio(I.tapd_open_ms_while_other_client_tears_down.p99, I.tapd_open_ms_quiet.p99);
    const s99 = ratio(I.status_ms_while_other_client_tears_down.p99, I.status_ms_quiet.p99);
    const f50 = ratio(I.c_ioctl_floor_ms_while_other_process_tears_down.p50, I.c_ioctl_floor_ms_quiet.p50);
    const f99 = ratio(I.c_ioctl_floor_ms_while_other_process_tears_down.p99, I.c_ioctl_floor_ms_quiet.p99);
    note(`While another client's ${I.other_client_leases_closed} TAPs are torn down: tapd open ${fmtRatio(t50)} (p50) / ${fmtRatio(t99)} (p99) of quiet; `
      + `creation in C with no daemon while another process deletes TAPs: ${fmtRatio(f50)} / ${fmtRatio(f99)}; tapd status (no kernel work) p99 ${fmtRatio(s99)}. `
      + (f99 !== null && f99 >= 1.5
        ? 'So an open does wait on another client\'s teardown, in the kernel: creating and deleting a device both take the RTNL lock. '
        : 'The kernel barely makes creation wait for deletion here. ')
      + (s99 !== null && s99 >= 1.5
        ? 'tapd\'s event loop was delayed too (status), by the lease ends\' bookkeeping and by its ioctls waiting for RTNL: they run synchronously on the one event loop (networks.ts makeTap), so such a wait holds up every other request.'
        : 'tapd\'s event loop was not delayed (status unchanged): tapd adds no wait of its own. Its ioctls do run synchronously on its one event loop (networks.ts makeTap), so an ioctl waiting for RTNL holds up every other request for as long; here that is short.'));
  }
  const C = R.cold_start;
  note(`Cold start ${fmt(C.first_open_ms.p50)} ms (p50) is mostly Node start-up and module loading (node -e 0 alone: ${fmt(R.e2e_command_ms.node_startup.p50)} ms here).`);
  const tc = R.e2e_command_ms.tapctl_run;
  const E = R.e2e_command_ms;
  if (tc && !tc.skipped) {
    note(`tapctl run: ${fmt(tc.p50)} ms end to end = node start-up ${fmt(E.node_startup.p50)} ms + loading the client library with ffi-rs ${fmt(E.node_import_client.p50 - E.node_startup.p50)} ms `
      + `+ the open ~${fmt(M['tapd-sync'].open_ms.p50)} ms + the rest (tapctl's own modules incl. commander, fork/exec of the command, teardown at exit) ${fmt(tc.p50 - E.node_import_client.p50 - M['tapd-sync'].open_ms.p50)} ms.`);
  }
  const bh = R.e2e_command_ms['tapd-bridge-helper'];
  if (bh && !bh.skipped) note(`tapd-bridge-helper: ${fmt(bh.p50)} ms per QEMU NIC vs qemu-bridge-helper ${fmt(M['qemu-bridge-helper'].open_ms.p50)} ms (${fmtRatio(ratio(bh.p50, M['qemu-bridge-helper'].open_ms.p50))}): a static C program (native/), so no Node start-up; what is left is fork/exec plus one tapd open.`);
  note('The daemon ran as root here (the bench runs as root), not as user tapd with only CAP_NET_ADMIN as in tapd.service; qemu-bridge-helper ran as root too (it is not setuid on this host). Neither changes the kernel work measured.');
  note(`This machine is shared and noisy (2 cores, other jobs running): p99 of small samples (${N_CMD}, ${N_COLD}) is close to the max and moves between runs.`);
}

// ---------------------------------------------------------------- main

let status = 0;
try {
  R.machine = machine();
  await setup();
  const mainState = path.join(res.shm, 'main');
  const daemon = await new Daemon('tapd').start(tapdArgv(res.socket, mainState));
  await sleep(500);
  R.daemon_rss_kb_at_start = daemon.rssKb();
  const user = new Worker('client (uid 65534)', { user: true });
  const rootw = new Worker('ioctl floor (root)', { user: false });
  const t0 = Date.now();
  const rss = (label) => {
    R.daemon_rss_kb_after_section[label] = daemon.rssKb();
  };
  R.daemon_rss_kb_after_section = { start: R.daemon_rss_kb_at_start };
  await phaseOpen(daemon, user, rootw);
  rss('1_open');
  openRatios();
  await phaseCommands(daemon);
  rss('2_commands');
  await phaseCold(user);
  await phaseConcurrency(daemon, user);
  rss('4_concurrency');
  await phaseInterference(daemon, user);
  rss('4b_interference');
  await phaseScale(daemon, user, rootw);
  rss('5_scale');
  await phaseLeaseEnd(daemon, user);
  rss('6_lease_end');
  R.bench_seconds = round((Date.now() - t0) / 1000, 1);
  await user.stop();
  await rootw.stop();
  await daemon.stop();
  const leftover = tunDevicesInNs();
  if (leftover.length) note(`left in the namespace at the end: ${leftover.join(' ')}`);
  deriveNotes();
  report();
  line('');
  line(`bench took ${R.bench_seconds} s; results in bench/results.json`);
  mkdirSync(path.join(ROOT, 'bench'), { recursive: true });
  writeFileSync(path.join(ROOT, 'bench/results.json'), `${JSON.stringify(R, null, 2)}\n`);
  process.stdout.write(`${out.join('\n')}\n`);
} catch (err) {
  console.error(`bench failed: ${err.stack ?? err}`);
  status = 1;
} finally {
  await cleanup();
}
process.exit(status);
