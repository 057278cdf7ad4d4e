// Test plumbing: network namespaces we create and delete, and a real tapd running inside one.
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chownSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { duplicateKeys } from './json-keys.js';

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
export const DIST = path.join(ROOT, 'dist');
export const NOBODY = 65534;
export const TAPD_JS = path.join(DIST, 'cli/tapd.js');

/** node's arguments to run the daemon as installed: the flags on tapd.js's first line, then the script. */
export function tapdNodeArgs(): string[] {
  const first = readFileSync(TAPD_JS, 'utf8').split('\n', 1)[0]!;
  const m = /^#!\/usr\/bin\/env -S node((?: --[\w-]+(?:=\S+)?)*)$/.exec(first);
  if (!m) throw new Error(`${TAPD_JS}: first line is not '#!/usr/bin/env -S node --flags...': ${first}`);
  return [...m[1]!.trim().split(' ').filter(Boolean), TAPD_JS];
}

export function sh(cmd: string, args: string[], input?: string): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', input, timeout: 60_000 });
}

function must(cmd: string, args: string[]): string {
  const r = sh(cmd, args);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr || r.stdout}`);
  return r.stdout;
}

/** A network namespace of our own, named tapd-test-<prefix>-<random>. */
export class Netns {
  readonly name: string;

  private constructor(name: string) {
    this.name = name;
  }

  /** A namespace someone else made (and will delete), e.g. the sandbox LAN's host. */
  static attach(name: string): Netns {
    return new Netns(name);
  }

  static create(prefix: string): Netns {
    return Netns.createNamed(`tapdt-${prefix}-${randomBytes(3).toString('hex')}`.slice(0, 30));
  }

  /** A namespace with exactly this name (the caller picked it, e.g. so a shell trap can delete it); lo up. */
  static createNamed(name: string): Netns {
    must('ip', ['netns', 'add', name]);
    const ns = new Netns(name);
    try {
      ns.run('ip', ['link', 'set', 'lo', 'up']);
    } catch (err) {
      ns.destroy();
      throw err;
    }
    return ns;
  }

  /** An up bridge, with a fixed MAC when given (else it takes its lowest port's). */
  addBridge(name: string, mac?: string): void {
    this.run('ip', ['link', 'add', name, ...(mac ? ['address', mac] : []), 'type', 'bridge']);
    this.run('ip', ['link', 'set', name, 'up']);
  }

  /** Runs a command inside the namespace; throws on failure. */
  run(cmd: string, args: string[]): string {
    return must('ip', ['netns', 'exec', this.name, cmd, ...args]);
  }

  /** Runs a command inside the namespace; returns the whole result. */
  exec(cmd: string, args: string[], opts: { uid?: number; gid?: number; groups?: number[]; input?: string; env?: Record<string, string> } = {}): SpawnSyncReturns<string> {
    return spawnSync('ip', ['netns', 'exec', this.name, ...asUser(opts), cmd, ...args], {
      encoding: 'utf8', input: opts.input, timeout: 60_000, env: { ...process.env, ...opts.env },
    });
  }

  /**
   * Starts a command inside the namespace. `ip netns exec` and setpriv exec, so the child's pid is
   * the command's own. stdin is ignored unless `stdin: 'pipe'`.
   */
  spawn(cmd: string, args: string[], opts: { uid?: number; gid?: number; groups?: number[]; env?: Record<string, string>; stdin?: 'pipe' | 'ignore'; cwd?: string } = {}): ChildProcess {
    return spawn('ip', ['netns', 'exec', this.name, ...asUser(opts), cmd, ...args], {
      stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env }, cwd: opts.cwd,
    });
  }

  links(): Array<{ ifname: string; ifindex: number; master?: string; mtu: number; address: string; linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> } }> {
    return JSON.parse(this.run('ip', ['-d', '-j', 'link', 'show']));
  }

  link(name: string) {
    return this.links().find((l) => l.ifname === name);
  }

  destroy(): void {
    sh('ip', ['netns', 'del', this.name]);
  }
}

/** setpriv prefix to run as an unprivileged user for real. */
export function asUser(opts: { uid?: number; gid?: number; groups?: number[] }): string[] {
  if (opts.uid === undefined) return [];
  const gid = opts.gid ?? opts.uid;
  const groups = opts.groups && opts.groups.length ? ['--groups', opts.groups.join(',')] : ['--clear-groups'];
  return ['setpriv', '--reuid', String(opts.uid), '--regid', String(gid), ...groups, '--'];
}

/** A private directory (tapd-<prefix>-XXXXXX in `parent`, default the temp dir) that uid 65534 can traverse (for sockets) but not write. */
export function tempDir(prefix: string, parent: string = os.tmpdir()): string {
  const dir = mkdtempSync(path.join(parent, `tapd-${prefix}-`));
  chmodSync(dir, 0o755);
  return dir;
}

export interface DaemonHandle {
  dir: string;
  socket: string;
  stateDir: string;
  config: string;
  proc: ChildProcess;
  log(): string;
  events(): Array<Record<string, unknown>>;
  stop(): Promise<void>;
  kill9(): Promise<void>;
  restart(): Promise<void>;
  /** Waits until a log line with this event (and matching fields) appears. */
  waitFor(event: string, match?: Record<string, unknown>, timeoutMs?: number): Promise<Record<string, unknown>>;
}

export interface StartTapdOptions {
  configMode?: number;
  extraArgs?: string[];
  /** Where the daemon's own dir (config, socket, state) is made; default the temp dir. */
  parent?: string;
  /** The state dir (e.g. on tmpfs, like /run/tapd); default <dir>/state. Not removed by stop(). */
  stateDir?: string;
  /** --log-level; default debug. */
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** A command the daemon runs under, e.g. ['systemd-socket-activate', '-l', '@DIR@/tapd.sock']; @DIR@ as in config. */
  wrap?: string[];
  /** Wait for "started" (default); false for a socket-activated daemon, which starts at the first connect. */
  waitStarted?: boolean;
  /** Called with each launch's pid as soon as it is spawned (the bench records them for its shell trap). */
  onSpawn?: (pid: number) => void;
  /** Called with each complete line the daemon writes to stdout, as it arrives. */
  onLine?: (line: string) => void;
}

/** Writes `files` (path relative to the daemon dir → [content, mode]) and starts tapd in `ns`. */
export async function startTapd(ns: Netns, config: string, files: Record<string, [string, number]> = {},
  opts: StartTapdOptions = {}): Promise<DaemonHandle> {
  const dir = tempDir('daemon', opts.parent);
  for (const [rel, [content, mode]] of Object.entries(files)) {
    const p = path.join(dir, rel);
    mkdirSync(path.dirname(p), { recursive: true, mode: 0o755 });
    writeFileSync(p, content.replaceAll('@DIR@', dir), { mode });
    chmodSync(p, mode);
    chownSync(p, 0, 0);
  }
  const configPath = path.join(dir, 'tapd.conf');
  writeFileSync(configPath, config.replaceAll('@DIR@', dir), { mode: 0o644 });
  chmodSync(configPath, opts.configMode ?? 0o644);
  const socket = path.join(dir, 'tapd.sock');
  const stateDir = opts.stateDir ?? path.join(dir, 'state');
  let out = '';
  let proc!: ChildProcess;
  const launch = async () => {
    const argv = ['node', ...tapdNodeArgs(), '--config', configPath, '--socket', socket, '--state-dir', stateDir,
      '--log-level', opts.logLevel ?? 'debug', ...(opts.extraArgs ?? [])];
    const [cmd, ...args] = [...(opts.wrap ?? []).map((a) => a.replaceAll('@DIR@', dir)), ...argv];
    proc = ns.spawn(cmd!, args);
    if (proc.pid !== undefined) opts.onSpawn?.(proc.pid);
    // Only this launch's output counts (a restart follows an earlier "started").
    const from = out.length;
    let partial = '';
    proc.stdout!.on('data', (d: Buffer) => {
      const text = d.toString();
      out += text;
      if (!opts.onLine) return;
      const lines = (partial + text).split('\n');
      partial = lines.pop()!;
      for (const l of lines) opts.onLine(l);
    });
    proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    if (opts.waitStarted === false) return;
    const started = () => out.slice(from).includes('"event":"started"');
    await until(() => started() || proc.exitCode !== null, 15_000);
    if (!started()) throw new Error(`tapd did not start:\n${out.slice(from)}`);
  };
  try {
    await launch();
  } catch (err) {
    proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const exited = () => new Promise<void>((resolve) => (proc.exitCode !== null || proc.signalCode !== null ? resolve() : proc.once('exit', () => resolve())));
  const handle: DaemonHandle = {
    dir, socket, stateDir, config: configPath,
    get proc() {
      return proc;
    },
    log: () => out,
    // Every record read is also checked for a key twice (journald and jq would show both).
    events: () => out.split('\n').filter((l) => l.startsWith('{')).map((l) => {
      const dups = duplicateKeys(l);
      if (dups.length) throw new Error(`tapd wrote a record with ${dups.join(', ')} twice: ${l}`);
      return JSON.parse(l) as Record<string, unknown>;
    }),
    async stop() {
      // `ip netns exec` execs node, so this pid is the daemon itself. A daemon that does not end
      // on SIGTERM within 10 s is killed, so a hung one cannot outlive its test or the bench.
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited();
      clearTimeout(timer);
      rmSync(dir, { recursive: true, force: true });
    },
    async kill9() {
      proc.kill('SIGKILL');
      await exited();
    },
    async restart() {
      await launch();
    },
    async waitFor(event, match = {}, timeoutMs = 10_000) {
      let found: Record<string, unknown> | undefined;
      await until(() => {
        found = handle.events().find((e) => e.event === event && Object.entries(match).every(([k, v]) => e[k] === v));
        return found !== undefined;
      }, timeoutMs);
      if (!found) throw new Error(`no ${event} ${JSON.stringify(match)} in tapd log:\n${out}`);
      return found;
    },
  };
  return handle;
}

export async function until(cond: () => boolean, timeoutMs: number, stepMs = 25): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return cond();
}

export function readText(p: string): string {
  return readFileSync(p, 'utf8');
}

/** Runs test/fixtures/client.mjs in `ns` as `user`; returns its JSON lines. */
export function client(ns: Netns, socket: string, steps: unknown[], user: { uid?: number; gid?: number; groups?: number[] } = { uid: NOBODY }): Array<Record<string, unknown>> {
  const r = ns.exec('node', [path.join(ROOT, 'test/fixtures/client.mjs'), socket, JSON.stringify(steps)], user);
  if (r.status !== 0) throw new Error(`client failed (${r.status}): ${r.stderr}`);
  return r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** A 60-byte broadcast Ethernet frame (hex) from `srcMac` with ethertype 0x88b5 and a short marker (< 16 bytes). */
export function testFrame(srcMac: string, marker: string): string {
  return 'ffffffffffff' + srcMac.replaceAll(':', '') + '88b5' + Buffer.from(marker).toString('hex').padEnd(92, '0');
}

/**
 * Starts tcpdump for one frame of ethertype 0x88b5 on `iface` in `ns`; resolves once it listens.
 * `seen()` waits (up to 10 s) for the frame or gives up, and returns what tcpdump printed.
 */
export async function captureOne(ns: Netns, iface: string): Promise<{ seen: () => Promise<string> }> {
  const dump = spawn('ip', ['netns', 'exec', ns.name, 'tcpdump', '-i', iface, '-n', '-e', '-c', '1', '--immediate-mode', '-l', 'ether proto 0x88b5'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  dump.stdout!.on('data', (x: Buffer) => (out += x.toString()));
  dump.stderr!.on('data', (x: Buffer) => (err += x.toString()));
  const closed = new Promise((r) => dump.once('close', r));
  await until(() => err.includes('listening') || dump.exitCode !== null, 10_000);
  return {
    async seen() {
      await Promise.race([closed, new Promise((r) => setTimeout(r, 10_000))]);
      if (dump.exitCode === null) {
        dump.kill();
        await closed;
      }
      return out;
    },
  };
}
