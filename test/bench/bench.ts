// tapd's benchmark (npm run bench → scripts/bench.sh → vite-node test/bench/bench.ts). Needs
// root; everything that touches network devices happens inside one network namespace made here
// (test/helpers/netns.ts, the tests' harness) and deleted at the end.
//
// Against a real tapd running in that namespace it measures:
//   1. open latency (request sent → bridged, up TAP fd in the client's hand) of tapd and its peers
//      (qemu-bridge-helper driven the way QEMU drives it, iproute2, the in-process ioctl floor);
//   2. whole-command latency (tapctl run with Node's start-up included; the C tapd-bridge-helper);
//   3. cold start through systemd-socket-activate;
//   4. 1, 8 and 64 clients opening at once; an open while another client's TAPs are torn down;
//   5. N live leases on one bridge: memory, latency, teardown, and that nothing is left;
//   6. lease end: holder gone → down hook has run;
//   7. 10,000 idle connections (held by four unprivileged uids): daemon memory, and whether it
//      still answers meanwhile;
// and, from the daemon's log during section 1, where an open's time goes (lease_start's steps_us);
// then prints the table (test/bench/report.ts) and writes the figures as JSON.
//
// Environment (all optional; scripts/bench.sh sets the first three so its trap can clean up
// whatever a killed run left): TAPD_BENCH_DIR (a root-owned 0755 temp dir; the pids of what the
// bench starts are appended to its file "pids"), TAPD_BENCH_SHM (a temp dir on tmpfs for state
// dirs, like /run/tapd), TAPD_BENCH_NS (namespace name), TAPD_BENCH_OUT (the JSON; default
// bench/results.json), TAPD_BENCH_N (open iterations per method, default 300), TAPD_BENCH_QUICK=1
// (a fast smoke run with small counts), TAPD_BENCH_SCALE (section 5's live leases; default 1000,
// quick 100: a quick run with 1000 measures the fill alone at full size).
import { spawnSync, type ChildProcess } from 'node:child_process';
import {
  appendFileSync, chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, rmdirSync, statSync, writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import ts from 'typescript';
import { DIST, NOBODY, Netns, ROOT, startTapd, tempDir, until, type DaemonHandle } from '../helpers/netns.js';
import {
  missingFigures, openRatios, renderReport, round, summary, type BenchCounts, type BenchResults, type MethodResult, type Summary,
} from './report.js';
import type { WorkerOp, WorkerOps } from './worker.js';
import type * as ClientLib from '../../src/client/client.js';

const TAPCTL = path.join(DIST, 'cli/tapctl.js');
const BRIDGE_HELPER = path.join(ROOT, 'native/build/tapd-bridge-helper');
const QEMU_HELPER = '/usr/lib/qemu/qemu-bridge-helper';
const BRIDGE_CONF = '/etc/qemu/bridge.conf';
const NODE = process.execPath;

const QUICK = process.env.TAPD_BENCH_QUICK === '1';
const N: BenchCounts = {
  open: Number(process.env.TAPD_BENCH_N ?? (QUICK ? 40 : 300)),
  blocks: QUICK ? 1 : 3, // open-latency runs are split into blocks, methods interleaved
  cmd: QUICK ? 5 : 30,
  cold: QUICK ? 2 : 5,
  end: QUICK ? 3 : 10,
  /**
   * A TAP's deletion runs on in the kernel for ~15 ms after tapd has seen RTM_DELLINK and logged
   * lease_end. Before a measured open we wait until this long after the previous close began,
   * so no open overlaps it.
   */
  settleMs: 30,
};
const N_SCALE = Number(process.env.TAPD_BENCH_SCALE ?? (QUICK ? 100 : 1000));
const OUT = process.env.TAPD_BENCH_OUT || path.join(ROOT, 'bench/results.json');

if (process.getuid?.() !== 0) {
  console.error('the bench needs root (network namespaces, TAP devices); run: sudo npm run bench');
  process.exit(1);
}

const client = (await import(path.join(DIST, 'client/client.js'))) as typeof ClientLib;

// ---------------------------------------------------------------- resources and cleanup

const ownDirs: string[] = [];
const run = process.env.TAPD_BENCH_DIR || own(tempDir('bench'));
const shm = process.env.TAPD_BENCH_SHM || own(tempDir('bench', '/dev/shm'));
const nsName = process.env.TAPD_BENCH_NS || `tapd-bench-${randomBytes(3).toString('hex')}`;
const PIDS = path.join(run, 'pids');
let ns: Netns | undefined;
const children = new Set<ChildProcess>();
const daemons = new Set<Daemon>();
/** While /etc/qemu/bridge.conf says "allow br0" for qemu-bridge-helper: what to put back. */
let savedBridgeConf: { existed: boolean; content: Buffer | null; mode: number; dirExisted: boolean } | null = null;

function own(dir: string): string {
  ownDirs.push(dir);
  return dir;
}

/** scripts/bench.sh's trap kills what is listed here (checked against its command line) if the bench itself is killed. */
function recordPid(pid: number | undefined): void {
  if (pid !== undefined) appendFileSync(PIDS, `${pid}\n`);
}

function sh(cmd: string, args: string[], opts: { allowFail?: boolean } = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000, maxBuffer: 64 << 20 });
  if (r.status !== 0 && !opts.allowFail) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.error?.message}): ${(r.stderr || r.stdout || '').slice(0, 2000)}`);
  }
  return r;
}

function theNs(): Netns {
  if (!ns) throw new Error('no namespace yet');
  return ns;
}

function restoreBridgeConf(): void {
  const saved = savedBridgeConf;
  if (!saved) return;
  if (saved.existed) writeFileSync(BRIDGE_CONF, saved.content!, { mode: saved.mode });
  else {
    rmSync(BRIDGE_CONF, { force: true });
    if (!saved.dirExisted) rmdirSync(path.dirname(BRIDGE_CONF));
  }
  savedBridgeConf = null;
}

function allowBridgeForQemuHelper(bridge: string): void {
  const existed = existsSync(BRIDGE_CONF);
  savedBridgeConf = {
    existed,
    content: existed ? readFileSync(BRIDGE_CONF) : null,
    mode: existed ? statSync(BRIDGE_CONF).mode & 0o7777 : 0o644,
    dirExisted: existsSync(path.dirname(BRIDGE_CONF)),
  };
  mkdirSync(path.dirname(BRIDGE_CONF), { recursive: true, mode: 0o755 });
  writeFileSync(BRIDGE_CONF, `allow ${bridge}\n`, { mode: 0o644 });
}

const exited = (c: ChildProcess) => new Promise<void>((resolve) => (c.exitCode !== null || c.signalCode !== null ? resolve() : c.once('exit', () => resolve())));

let cleaning = false;
async function cleanup(): Promise<void> {
  if (cleaning) return;
  cleaning = true;
  try {
    restoreBridgeConf();
  } catch (err) {
    console.error(`cleanup: could not restore ${BRIDGE_CONF}: ${(err as Error).message}`);
  }
  // Our children only, by pid: SIGTERM, then SIGKILL after 3 s (daemons: 10 s, in handle.stop()).
  const alive = [...children].filter((c) => c.exitCode === null && c.signalCode === null);
  for (const c of alive) c.kill('SIGTERM');
  await Promise.all([
    ...alive.map(async (c) => {
      const t = setTimeout(() => c.kill('SIGKILL'), 3000);
      await exited(c);
      clearTimeout(t);
    }),
    ...[...daemons].map((d) => d.stop()),
  ]);
  ns?.destroy();
  for (const d of ownDirs) rmSync(d, { recursive: true, force: true });
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    console.error(`\n${sig}: cleaning up`);
    void cleanup().then(() => process.exit(130));
  });
}

type Spawned = ChildProcess & { stderrText: string; done: Promise<{ code: number | null; signal: NodeJS.Signals | null }> };

/** Runs argv inside the namespace (as uid 65534 with user: true, or as `uid`), stdin piped. Tracked for cleanup. */
function spawnIn(argv: string[], { user = false, uid }: { user?: boolean; uid?: number } = {}): Spawned {
  const [cmd, ...args] = argv;
  const as = uid ?? (user ? NOBODY : undefined);
  const child = theNs().spawn(cmd!, args, { ...(as === undefined ? {} : { uid: as }), stdin: 'pipe', cwd: '/' }) as Spawned;
  children.add(child);
  recordPid(child.pid);
  child.stdin!.on('error', () => {}); // a paced child may exit before reading our last newline
  child.stderrText = '';
  child.stderr!.on('data', (d: Buffer) => {
    if (child.stderrText.length < 20_000) child.stderrText += d.toString();
  });
  child.done = new Promise((resolve) => child.once('exit', (code, signal) => {
    children.delete(child);
    resolve({ code, signal });
  }));
  return child;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const epochNow = () => performance.timeOrigin + performance.now();

async function settle(sinceEpochMs: number): Promise<void> {
  const left = sinceEpochMs + N.settleMs - epochNow();
  if (left > 0) await sleep(left);
}

/** One open and close on `d`'s lan network through `user`; resolves once tapd ended the lease and the settle time passed. */
async function openSettled(user: Worker, d: Daemon, sync = false): Promise<WorkerOps['open_close'][1]> {
  const r = await user.call('open_close', { socket: d.socket, network: 'lan', sync });
  await d.leaseEnded(r.lease);
  await settle(r.close_start_epoch_ms);
  return r;
}

async function waitUntil(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  if (!(await until(cond, timeoutMs, 5))) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Asks get() every 20 ms until ok() holds for its answer. */
async function pollUntil<T>(get: () => Promise<T>, ok: (v: T) => boolean, timeoutMs: number, what: string): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(v)})`);
    await sleep(20);
  }
}

const progress = (s: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${s}\n`);

/** A number field of /proc/PID/status (VmRSS in kB, Threads, ...). */
function procStatus(pid: number | undefined, field: string): number | null {
  if (pid === undefined) return null;
  const m = new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : null;
}

// ---------------------------------------------------------------- the daemon and the workers

type TapdEvent = Record<string, unknown> & { event?: string; lease?: string; result?: string; seen_epoch_ms: number };

/** tapd in the namespace (startTapd), with its log read as it comes: lease counts, lease ends by id. */
class Daemon {
  events: TapdEvent[] = [];
  active = 0;
  granted = 0;
  /** lease id → epoch ms at which we read its lease_end */
  ended = new Map<string, number>();
  /** lease id → its lease_start's steps_us (microseconds per step of the open, in the daemon) */
  steps = new Map<string, Record<string, number>>();
  private waiters: Array<{ pred: (e: TapdEvent) => boolean; done: (e: TapdEvent) => void }> = [];
  handle!: DaemonHandle;

  private constructor(readonly label: string) {}

  static async start(label: string, stateDir: string, opts: { wrap?: string[]; waitStarted?: boolean } = {}): Promise<Daemon> {
    const d = new Daemon(label);
    d.handle = await startTapd(theNs(), CONFIG, {}, {
      parent: run, stateDir, logLevel: 'info', ...opts, onSpawn: recordPid, onLine: (l) => d.onLine(l),
    });
    daemons.add(d);
    return d;
  }

  get socket(): string {
    return this.handle.socket;
  }

  private onLine(l: string): void {
    if (!l.startsWith('{')) return;
    let e: TapdEvent;
    try {
      e = { ...(JSON.parse(l) as Record<string, unknown>), seen_epoch_ms: epochNow() };
    } catch {
      return;
    }
    this.events.push(e);
    if (e.event === 'lease_start' && e.result === 'granted') {
      this.active++;
      this.granted++;
      if (e.steps_us && typeof e.steps_us === 'object') this.steps.set(String(e.lease), e.steps_us as Record<string, number>);
    }
    if (e.event === 'lease_end') {
      this.active--;
      this.ended.set(String(e.lease), e.seen_epoch_ms);
    }
    for (const w of this.waiters.slice()) if (w.pred(e)) w.done(e);
  }

  waitFor(pred: (e: TapdEvent) => boolean, timeoutMs: number, what: string): Promise<TapdEvent> {
    const found = this.events.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        done: (e: TapdEvent) => {
          clearTimeout(timer);
          this.waiters.splice(this.waiters.indexOf(w), 1);
          resolve(e);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`${this.label}: timed out after ${timeoutMs} ms waiting for ${what}\n${this.handle.log().slice(-4000)}`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  leaseEnded(id: string, timeoutMs = 15_000): Promise<TapdEvent> {
    return this.waitFor((e) => e.event === 'lease_end' && e.lease === id, timeoutMs, `lease_end of ${id}`);
  }

  /** No lease of ours is live in the daemon: every granted lease has its lease_end. */
  idle(timeoutMs = 60_000): Promise<void> {
    return waitUntil(() => this.active <= 0, timeoutMs, `${this.label} to have no leases (${this.active} left)`);
  }

  get pid(): number | undefined {
    return this.handle.proc.pid;
  }

  rssKb(): number | null {
    return procStatus(this.pid, 'VmRSS');
  }

  async stop(): Promise<void> {
    if (!daemons.delete(this)) return;
    await this.handle.stop();
  }
}

/** test/bench/worker.ts, compiled into the run dir, as a process in the namespace. */
class Worker {
  readonly proc: Spawned;
  private nextId = 1;
  private pending = new Map<number, { resolve: (m: Record<string, unknown>) => void; reject: (e: Error) => void; op: string }>();

  constructor(readonly label: string, { user, uid }: { user: boolean; uid?: number }) {
    this.proc = spawnIn([NODE, WORKER_JS, DIST], { user, ...(uid === undefined ? {} : { uid }) });
    createInterface({ input: this.proc.stdout! }).on('line', (l) => {
      const m = JSON.parse(l) as { id: number; ok: boolean; error?: string };
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m);
      else p.reject(new Error(`${this.label} ${p.op}: ${m.error}`));
    });
    void this.proc.done.then(({ code, signal }) => {
      for (const p of this.pending.values()) p.reject(new Error(`${this.label} exited (${code ?? signal}): ${this.proc.stderrText}`));
    });
  }

  call<K extends WorkerOp>(op: K, args: WorkerOps[K][0]): Promise<WorkerOps[K][1]> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (m: Record<string, unknown>) => void, reject, op });
      this.proc.stdin!.write(`${JSON.stringify({ id, op, ...args })}\n`);
    });
  }

  async stop(): Promise<void> {
    this.proc.stdin!.end(`${JSON.stringify({ op: 'exit' })}\n`);
    await this.proc.done;
  }
}

interface QdriveRow {
  ms: number;
  close_ms: number;
  ifname?: string;
}

/**
 * Runs qdrive (test/bench/qdrive.c) in the namespace; returns its per-iteration lines.
 * With pace(), qdrive waits before each next iteration until pace resolves.
 */
async function qdrive(args: string[], { user = false, pace }: { user?: boolean; pace?: (row: QdriveRow) => Promise<void> } = {}): Promise<QdriveRow[]> {
  const p = spawnIn([QDRIVE, ...args], { user });
  const rows: QdriveRow[] = [];
  let chain = Promise.resolve();
  let paceError: unknown;
  createInterface({ input: p.stdout! }).on('line', (l) => {
    if (!l.startsWith('{')) return;
    const row = JSON.parse(l) as QdriveRow;
    rows.push(row);
    if (pace) {
      chain = chain.then(() => pace(row)).then(() => {
        if (!p.stdin!.destroyed) p.stdin!.write('\n');
      }).catch((err: unknown) => {
        paceError = err;
        p.kill('SIGTERM');
      });
    }
  });
  if (!pace) p.stdin!.end();
  const { code, signal } = await p.done;
  await chain;
  if (paceError) throw paceError;
  if (code !== 0) throw new Error(`qdrive ${args.join(' ')} failed (${code ?? signal}): ${p.stderrText.trim()}`);
  return rows;
}

// ---------------------------------------------------------------- setup

const QDRIVE = path.join(run, 'qdrive');
const WORKER_JS = path.join(run, 'worker.mjs');
const HOOKS = path.join(run, 'hooks');
const DOWN_LOG = path.join(run, 'down.log');
const LIMITS = 'limits max-leases 1024 max-connections 256 max-connections-per-user 128';
const CONFIG = [
  'network lan bridge br0',
  `network hooked bridge br1 up ${HOOKS}/up down ${HOOKS}/down`,
  'permit @nogroup on lan leases 1024 total 1024',
  'permit @nogroup on hooked leases 1024 total 1024',
  'permit root on any',
  // 64 clients at once are one uid here: above the default 32 connections per user.
  LIMITS,
  '',
].join('\n');

/** Section 7: IDLE.holders uids hold IDLE.connections idle connections between them. */
const IDLE = {
  connections: QUICK ? 2000 : 10_000,
  uids: [NOBODY, 60001, 60002, 60003],
  /** The longest request-timeout tapd takes: no idle connection is dropped while the section runs. */
  requestTimeoutS: 300,
  /**
   * Raised for the section when it can be (CAP_SYS_RESOURCE). An idle connection costs the daemon
   * one fd (its socket; on a kernel without SO_PEERPIDFD also the pidfd, so the room is reckoned
   * for two there); without the raise the section holds as many as fit and says so in the notes.
   */
  nofile: 65536,
};
const IDLE_LIMITS = `limits max-leases 1024 max-connections ${IDLE.connections + 256} max-connections-per-user ${Math.ceil(IDLE.connections / IDLE.uids.length) + 128} request-timeout ${IDLE.requestTimeoutS}s`;

function machine(): BenchResults['machine'] {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  return {
    cpu: /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? 'unknown',
    cores: os.cpus().length,
    kernel: os.release(),
    node: process.version,
    qemu: sh('qemu-system-x86_64', ['--version'], { allowFail: true }).stdout?.split('\n')[0] ?? '',
    date: new Date().toISOString(),
    temp_dir_fs: sh('stat', ['-f', '-c', '%T', run], { allowFail: true }).stdout?.trim() || 'unknown',
  };
}

/** A reason to skip a command's row (not built, or --help fails), or null. */
function notBuilt(argv: string[]): string | null {
  const file = argv[argv.length - 1]!;
  if (!existsSync(file)) return `not built (${path.relative(ROOT, file)} missing)`;
  const r = sh(argv[0]!, [...argv.slice(1), '--help'], { allowFail: true });
  if (r.status !== 0) return `not built (${path.relative(ROOT, file)} --help exited ${r.status}: ${(r.stderr || '').split('\n')[0]})`;
  return null;
}

function setup(): void {
  writeFileSync(PIDS, '', { flag: 'a' });
  sh('gcc', ['-O2', '-Wall', '-o', QDRIVE, path.join(ROOT, 'test/bench/qdrive.c')]);
  // The worker runs as uid 65534 under plain node: type-stripped JS in the run dir.
  const js = ts.transpileModule(readFileSync(path.join(ROOT, 'test/bench/worker.ts'), 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 }, fileName: 'worker.ts',
  }).outputText;
  writeFileSync(WORKER_JS, js, { mode: 0o644 });
  // Hooks: root-owned, 0755, in a root-owned 0755 dir.
  mkdirSync(HOOKS, { mode: 0o755 });
  chmodSync(HOOKS, 0o755);
  writeFileSync(DOWN_LOG, '', { mode: 0o644 });
  writeFileSync(path.join(HOOKS, 'up'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  writeFileSync(path.join(HOOKS, 'down'), `#!/bin/sh\necho "$1 $(date +%s.%N)" >> ${DOWN_LOG}\n`, { mode: 0o755 });
  // The namespace: two bridges with fixed MACs (so TAP host MACs never become theirs).
  ns = Netns.createNamed(nsName);
  for (const [br, mac, addr] of [['br0', '02:00:00:00:00:01', '198.18.0.1/24'], ['br1', '02:00:00:00:01:01', '198.18.1.1/24']] as const) {
    ns.run('ip', ['link', 'add', br, 'type', 'bridge']);
    ns.run('ip', ['link', 'set', br, 'address', mac, 'up']);
    ns.run('ip', ['addr', 'add', addr, 'dev', br]);
  }
}

function tunDevicesInNs(): string[] {
  return (JSON.parse(theNs().run('ip', ['-j', 'link', 'show', 'type', 'tun'])) as Array<{ ifname: string }>).map((l) => l.ifname);
}

// ---------------------------------------------------------------- the measurements

// Filled section by section; written out only after every section ran.
const R = {
  methodology: {}, methods: {}, e2e_command_ms: {}, concurrency: {}, notes: [], daemon_rss_kb_after_section: {},
} as unknown as BenchResults;
const note = (s: string) => R.notes.push(s);

async function phaseOpen(daemon: Daemon, user: Worker, rootw: Worker): Promise<void> {
  progress(`1. open latency: ${N.open} runs per method, in ${N.blocks} interleaved blocks`);
  const per = Math.ceil(N.open / N.blocks);
  const samples: Record<string, Record<string, number[]>> = {};
  const add = (m: string, key: string, xs: number[]) => ((samples[m] ??= {})[key] ??= []).push(...xs);
  // The tapd rows' steps as the daemon logged them (µs), with the client's own time for the same open.
  const breakdown: Record<string, number[]> = {};
  const addSteps = (lease: string, clientMs: number) => {
    const st = daemon.steps.get(lease);
    if (!st) throw new Error(`lease_start of ${lease} has no steps_us`);
    for (const [k, us] of Object.entries(st)) (breakdown[k] ??= []).push(us);
    const total = Object.values(st).reduce((a, b) => a + b, 0);
    for (const [k, us] of [['daemon_total', total], ['client_total', clientMs * 1000], ['client_minus_daemon', clientMs * 1000 - total]] as const) {
      (breakdown[k] ??= []).push(us);
    }
  };
  // Warm the daemon and the client (ffi-rs, page cache) before anything counts.
  for (let i = 0; i < 30; i++) await openSettled(user, daemon);
  for (let i = 0; i < 20; i++) await rootw.call('floor', { bridge: 'br0' });

  for (let b = 0; b < N.blocks; b++) {
    // tapd, async (openTap) and sync (openTapSync) client: one at a time, each lease ended before the next open.
    for (const [m, sync] of [['tapd', false], ['tapd-sync', true]] as const) {
      for (let i = 0; i < per; i++) {
        const r = await user.call('open_close', { socket: daemon.socket, network: 'lan', sync });
        await daemon.leaseEnded(r.lease);
        add(m, 'open', [r.ms]);
        add(m, 'close', [r.close_ms]);
        add(m, 'lease_end_seen', [daemon.ended.get(r.lease)! - r.close_start_epoch_ms]);
        if (m === 'tapd') addSteps(r.lease, r.ms);
        await settle(r.close_start_epoch_ms);
      }
    }
    // The kernel floor in-process (Node + ffi-rs, the daemon's calls for an open), and the same in C.
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
    progress(`   block ${b + 1}/${N.blocks} done`);
  }

  // The state dir on the temp dir's disk instead of tmpfs: the journal append lands there.
  progress('   tapd with its state dir on the temp dir\'s disk instead of tmpfs');
  const disk = await Daemon.start('tapd (state on disk)', path.join(run, 'disk-state'));
  try {
    const n = Math.min(N.open, 100);
    for (let i = 0; i < n + 10; i++) {
      const r = await openSettled(user, disk);
      if (i >= 10) add('tapd-state-on-disk', 'open', [r.ms]);
    }
  } finally {
    await disk.stop();
  }

  for (const [m, s] of Object.entries(samples)) {
    const r: MethodResult = { open_ms: summary(s.open!) };
    // tapd: the client's close() (often not the last reference: tapd's copy may still be open);
    // the others: the close() of the last fd, which deletes the device.
    if (s.close) r[m.startsWith('tapd') ? 'client_close_ms' : 'last_close_ms'] = summary(s.close);
    if (s.teardown) r.teardown_ms = summary(s.teardown);
    if (s.lease_end_seen) r.client_close_call_to_lease_end_logged_ms = summary(s.lease_end_seen);
    // Who deleted the device: a client close() over 3 ms was the last reference (kernel teardown);
    // otherwise tapd's own copy was still open and tapd's close of it did it.
    if (m.startsWith('tapd') && s.close) r.client_close_was_last_fraction = round(s.close.filter((x) => x > 3).length / s.close.length, 3);
    R.methods[m] = r;
  }
  R.methodology.open = `${N.open} opens per method, one at a time, interleaved in ${N.blocks} blocks; each TAP is closed, (tapd) its lease_end logged, and ${N.settleMs} ms since its close() began have passed before the next open, so no open overlaps a teardown (devices do not accumulate); warm daemon (30 opens before); vnet_hdr on; p99 by nearest rank`;
  R.open_ratios = openRatios(R.methods);
  R.open_breakdown_us = Object.fromEntries(Object.entries(breakdown).map(([k, xs]) => [k, summary(xs)]));
  R.methodology.open_breakdown = 'the tapd (async openTap) rows of section 1: each open\'s lease_start record from the daemon\'s log carries steps_us (µs per step, one hrtime mark each, accept → the reply\'s sendmsg); daemon_total = their sum; client_total = the client\'s own time for that open; client_minus_daemon = the difference per open (client library, connect, socket, the wait for the accept, reading the reply); p50/p99 of each over the same opens';
}

async function phaseCommands(daemon: Daemon): Promise<void> {
  progress(`2. whole commands: ${N.cmd} runs each`);
  // Pace: the next run starts only when this one's lease was granted and has ended.
  const paced = () => {
    const base = daemon.granted;
    let runs = 0;
    return async () => {
      runs++;
      await waitUntil(() => daemon.granted >= base + runs && daemon.active <= 0, 15_000, 'the last run\'s lease to end');
      await sleep(N.settleMs);
    };
  };
  const E = R.e2e_command_ms;
  const nodeStart = await qdrive(['run', String(N.cmd), '--', NODE, '-e', '0'], { user: true });
  E.node_startup = { ...summary(nodeStart.map((r) => r.ms)), what: 'node -e 0 (fork+exec+exit), uid 65534' };
  const imp = `await import(${JSON.stringify(path.join(DIST, 'client/client.js'))})`;
  const nodeImport = await qdrive(['run', String(N.cmd), '--', NODE, '--input-type=module', '-e', imp], { user: true });
  E.node_import_client = { ...summary(nodeImport.map((r) => r.ms)), what: 'node importing dist/client/client.js (pulls in dist/sys and ffi-rs), then exit' };

  const command = async (key: 'tapctl_run' | 'tapd-bridge-helper', probe: string[], args: string[], what: string) => {
    const problem = notBuilt(probe);
    if (problem) {
      E[key] = { skipped: problem };
      note(`${key}: ${problem}; row skipped`);
      return;
    }
    try {
      const rows = await qdrive(args, { user: true, pace: paced() });
      E[key] = { ...summary(rows.map((r) => r.ms)), what };
    } catch (err) {
      const first = (err as Error).message.split('\n')[0];
      E[key] = { skipped: `failed: ${first}` };
      note(`${key} failed, row skipped: ${first}`);
    }
  };
  await command('tapctl_run', [NODE, TAPCTL], ['run', String(N.cmd), '-p', '--', NODE, TAPCTL, '--socket', daemon.socket, 'run', '-b', 'lan', '--', '/bin/true'],
    'tapctl run -b lan -- /bin/true, whole process (fork → exit), uid 65534');
  await command('tapd-bridge-helper', [BRIDGE_HELPER], ['helper', String(N.cmd), 'lan', '-p', '--', BRIDGE_HELPER, `--socket=${daemon.socket}`],
    'run as QEMU runs a helper (socketpair, fork, exec, recvmsg, waitpid), uid 65534');
  const setuid = existsSync(QEMU_HELPER) && (statSync(QEMU_HELPER).mode & 0o4000) !== 0;
  E['qemu-bridge-helper'] = {
    ...R.methods['qemu-bridge-helper']!.open_ms,
    what: `the same driver as tapd-bridge-helper (section 1 runs), as root (${QEMU_HELPER} is ${setuid ? '' : 'not '}setuid here)`,
  };
  await daemon.idle(15_000);
}

async function phaseCold(user: Worker): Promise<void> {
  progress(`3. cold start through systemd-socket-activate: ${N.cold} runs`);
  const rows: Array<{ first_open_ms: number; started_logged_after_ms: number; second_open_ms: number }> = [];
  for (let i = 0; i < N.cold; i++) {
    const d = await Daemon.start(`socket-activated tapd #${i}`, path.join(shm, `cold${i}`),
      { wrap: ['systemd-socket-activate', '-l', '@DIR@/tapd.sock'], waitStarted: false });
    try {
      await waitUntil(() => existsSync(d.socket), 10_000, 'systemd-socket-activate to listen');
      chmodSync(d.socket, 0o666); // it binds with the umask; the unit's SocketMode=0666 does this in real life
      await sleep(200); // let the system settle: nothing of tapd runs yet
      const t0 = epochNow();
      const r = await user.call('open_close', { socket: d.socket, network: 'lan' });
      const started = await d.waitFor((e) => e.event === 'started', 10_000, 'started');
      await d.leaseEnded(r.lease);
      const warm = await user.call('open_close', { socket: d.socket, network: 'lan' });
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
    runs: rows.map((r) => ({ first_open_ms: round(r.first_open_ms, 2), started_logged_after_ms: round(r.started_logged_after_ms, 2), second_open_ms: round(r.second_open_ms, 2) })),
    what: 'systemd-socket-activate -l SOCK node dist/cli/tapd.js ...; no daemon before the connect; first open = connect → fd in hand (includes Node start-up, module load, policy load, link watch)',
  };
}

async function phaseConcurrency(daemon: Daemon, user: Worker): Promise<void> {
  progress('4. concurrency: 1, 8, 64 clients at once');
  const plan = QUICK ? [[1, 10], [8, 4], [64, 2]] : [[1, 100], [8, 30], [64, 6]];
  for (const [k, rounds] of plan as Array<[number, number]>) {
    const lat: number[] = [];
    let wall = 0;
    const errors: string[] = [];
    for (let r = 0; r < rounds; r++) {
      const b = await user.call('burst', { socket: daemon.socket, network: 'lan', k });
      lat.push(...b.lat);
      wall += b.wall_ms;
      errors.push(...b.errors);
      const c = await user.call('close_all', {});
      await daemon.idle(30_000);
      await settle(c.start_epoch_ms + c.ms);
    }
    R.concurrency[String(k)] = {
      clients: k, rounds, opens: lat.length, opens_per_s: round((lat.length / wall) * 1000, 1),
      open_ms: summary(lat), errors: errors.length, ...(errors[0] ? { first_error: errors[0] } : {}),
    };
  }
  R.methodology.concurrency = 'one client process (uid 65534), k openTap calls started together (each its own connection); a round ends when all have their fds; fds closed and all leases ended between rounds; opens/s = opens / summed round wall time';
}

/** Status requests from here (root, async client) every gapMs until stop(): a probe of tapd's event loop. */
function statusProber(socket: string, gapMs = 10): { stop: () => Promise<number[]> } {
  const lat: number[] = [];
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
  return {
    stop: async () => {
      on = false;
      await done;
      return lat;
    },
  };
}

async function phaseInterference(daemon: Daemon, user: Worker): Promise<void> {
  progress('4b. does an open wait on another client\'s teardown?');
  const H = QUICK ? 60 : 200;
  const holder = new Worker('holder (uid 65534)', { user: true });
  try {
    // Quiet: nothing else happening.
    let prober = statusProber(daemon.socket);
    const quiet = await user.call('probe_opens', { socket: daemon.socket, network: 'lan', for_ms: QUICK ? 800 : 2000, gap_ms: 20 });
    const quietStatus = await prober.stop();
    await daemon.idle();
    // Another client holds H leases and closes them all (as when a process holding them exits).
    await holder.call('fill', { socket: daemon.socket, network: 'lan', n: H, sync: true });
    await waitUntil(() => daemon.active === H, 30_000, `${H} leases held`);
    const closing = holder.call('close_all', {});
    prober = statusProber(daemon.socket);
    const busy = await user.call('probe_opens', { socket: daemon.socket, network: 'lan', for_ms: H * 11, gap_ms: 20 });
    const busyStatus = await prober.stop();
    const closed = await closing;
    await daemon.idle();
    // The kernel alone, in C, no daemon: TAP creation while another process deletes H TAPs.
    const nFg = QUICK ? 40 : 150;
    const fgQuiet = await qdrive(['ioctl', String(nFg), 'br0']);
    let fg: Promise<QdriveRow[]> | undefined;
    const bgRows = await qdrive(['teardown', String(H), 'br0'], {
      pace: async () => {
        fg ??= sleep(30).then(() => qdrive(['ioctl', String(nFg), 'br0']));
      },
    });
    const fgBusy = await fg!;
    R.teardown_interference = {
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
    };
  } finally {
    await holder.stop();
  }
}

/**
 * The lease journal's cost (src/daemon/leases.ts record()): one appendFileSync of one JSON line
 * per lease change, on tapd's event loop. Replayed here with a real line from the daemon's
 * journal, after a journal as long as the daemon's at N and after a single line.
 */
function journalReplica(journal: string): BenchResults['scale']['lease_journal_append_ms'] {
  const lines = readFileSync(journal, 'utf8').trim().split('\n');
  const one = `${lines[lines.length - 1]}\n`;
  const time = (dir: string, prefill: string): Summary => {
    const file = path.join(dir, 'replica.journal');
    writeFileSync(file, prefill);
    const lat: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      appendFileSync(file, one, { mode: 0o600 });
      lat.push(performance.now() - t0);
    }
    rmSync(file, { force: true });
    return summary(lat);
  };
  const full = `${lines.join('\n')}\n`;
  return {
    leases: lines.length,
    tmpfs_ms_at_n: time(shm, full),
    tmpfs_ms_at_1: time(shm, one),
    ext4_ms_at_n: time(run, full),
    ext4_ms_at_1: time(run, one),
  };
}

async function phaseScale(daemon: Daemon, user: Worker, rootw: Worker, stateDir: string): Promise<void> {
  progress(`5. scale: ${N_SCALE} live leases on br0`);
  const socket = daemon.socket;
  const journal = path.join(stateDir, 'leases.journal');
  const before = {
    leases: N_SCALE,
    daemon_rss_kb_at_start: R.daemon_rss_kb_at_start,
    daemon_rss_kb_before: daemon.rssKb(),
    daemon_threads: procStatus(daemon.pid, 'Threads'),
    client_process_rss_kb: procStatus(user.proc.pid, 'VmRSS'), // node + dist/client + ffi-rs, for scale
    status_ms_at_0: summary((await user.call('status', { socket, n: 20 })).lat),
  };
  const fill = await user.call('fill', { socket, network: 'lan', n: N_SCALE, sync: true });
  await waitUntil(() => daemon.active === N_SCALE, 30_000, `${N_SCALE} leases in the daemon`);
  const atFill = {
    fill_wall_ms: round(fill.wall_ms, 1),
    open_ms_first_50: summary(fill.lat.slice(0, 50)),
    open_ms_last_50: summary(fill.lat.slice(-50)),
    daemon_rss_kb_at_n: daemon.rssKb(),
    state_file_bytes_at_n: statSync(journal).size,
    tun_devices_at_n: tunDevicesInNs().length,
  };
  // Open latency with N live: one more lease at a time, each ended before the next.
  const atN: number[] = [];
  for (let i = 0; i < (QUICK ? 5 : 30); i++) {
    atN.push((await openSettled(user, daemon, true)).ms);
  }
  // The kernel's share: the same ioctls with no daemon, on a bridge with N ports.
  const floorAtN: number[] = [];
  for (let i = 0; i < (QUICK ? 5 : 30); i++) floorAtN.push((await rootw.call('floor', { bridge: 'br0' })).ms);
  const ioctlAtN = summary(floorAtN);
  const journalAppend = journalReplica(journal);
  const statusAtN = summary((await user.call('status', { socket, n: 20 })).lat);

  // Teardown: the holder closes all N fds. Meanwhile the bench probes tapd's event loop with
  // status requests (every 10 ms) and another client opens (sync openTap + close, 50 ms apart).
  // The same two probes run first for a while with the N leases live and nothing else going on.
  const prober2 = new Worker('probe (uid 65534)', { user: true });
  await prober2.call('list', { socket }); // loaded and warm
  let statusProbe = statusProber(socket);
  const quietOpens = await prober2.call('probe_opens', { socket, network: 'lan', for_ms: QUICK ? 500 : 2000, gap_ms: 50 });
  const quietStatus = await statusProbe.stop();
  await waitUntil(() => daemon.active === N_SCALE, 10_000, 'the probe\'s leases to end');
  await sleep(N.settleMs);
  statusProbe = statusProber(socket);
  const closing = user.call('close_all', {});
  const probed = prober2.call('probe_opens', { socket, network: 'lan', for_ms: N_SCALE * 12, gap_ms: 50 });
  const closed = await closing;
  const held = fill.leases;
  await waitUntil(() => held.every((id) => daemon.ended.has(id)), 180_000, `lease_end of all ${N_SCALE} leases`);
  const busyStatus = await statusProbe.stop();
  const duringOpens = (await probed).lat;
  await prober2.stop();
  const lastEnd = Math.max(...held.map((id) => daemon.ended.get(id)!));
  const rssAfter = daemon.rssKb();
  // Nothing left: devices, leases, quota.
  const left = tunDevicesInNs();
  const list = client.requestSync(socket, { op: 'list' }); // root is an admin: sees every lease
  const fresh = await user.call('open_close', { socket, network: 'lan' }).then((r) => daemon.leaseEnded(r.lease).then(() => true), () => false);
  const listed = (list.body.leases as unknown[]).length;
  R.scale = {
    ...before,
    ...atFill,
    ioctl_floor_ms_at_n: ioctlAtN,
    lease_journal_append_ms: journalAppend,
    open_ms_at_n: summary(atN),
    status_ms_at_n: statusAtN,
    other_client_open_ms_at_n_quiet: summary(quietOpens.lat),
    other_client_open_ms_during_teardown: summary(duringOpens),
    status_ms_at_n_quiet: summary(quietStatus),
    status_ms_during_teardown: summary(busyStatus),
    teardown_ms: round(lastEnd - closed.start_epoch_ms, 1),
    holder_close_all_ms: round(closed.ms, 1),
    last_lease_end_after_last_close_ms: round(lastEnd - (closed.start_epoch_ms + closed.ms), 1),
    daemon_rss_kb_after_teardown: rssAfter,
    after_teardown: { tun_devices_left: left.length, list_leases: listed, fresh_open_ok: fresh },
  };
  if (left.length || listed || !fresh) note(`scale: NOT clean after teardown: ${JSON.stringify(R.scale.after_teardown)}`);
}

async function phaseLeaseEnd(daemon: Daemon, user: Worker): Promise<void> {
  progress(`6. lease end → down hook: ${N.end} runs by fd close, ${N.end} by process exit`);
  const downLines = () => readFileSync(DOWN_LOG, 'utf8').trim().split('\n').filter(Boolean);
  const waitDown = async (count: number) => {
    await waitUntil(() => downLines().length >= count, 15_000, 'the down hook');
    return Number(downLines()[count - 1]!.split(' ')[1]) * 1000;
  };
  const byClose: number[] = [];
  const upOpen: number[] = [];
  const closeMs: number[] = [];
  for (let i = 0; i < N.end; i++) {
    const n0 = downLines().length;
    const b = await user.call('burst', { socket: daemon.socket, network: 'hooked', k: 1 });
    if (b.errors.length) throw new Error(`open on hooked: ${b.errors[0]}`);
    upOpen.push(b.lat[0]!);
    await sleep(50);
    const c = await user.call('close_all', {});
    byClose.push((await waitDown(n0 + 1)) - c.start_epoch_ms);
    closeMs.push(c.ms);
    await daemon.idle();
  }
  const byExit: number[] = [];
  for (let i = 0; i < N.end; i++) {
    const n0 = downLines().length;
    const p = spawnIn([NODE, WORKER_JS, DIST, '--hold-and-exit', daemon.socket, 'hooked'], { user: true });
    p.stdin!.end();
    let outText = '';
    p.stdout!.on('data', (d: Buffer) => (outText += d.toString()));
    const { code } = await p.done;
    if (code !== 0) throw new Error(`holder exited ${code}: ${p.stderrText}`);
    const { exit_epoch_ms: exitAt } = JSON.parse(outText.trim().split('\n').pop()!) as { exit_epoch_ms: number };
    byExit.push((await waitDown(n0 + 1)) - exitAt);
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

/** tapd's own count of open connections (the asking one included), from a status request. */
/** The daemon's own memory figures (status's `memory`, process.memoryUsage() in kB). */
interface DaemonMemory { rss_kb: number; heap_used_kb: number; heap_total_kb: number; external_kb: number; array_buffers_kb: number }
async function memoryOf(socket: string): Promise<DaemonMemory> {
  const r = await client.request(socket, { op: 'status' });
  return (r.body.status as { memory: DaemonMemory }).memory;
}

async function connectionsOf(socket: string): Promise<number> {
  const r = await client.request(socket, { op: 'status' });
  return (r.body.status as { connections: number }).connections;
}

function fdCount(pid: number | undefined): number | null {
  try {
    return pid === undefined ? null : readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

/** SO_PEERPIDFD came with Linux 6.5; tapd then holds no pidfd for an idle connection. */
function kernelHasPeerPidfd(): boolean {
  const [major = 0, minor = 0] = os.release().split('.').map((x) => parseInt(x, 10));
  return major > 6 || (major === 6 && minor >= 5);
}

/** The soft RLIMIT_NOFILE of a process (node raises its soft limit to the hard one at start). */
function fdLimitOf(pid: number | undefined): number {
  const m = /^Max open files\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
  if (!m) throw new Error(`no open-files limit in /proc/${pid}/limits`);
  return Number(m[1]);
}

async function phaseIdle(daemon: Daemon, user: Worker): Promise<void> {
  const socket = daemon.socket;
  // Raised for this section only: the limits by a reload, the daemon's fd limit with prlimit.
  const raise = sh('prlimit', [`--pid=${daemon.pid}`, `--nofile=${IDLE.nofile}:${IDLE.nofile}`], { allowFail: true });
  const fdLimit = fdLimitOf(daemon.pid);
  // One fd per connection (two on a kernel without SO_PEERPIDFD), and room for the status and open probes.
  const fdsPerConnection = kernelHasPeerPidfd() ? 1 : 2;
  const fits = Math.floor((fdLimit - (fdCount(daemon.pid) ?? 0) - 64) / fdsPerConnection);
  const per = Math.floor(Math.min(IDLE.connections, fits) / IDLE.uids.length);
  const n = per * IDLE.uids.length;
  if (n < IDLE.connections) {
    note(`idle connections: ${n} instead of ${IDLE.connections}: tapd's fd limit is ${fdLimit} (prlimit to ${IDLE.nofile}: ${(raise.stderr || 'ok').trim().split('\n')[0]}) and each connection takes ${fdsPerConnection === 1 ? 'one' : 'two'}`);
  }
  progress(`7. ${n} idle connections (${IDLE.uids.length} uids × ${per}), request-timeout ${IDLE.requestTimeoutS} s, fd limit ${fdLimit}`);
  const setLimits = (line: string) => {
    writeFileSync(daemon.handle.config, CONFIG.replace(LIMITS, line));
    const r = client.requestSync(socket, { op: 'reload' });
    if (r.body.ok !== true) throw new Error(`reload failed: ${JSON.stringify(r.body)}`);
  };
  setLimits(IDLE_LIMITS);
  const holders = IDLE.uids.map((uid) => new Worker(`idle holder (uid ${uid})`, { user: true, uid }));
  try {
    await Promise.all(holders.map((h) => h.call('list', { socket }))); // loaded, before the baseline
    await sleep(300);
    const before = { rss: daemon.rssKb(), mem: await memoryOf(socket), fds: fdCount(daemon.pid), status: summary((await user.call('status', { socket, n: 20 })).lat) };
    const t0 = performance.now();
    const held = await Promise.all(holders.map((h) => h.call('hold_idle', { socket, n: per, parallel: 16 })));
    const connected = held.reduce((a, h) => a + h.connected, 0);
    // Accepted = counted by tapd; the status request itself is one more.
    await pollUntil(() => connectionsOf(socket), (c) => c >= connected + 1, 60_000, `tapd to count ${connected} connections`);
    const acceptedMs = performance.now() - t0;
    await sleep(300);
    const withConns = { rss: daemon.rssKb(), mem: await memoryOf(socket), fds: fdCount(daemon.pid), threads: procStatus(daemon.pid, 'Threads') };
    const statusHeld = (await user.call('status', { socket, n: 20 })).lat;
    const openHeld: number[] = [];
    for (let i = 0; i < (QUICK ? 3 : 10); i++) {
      openHeld.push((await openSettled(user, daemon, true)).ms);
    }
    const heldS = (performance.now() - t0) / 1000;
    const released = await Promise.all(holders.map((h) => h.call('release_idle', {})));
    const t1 = performance.now();
    await pollUntil(() => connectionsOf(socket), (c) => c === 1, 60_000, 'tapd to count no connection but the asking one');
    const closedMs = performance.now() - t1;
    await sleep(300);
    const after = { rss: daemon.rssKb(), mem: await memoryOf(socket), fds: fdCount(daemon.pid) };
    // Bytes per held connection of a figure's growth (kB before → with).
    const perConn = (b: number | null, w: number | null) => (b === null || w === null || connected === 0 ? null : Math.round(((w - b) * 1024) / connected));
    const refused = released.reduce((a, r) => a + r.refused, 0);
    const failed = held.reduce((a, h) => a + h.failed, 0);
    const firstRefusal = released.find((r) => r.first_refusal)?.first_refusal;
    const firstError = held.find((h) => h.first_error)?.first_error;
    R.idle_connections = {
      connections: connected,
      connections_goal: IDLE.connections,
      daemon_fd_limit: fdLimit,
      uids: IDLE.uids.length,
      request_timeout_s: IDLE.requestTimeoutS,
      held_s: round(heldS, 1),
      connect_failed: failed,
      connect_retries: held.reduce((a, h) => a + h.retries, 0),
      refused,
      all_accepted_after_ms: round(acceptedMs, 1),
      all_closed_after_ms: round(closedMs, 1),
      daemon_rss_kb_before: before.rss,
      daemon_rss_kb_with: withConns.rss,
      daemon_rss_kb_after: after.rss,
      growth_kb: before.rss !== null && withConns.rss !== null ? withConns.rss - before.rss : null,
      daemon_fds_before: before.fds,
      daemon_fds_with: withConns.fds,
      daemon_fds_after: after.fds,
      daemon_threads_with: withConns.threads,
      fds_per_connection: before.fds === null || withConns.fds === null || connected === 0 ? null : round((withConns.fds - before.fds) / connected, 2),
      // The daemon's own view (status memory): V8's heap apart from the rest.
      heap_used_kb_before: before.mem.heap_used_kb, heap_used_kb_with: withConns.mem.heap_used_kb, heap_used_kb_after: after.mem.heap_used_kb,
      heap_total_kb_before: before.mem.heap_total_kb, heap_total_kb_with: withConns.mem.heap_total_kb, heap_total_kb_after: after.mem.heap_total_kb,
      external_kb_before: before.mem.external_kb, external_kb_with: withConns.mem.external_kb, external_kb_after: after.mem.external_kb,
      rss_bytes_per_connection: perConn(before.rss, withConns.rss),
      heap_used_bytes_per_connection: perConn(before.mem.heap_used_kb, withConns.mem.heap_used_kb),
      heap_total_bytes_per_connection: perConn(before.mem.heap_total_kb, withConns.mem.heap_total_kb),
      external_bytes_per_connection: perConn(before.mem.external_kb, withConns.mem.external_kb),
      // What RSS grew by outside V8's heap (libuv handles, malloc, kernel-side nothing: RSS is ours).
      outside_heap_bytes_per_connection: perConn(before.rss === null ? null : before.rss - before.mem.heap_total_kb, withConns.rss === null ? null : withConns.rss - withConns.mem.heap_total_kb),
      status_ms_before: before.status,
      status_ms_while_held: summary(statusHeld),
      open_ms_while_held: summary(openHeld),
      ...(firstRefusal ? { first_refusal: firstRefusal } : {}),
      ...(firstError ? { first_connect_error: firstError } : {}),
    };
    if (refused || failed) note(`idle connections: ${failed} failed to connect, ${refused} refused or dropped by tapd${firstRefusal ? ` (first: ${firstRefusal})` : ''}`);
  } finally {
    await Promise.all(holders.map((h) => h.stop()));
    setLimits(LIMITS);
  }
  R.methodology.idle_connections = `${IDLE.uids.length} processes (uids ${IDLE.uids.join(', ')}) each open ${per} connections to tapd that send nothing (16 connecting at a time per process), and hold them; for this section tapd's config is reloaded with ${IDLE_LIMITS} and its fd limit raised with prlimit to ${IDLE.nofile}; the connections are held for well under the request-timeout; RSS read 300 ms after tapd's status counts them all, and 300 ms after it counts none, each with status's memory (process.memoryUsage(): V8 heap used and total, external); per-connection bytes = growth before → with ÷ connections, outside_heap = RSS minus heap total; while held, 20 status requests and a few opens by another uid-65534 client`;
}

// ---------------------------------------------------------------- main

// Variables that change every Node process's start-up, whatever it runs: NODE_EXTRA_CA_CERTS
// makes Node read and parse that CA file at start (about 30 ms for Debian's bundle), which would
// inflate node -e 0 and every Node row alike. They are not in a systemd unit's environment
// either. Unset for everything the bench starts, and said in the methodology and table 2.
const STARTUP_ENV = ['NODE_EXTRA_CA_CERTS', 'NODE_OPTIONS', 'NODE_COMPILE_CACHE'];
const unsetEnv = STARTUP_ENV.filter((k) => process.env[k] !== undefined);
for (const k of unsetEnv) delete process.env[k];

let status = 0;
try {
  // Methodology, not a note: notes are what went wrong or was skipped.
  if (unsetEnv.length) R.methodology.node_env = `unset for every process the bench starts, since they change every Node start-up: ${unsetEnv.join(', ')}`;
  setup();
  R.machine = machine();
  const mainState = path.join(shm, 'main');
  const daemon = await Daemon.start('tapd', mainState);
  await sleep(500);
  R.daemon_rss_kb_at_start = daemon.rssKb();
  const user = new Worker('client (uid 65534)', { user: true });
  const rootw = new Worker('ioctl floor (root)', { user: false });
  const t0 = Date.now();
  const rss = (label: string) => (R.daemon_rss_kb_after_section[label] = daemon.rssKb());
  R.daemon_rss_kb_after_section.start = R.daemon_rss_kb_at_start;
  await phaseOpen(daemon, user, rootw);
  rss('1_open');
  await phaseCommands(daemon);
  rss('2_commands');
  await phaseCold(user);
  await phaseConcurrency(daemon, user);
  rss('4_concurrency');
  await phaseInterference(daemon, user);
  rss('4b_interference');
  await phaseScale(daemon, user, rootw, mainState);
  rss('5_scale');
  await phaseLeaseEnd(daemon, user);
  rss('6_lease_end');
  await phaseIdle(daemon, user);
  rss('7_idle_connections');
  R.bench_seconds = round((Date.now() - t0) / 1000, 1);
  await user.stop();
  await rootw.stop();
  await daemon.stop();
  const leftover = tunDevicesInNs();
  if (leftover.length) note(`left in the namespace at the end: ${leftover.join(' ')}`);
  const missing = missingFigures(R);
  if (missing.length) note(`figures missing from this run: ${missing.join(', ')}`);
  mkdirSync(path.dirname(OUT), { recursive: true });
  writeFileSync(OUT, `${JSON.stringify(R, null, 2)}\n`);
  process.stdout.write(`${renderReport(R, N)}\n\nbench took ${R.bench_seconds} s; results in ${process.env.TAPD_BENCH_OUT || 'bench/results.json'}\n`);
} catch (err) {
  console.error(`bench failed: ${(err as Error).stack ?? String(err)}`);
  status = 1;
} finally {
  await cleanup();
}
process.exit(status);
