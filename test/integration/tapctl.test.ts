// tapctl against a real tapd in a namespace of our own, with a fake emulator
// (test/fixtures/tapctl/fake-emulator.sh) that reports its argv, fds, TAPs and identity.
// Needs root and a build (npx tsc -p tsconfig.json). Clients run as uid 65534.
import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIST, NOBODY, Netns, ROOT, asUser, startTapd, tempDir, until, type DaemonHandle } from '../helpers/netns.js';

const TAPCTL = path.join(DIST, 'cli/tapctl.js');
const FAKE = path.join(ROOT, 'test/fixtures/tapctl/fake-emulator.sh');

// The bridges exist before tapd starts, with a fixed low MAC, so that no generated MAC can
// collide with the bridge's own address rules (how tapd picks a created bridge's MAC is tested elsewhere).
const CONFIG = `
network lan bridge br0
network other bridge br1
network stp bridge br2
network hooked bridge br3 up @DIR@/hooks/up down @DIR@/hooks/up
permit @nogroup on lan leases 4 queues 4 mac mtu vhost
permit @nogroup on stp leases 2
permit @nogroup on hooked
permit root on any
`;
// An up hook that takes a moment: the open waits for it (a pending frame first).
const UP_HOOK = '#!/bin/sh\nsleep 1\nexit 0\n';

let ns: Netns;
let daemon: DaemonHandle;
let work: string;
let outDir: string;
let seq = 0;

beforeAll(async () => {
  ns = Netns.create('tapctl');
  ns.addBridge('br0', '02:00:00:00:00:01');
  ns.addBridge('br1', '02:00:00:00:00:02');
  ns.addBridge('br2', '02:00:00:00:00:03');
  ns.run('ip', ['link', 'set', 'br2', 'type', 'bridge', 'stp_state', '1']);
  ns.addBridge('br3', '02:00:00:00:00:04');
  daemon = await startTapd(ns, CONFIG, { 'hooks/up': [UP_HOOK, 0o755] });
  work = tempDir('tapctl');
  outDir = path.join(work, 'out');
  mkdirSync(outDir, { mode: 0o755 });
  chownSync(outDir, NOBODY, NOBODY);
});

afterAll(async () => {
  await daemon?.stop();
  ns?.destroy();
  if (work) rmSync(work, { recursive: true, force: true });
});

interface User { uid?: number; gid?: number; groups?: number[] }
const nobody: User = { uid: NOBODY };

interface Run {
  proc: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** tapctl in the namespace, as `user`, with extra env; stdio beyond 0-2 as given. */
function tapctl(args: string[], opts: { user?: User; env?: Record<string, string>; extraStdio?: (number | 'ignore')[] } = {}): Run {
  const proc = spawn('ip', ['netns', 'exec', ns.name, ...asUser(opts.user ?? nobody), 'node', TAPCTL, '--socket', daemon.socket, ...args], {
    stdio: ['ignore', 'pipe', 'pipe', ...(opts.extraStdio ?? [])],
    env: { ...process.env, ...opts.env },
  });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.on('exit', (code, signal) => resolve({ code, signal }));
  });
  return { proc, stdout: () => out, stderr: () => err, done };
}

async function tapctlDone(args: string[], opts: Parameters<typeof tapctl>[1] = {}) {
  const r = tapctl(args, opts);
  const { code, signal } = await r.done;
  // stdout/stderr may trail the exit a little.
  await new Promise<void>((resolve) => (r.proc.stdout!.readableEnded ? resolve() : r.proc.stdout!.once('end', () => resolve())));
  return { code, signal, stdout: r.stdout(), stderr: r.stderr() };
}

interface Report {
  argv: string[];
  /** fd → target, ls's own directory fd removed */
  fds: Map<number, string>;
  taps: Map<number, string>;
  id: { uid: number; gid: number; groups: number[] };
  env: Record<string, string>;
  pid: number;
}

function parseReport(text: string): Report {
  const r: Report = { argv: [], fds: new Map(), taps: new Map(), id: { uid: -1, gid: -1, groups: [] }, env: {}, pid: -1 };
  for (const line of text.split('\n')) {
    const [kind, ...rest] = line.split(' ');
    if (kind === 'ARGV') r.argv = rest;
    else if (kind === 'FD' && !/^\/proc\/\d+\/fd$/.test(rest[1] ?? '')) r.fds.set(Number(rest[0]), rest[1] ?? '');
    else if (kind === 'TAP') r.taps.set(Number(rest[0]), rest[1] ?? '');
    else if (kind === 'ID') r.id = { uid: Number(rest[0]), gid: Number(rest[1]), groups: rest.slice(2).map(Number) };
    else if (kind === 'ENV') {
      const kv = rest.join(' ');
      r.env[kv.slice(0, kv.indexOf('='))] = kv.slice(kv.indexOf('=') + 1);
    } else if (kind === 'PID') r.pid = Number(rest[0]);
  }
  return r;
}

function fakeEnv(mode: string, extra: Record<string, string> = {}): { env: Record<string, string>; out: string } {
  const out = path.join(outDir, `report-${++seq}`);
  return { out, env: { FAKE_OUT: out, FAKE_MODE: mode, ...extra } };
}

async function report(out: string): Promise<Report> {
  expect(await until(() => existsSync(out), 10_000)).toBe(true);
  return parseReport(readFileSync(out, 'utf8'));
}

function taps(): string[] {
  return ns.links().filter((l) => l.linkinfo?.info_kind === 'tun').map((l) => l.ifname);
}

async function leases(user: User = nobody): Promise<Array<Record<string, unknown>>> {
  const r = await tapctlDone(['list', '--json'], { user });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Array<Record<string, unknown>>;
}

async function noTapsLeft(): Promise<void> {
  expect(await until(() => taps().length === 0, 5000)).toBe(true);
  expect(await until(() => daemon.events().filter((e) => e.event === 'lease_start').length
    === daemon.events().filter((e) => e.event === 'lease_end').length, 5000)).toBe(true);
}

function killFake(pid: number, signal: NodeJS.Signals = 'SIGTERM'): void {
  try {
    process.kill(pid, signal);
  } catch {
    // gone
  }
}

describe('tapctl run', () => {
  it('runs CMD -t 3 ARGS with a TAP at fd 3 and nothing else beyond stdio', async () => {
    // An fd without CLOEXEC that tapctl inherits (as from a careless parent) must not reach the command.
    const leak = openSync(FAKE, 'r');
    try {
      const { out, env } = fakeEnv('exit');
      const r = await tapctlDone(['run', '-b', 'lan', '--', FAKE, '-m', '64', '--', 'x y'], {
        env, extraStdio: ['ignore', 'ignore', 'ignore', 'ignore', 'ignore', 'ignore', leak],
      });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toBe('');
      const rep = await report(out);
      expect(rep.argv).toEqual(['-t', '3', '-m', '64', '--', 'x', 'y']);
      expect([...rep.fds.keys()].sort((a, b) => a - b)).toEqual([0, 1, 2, 3]);
      expect(rep.fds.get(3)).toBe('/dev/net/tun');
      expect(rep.taps.get(3)).toMatch(/^tap[0-9a-f]{8}$/);
      expect(rep.id.uid).toBe(NOBODY);
      expect(rep.env.TAPCTL_FD).toBe('3');
      expect(rep.env.TAPCTL_MAC).toMatch(/^52:54:00(:[0-9a-f]{2}){3}$/);
      expect(rep.env.TAPCTL_IFNAME).toBe(rep.taps.get(3));
      await noTapsLeft();
    } finally {
      closeSync(leak);
    }
  });

  it('--queues and --nic: one -t per NIC, a multiqueue TAP as 3:4:5:6', async () => {
    const { out, env } = fakeEnv('exit');
    const r = await tapctlDone(['run', '-b', 'lan', '--queues', '4', '--nic', 'b=br0', '--', FAKE], { env });
    expect(r.code, r.stderr).toBe(0);
    const rep = await report(out);
    expect(rep.argv).toEqual(['-t', '3:4:5:6', '-t', '7']);
    expect([...rep.fds.keys()].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    const first = rep.taps.get(3);
    expect([4, 5, 6].map((fd) => rep.taps.get(fd))).toEqual([first, first, first]);
    expect(rep.taps.get(7)).not.toBe(first);
    expect(rep.env.TAPCTL_MACS!.split(' ')).toHaveLength(2);
    await noTapsLeft();
  });
});

describe('tapctl qemu', () => {
  it('passes -netdev tap,fd=3 and -device with the lease MAC; vnet_hdr TAP for virtio', async () => {
    const { out, env } = fakeEnv('wait');
    const run = tapctl(['qemu', '-b', 'lan', '--qemu', FAKE, '--', '-m', '64', '-nographic'], { env });
    const rep = await report(out);
    try {
      const [lease] = await leases();
      expect(lease).toBeDefined();
      expect(rep.argv).toEqual(['-netdev', 'tap,id=net0,fd=3', '-device', `virtio-net-pci,netdev=net0,mac=${String(lease!.mac)}`, '-m', '64', '-nographic']);
      expect([...rep.fds.keys()].sort((a, b) => a - b)).toEqual([0, 1, 2, 3]);
      expect(rep.taps.get(3)).toBe(lease!.ifname);
      expect(lease!.vnet_hdr).toBe(true);
      const link = ns.link(String(lease!.ifname));
      expect(link?.master).toBe('br0');
      expect(link?.linkinfo?.info_data).toMatchObject({ type: 'tap', vnet_hdr: true });
    } finally {
      killFake(rep.pid);
    }
    expect((await run.done).signal).toBe('SIGTERM');
    await noTapsLeft();
    expect(await leases()).toEqual([]);
  });

  it('several NICs and models, multiqueue, a MAC of our own', async () => {
    const { out, env } = fakeEnv('exit');
    const r = await tapctlDone([
      'qemu', '-b', 'lan', '--queues', '4', '--mac', '52:54:00:12:34:56', '--nic', 'b=br0,model=e1000,id=e0',
      '--nic', 'model=rtl8139', '--qemu', FAKE, '--', '-m', '64',
    ], { env });
    expect(r.code, r.stderr).toBe(0);
    const rep = await report(out);
    expect(rep.argv.slice(0, 4)).toEqual(['-netdev', 'tap,id=net0,fds=3:4:5:6', '-device', 'virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,mq=on,vectors=10']);
    expect(rep.argv[4]).toBe('-netdev');
    expect(rep.argv[5]).toBe('tap,id=e0,fd=7');
    expect(rep.argv[7]).toMatch(/^e1000,netdev=e0,mac=52:54:00(:[0-9a-f]{2}){3}$/);
    expect(rep.argv[9]).toBe('tap,id=net2,fd=8');
    expect(rep.argv[11]).toMatch(/^rtl8139,netdev=net2,mac=52:54:00/);
    expect(rep.argv.slice(12)).toEqual(['-m', '64']);
    expect([...rep.fds.keys()].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(new Set([...rep.taps.values()]).size).toBe(3);
    await noTapsLeft();
  });

  it('tapctl becomes the emulator: one process, the lease\'s pid, signals straight to it', async () => {
    const { out, env } = fakeEnv('wait');
    const run = tapctl(['qemu', '-b', 'lan', '--qemu', FAKE], { env });
    const rep = await report(out);
    try {
      // ip netns exec and setpriv exec too: the pid we spawned is tapctl's, now the emulator's.
      expect(rep.pid).toBe(run.proc.pid);
      expect(readFileSync(`/proc/${rep.pid}/comm`, 'utf8').trim()).not.toBe('node');
      const [lease] = await leases();
      expect(lease!.pid).toBe(rep.pid);
      // Nothing ignored or blocked that Node had (SIGPIPE, SIGXFSZ).
      const status = readFileSync(`/proc/${rep.pid}/status`, 'utf8');
      expect(status).toMatch(/^SigIgn:\s+0+$/m);
      expect(status).toMatch(/^SigBlk:\s+0+$/m);
    } finally {
      killFake(rep.pid, 'SIGKILL');
    }
    expect((await run.done).signal).toBe('SIGKILL');
    await noTapsLeft();
    expect(await leases()).toEqual([]);
  });

  it('exits with the emulator\'s status, 128+N when it is killed', async () => {
    const a = fakeEnv('exit', { FAKE_EXIT: '7' });
    expect((await tapctlDone(['qemu', '-b', 'lan', '--qemu', FAKE], { env: a.env })).code).toBe(7);
    // Killed, the emulator is the process the shell waits for: it sees the signal itself (137 in sh).
    const b = fakeEnv('wait');
    const run = tapctl(['qemu', '-b', 'lan', '--qemu', FAKE], { env: b.env });
    const rep = await report(b.out);
    killFake(rep.pid, 'SIGKILL');
    expect((await run.done).signal).toBe('SIGKILL');
    await noTapsLeft();
  });

  it.each([
    ['SIGINT', 40],
    ['SIGTERM', 41],
    ['SIGHUP', 42],
  ] as const)('forwards %s to the emulator', async (signal, status) => {
    const { out, env } = fakeEnv('trap');
    const run = tapctl(['qemu', '-b', 'lan', '--qemu', FAKE], { env });
    expect(await until(() => existsSync(`${out}.ready`), 10_000)).toBe(true);
    run.proc.kill(signal);
    const { code } = await run.done;
    expect(code, run.stderr()).toBe(status);
    expect(readFileSync(`${out}.sig`, 'utf8').trim()).toBe(`GOT ${signal.slice(3)}`);
    await noTapsLeft();
  });

  it('under sudo: asks for SUDO_UID and runs the emulator as that user, groups included', async () => {
    const { out, env } = fakeEnv('exit');
    const before = daemon.events().length;
    const leak = openSync(FAKE, 'r');
    const r = await tapctlDone(['qemu', '-b', 'lan', '--qemu', FAKE], {
      user: {}, env: { ...env, SUDO_UID: String(NOBODY), SUDO_GID: String(NOBODY), SUDO_USER: 'nobody' },
      extraStdio: ['ignore', 'ignore', 'ignore', 'ignore', 'ignore', 'ignore', leak],
    }).finally(() => closeSync(leak));
    expect(r.code, r.stderr).toBe(0);
    const rep = await report(out);
    expect(rep.id).toEqual({ uid: NOBODY, gid: NOBODY, groups: [NOBODY] });
    expect([...rep.fds.keys()].sort((a, b) => a - b)).toEqual([0, 1, 2, 3]);
    expect(rep.taps.get(3)).toMatch(/^tap[0-9a-f]{8}$/);
    const started = daemon.events().slice(before).find((e) => e.event === 'lease_start');
    expect(started).toMatchObject({ uid: NOBODY });
    await noTapsLeft();
  });

  it('a user without permission: exit 1, tapd\'s message on one line, no emulator, no device', async () => {
    const { out, env } = fakeEnv('exit');
    const check = await tapctlDone(['check', '-b', 'other']);
    expect(check.code).toBe(1);
    expect(check.stdout).toMatch(/^not allowed: .+\n$/);
    const reason = check.stdout.slice('not allowed: '.length).trim();
    const r = await tapctlDone(['qemu', '-b', 'other', '--qemu', FAKE], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`tapctl: ${reason}\n`);
    expect(existsSync(out)).toBe(false);
    expect(taps()).toEqual([]);
  });

  it('a refused second NIC releases the first', async () => {
    const { out, env } = fakeEnv('exit');
    const r = await tapctlDone(['qemu', '-b', 'lan', '--nic', 'b=other', '--qemu', FAKE], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^tapctl: [^\n]+\n$/);
    expect(existsSync(out)).toBe(false);
    await noTapsLeft();
  });

  it('--vhost: vhost=on when /dev/vhost-net is usable, else 125 before QEMU would abort', async () => {
    const { out, env } = fakeEnv('exit');
    const usable = ns.exec('test', ['-r', '/dev/vhost-net', '-a', '-w', '/dev/vhost-net'], nobody).status === 0;
    const r = await tapctlDone(['qemu', '-b', 'lan', '--vhost', '--qemu', FAKE], { env });
    if (usable) {
      expect(r.code, r.stderr).toBe(0);
      expect((await report(out)).argv[1]).toBe('tap,id=net0,fd=3,vhost=on');
    } else {
      expect(r.code).toBe(125);
      expect(r.stderr).toMatch(/^tapctl: --vhost: \/dev\/vhost-net is missing or not read-write for you/);
      expect(existsSync(out)).toBe(false);
    }
    await noTapsLeft();
  });

  it('tapd not running: exit 2 and a clear message', async () => {
    const r = await tapctlDone(['--socket', path.join(work, 'nothing.sock'), 'qemu', '-b', 'lan', '--qemu', FAKE]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^tapctl: tapd is not running \(no daemon at .*nothing\.sock\)[^\n]*\n$/);
  });

  it('an emulator that is not there: 127, and the lease is gone', async () => {
    const r = await tapctlDone(['qemu', '-b', 'lan', '--qemu', path.join(work, 'no-such-qemu')]);
    expect(r.code).toBe(127);
    expect(r.stderr).toMatch(/^tapctl: cannot run .*no-such-qemu: not found\n$/);
    await noTapsLeft();
  });

  it('usage errors: exit 1, one line, nothing asked of tapd', async () => {
    const before = daemon.events().length;
    for (const args of [
      ['qemu', '--nic', 'b=lan,colour=red', '--qemu', FAKE],
      ['qemu', '-b', 'lan', '--model', 'e1000', '--queues', '2', '--qemu', FAKE],
      ['qemu', '-b', 'lan', '--redir', 'tcp:5022::22', '--qemu', FAKE],
      ['qemu', '--user-net', '--redir', 'tcp:5022:22', '--qemu', FAKE],
      ['qemu', '-b', 'lan', '-m', '64'],
      ['run', '-b', 'lan'],
    ]) {
      const r = await tapctlDone(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr, args.join(' ')).toMatch(/^tapctl: [^\n]+\n$/);
    }
    expect(daemon.events().slice(before).filter((e) => e.event === 'lease_start')).toEqual([]);
  });

  it('--user-net needs no tapd and translates --redir', async () => {
    const { out, env } = fakeEnv('exit');
    const r = await tapctlDone(['--socket', path.join(work, 'nothing.sock'), 'qemu', '--user-net', '--redir', 'tcp:5022::22',
      '--redir', 'udp:5353:10.0.2.15:53', '--model', 'e1000', '--qemu', FAKE, '--', '-m', '64'], { env });
    expect(r.code, r.stderr).toBe(0);
    const rep = await report(out);
    expect(rep.argv).toEqual(['-netdev', 'user,id=net0,hostfwd=tcp::5022-:22,hostfwd=udp::5353-10.0.2.15:53', '-device', 'e1000,netdev=net0', '-m', '64']);
    expect([...rep.fds.keys()].sort((a, b) => a - b)).toEqual([0, 1, 2]);
  });
});

describe('list, status, check', () => {
  it('list shows a running VM\'s lease in a table; status and check answer', async () => {
    const { out, env } = fakeEnv('wait');
    tapctl(['qemu', '-b', 'lan', '--qemu', FAKE], { env });
    const rep = await report(out);
    try {
      const list = await tapctlDone(['list']);
      expect(list.code).toBe(0);
      const [header, row] = list.stdout.split('\n');
      expect(header).toMatch(/^ID\s+IFNAME\s+NETWORK\s+BRIDGE\s+MAC\s+OWNER\s+PID\s+AGE$/);
      expect(row).toMatch(new RegExp(`^[0-9a-f]+\\s+${rep.taps.get(3)}\\s+lan\\s+br0\\s+52:54:00\\S+\\s+nobody\\s+${rep.pid}\\s+(\\d+s|\\d+m\\d\\ds)$`));
      const status = await tapctlDone(['status', '--json']);
      expect(status.code).toBe(0);
      expect(JSON.parse(status.stdout)).toMatchObject({ leases: 1, networks: 4, hook_timeout_ms: 10_000 });
      const human = await tapctlDone(['status']);
      expect(human.stdout).toMatch(/^version\s+\S+$/m);
      expect(human.stdout).toMatch(/^hook timeout\s+10s$/m);
      const check = await tapctlDone(['check', '-b', 'br0', '--queues', '4']);
      expect(check.code).toBe(0);
      expect(check.stdout).toMatch(/^allowed: .+\n$/);
      const tooMany = await tapctlDone(['check', '-b', 'lan', '--queues', '8', '--json']);
      expect(tooMany.code).toBe(1);
      expect(JSON.parse(tooMany.stdout)).toMatchObject({ allowed: false });
    } finally {
      killFake(rep.pid);
    }
    await noTapsLeft();
  });

  it('reload: refused to a user, done for root', async () => {
    const user = await tapctlDone(['reload']);
    expect(user.code).toBe(1);
    expect(user.stderr).toMatch(/^tapctl: only root or a tapd admin may reload/);
    const root = await tapctlDone(['reload'], { user: {} });
    expect(root.code, root.stderr).toBe(0);
  });
});

describe('revoke, networks, check, --dry-run, list --user, a waiting open', () => {
  it('revoke LEASE: only for admins; root ends it, the TAP goes, the emulator\'s fd stops working', async () => {
    const { out, env } = fakeEnv('probe');
    const run = tapctl(['run', '-b', 'lan', '--', FAKE], { env });
    const rep = await report(out);
    try {
      const [lease] = await leases();
      // The fd works while the lease lives.
      process.kill(rep.pid, 'SIGUSR1');
      expect(await until(() => existsSync(`${out}.probe`), 10_000)).toBe(true);
      expect(readFileSync(`${out}.probe`, 'utf8')).toBe('OK\n');
      const refused = await tapctlDone(['revoke', String(lease!.id)]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toBe('tapctl: only root or a tapd admin may revoke\n');
      expect(taps()).toEqual([lease!.ifname]);
      const r = await tapctlDone(['revoke', String(lease!.id)], { user: {} });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(`revoked ${lease!.id}: ${lease!.ifname} on lan, owner nobody, pid ${rep.pid}\n`);
      expect(await until(() => taps().length === 0, 5000)).toBe(true);
      expect(await leases()).toEqual([]);
      // The emulator lives on, but its TAP fd is dead.
      expect(existsSync(`/proc/${rep.pid}`)).toBe(true);
      process.kill(rep.pid, 'SIGUSR1');
      expect(await until(() => readFileSync(`${out}.probe`, 'utf8').split('\n').length === 3, 10_000)).toBe(true);
      expect(readFileSync(`${out}.probe`, 'utf8')).toBe('OK\nFAIL\n');
      const again = await tapctlDone(['revoke', String(lease!.id)], { user: {} });
      expect(again.code).toBe(1);
      expect(again.stderr).toMatch(/^tapctl: no lease matches/);
    } finally {
      killFake(rep.pid, 'SIGKILL');
    }
    await run.done;
    await noTapsLeft();
  });

  it('revoke --user NAME --network N ends just those; list --user is for admins', async () => {
    const a = fakeEnv('wait');
    const b = fakeEnv('wait');
    const c = fakeEnv('wait');
    const runs = [
      tapctl(['qemu', '-b', 'lan', '--qemu', FAKE], { env: a.env }),
      tapctl(['qemu', '-b', 'stp', '--qemu', FAKE], { env: b.env }),
      tapctl(['qemu', '-b', 'lan', '--qemu', FAKE], { env: c.env, user: {} }),
    ];
    const reps = [await report(a.out), await report(b.out), await report(c.out)];
    try {
      const mine = await tapctlDone(['list', '--user', 'nobody', '--json'], { user: {} });
      expect(mine.code, mine.stderr).toBe(0);
      expect((JSON.parse(mine.stdout) as Array<Record<string, unknown>>).map((l) => l.pid).sort()).toEqual([reps[0]!.pid, reps[1]!.pid].sort());
      const other = await tapctlDone(['list', '--user', '0']);
      expect(other.code).toBe(1);
      expect(other.stderr).toMatch(/^tapctl: only root or a tapd admin may list another user's leases/);
      const r = await tapctlDone(['revoke', '--user', 'nobody', '--network', 'lan'], { user: {} });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^revoked [0-9a-f]+: tap[0-9a-f]{8} on lan, owner nobody, pid ${reps[0]!.pid}\n$`));
      const left = await leases({});
      expect(left.map((l) => l.pid).sort()).toEqual([reps[1]!.pid, reps[2]!.pid].sort());
      const usage = await tapctlDone(['revoke'], { user: {} });
      expect(usage.code).toBe(1);
      expect(usage.stderr).toMatch(/^tapctl: revoke needs a lease id, --user or --network/);
    } finally {
      for (const rep of reps) killFake(rep.pid, 'SIGKILL');
    }
    await Promise.all(runs.map((r) => r.done));
    await noTapsLeft();
  });

  it('networks: the ones you may use, with grants and quota; --names for completion', async () => {
    const r = await tapctlDone(['networks']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+MODE\s+BRIDGE\s+GRANTS\s+QUOTA\s+HELD$/);
    expect(lines.slice(1).map((l) => l.split(/\s+/)[0])).toEqual(['lan', 'stp', 'hooked']);
    expect(lines[1]).toMatch(/^lan\s+bridged\s+br0\s+queues 4,mac,mtu,vhost\s+4 here\s+0$/);
    expect(lines[2]).toMatch(/^stp\s+bridged\s+br2\s+queues 1\s+2 here\s+0$/);
    const names = await tapctlDone(['networks', '--names']);
    expect(names.stdout).toBe('lan\nstp\nhooked\n');
    const root = await tapctlDone(['networks', '--names'], { user: {} });
    expect(root.stdout).toBe('lan\nother\nstp\nhooked\n');
  });

  it('check: warnings (STP), --vhost passes, the same request as the open', async () => {
    const stp = await tapctlDone(['check', '-b', 'stp']);
    expect(stp.code, stp.stderr).toBe(0);
    expect(stp.stdout).toMatch(/^allowed: .+\nwarning: bridge br2 has STP on: .+\n$/);
    const json = JSON.parse((await tapctlDone(['check', '-b', 'stp', '--json'])).stdout) as Record<string, unknown>;
    expect(json).toMatchObject({ allowed: true, warnings: [expect.stringMatching(/STP/)] });
    const vhost = await tapctlDone(['check', '-b', 'lan', '--vhost', '--queues', '2']);
    expect(vhost.code, vhost.stderr).toBe(0);
    expect(vhost.stdout).toMatch(/^allowed: /);
    const before = daemon.events().length;
    const denied = await tapctlDone(['check', '-b', 'stp', '--vhost']);
    expect(denied.code).toBe(1);
    expect(denied.stdout).toMatch(/^not allowed: /);
    // -v on an open prints the check's warnings first.
    const { out, env } = fakeEnv('exit');
    const v = await tapctlDone(['qemu', '-v', '-b', 'stp', '--qemu', FAKE], { env });
    expect(v.code, v.stderr).toBe(0);
    expect(v.stderr).toMatch(/^tapctl: warning: bridge br2 has STP on/m);
    await report(out);
    expect(daemon.events().slice(before).filter((e) => e.event === 'lease_start')).toHaveLength(1);
    await noTapsLeft();
  });

  it('qemu --dry-run asks check, prints the open request and the command line, starts nothing', async () => {
    const before = daemon.events().length;
    const r = await tapctlDone(['qemu', '--dry-run', '-b', 'lan', '--device-opt', 'bootindex=1', '--nic', 'b=stp,model=i82559er-new,dev.addr=0x5',
      '--qemu', FAKE, '--', '-m', '64']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(JSON.parse(lines[0]!.replace(/^request: /, ''))).toEqual({ v: 1, op: 'open', network: 'lan', queues: 1, vnet_hdr: true, vhost: false, progress: true });
    expect(JSON.parse(lines[1]!.replace(/^request: /, ''))).toEqual({ v: 1, op: 'open', network: 'stp', queues: 1, vnet_hdr: false, vhost: false, progress: true });
    expect(lines[2]).toMatch(/^net0 \(lan\): allowed: /);
    expect(lines[3]).toMatch(/^net1 \(stp\): allowed: /);
    expect(lines[4]).toMatch(/^net1 \(stp\): warning: bridge br2 has STP on/);
    expect(lines[5]).toBe(`command: ${FAKE} -netdev tap,id=net0,fd=3 -device virtio-net-pci,netdev=net0,mac=MAC-FROM-TAPD,bootindex=1 `
      + '-netdev tap,id=net1,fd=4 -device i82559er-new,netdev=net1,mac=MAC-FROM-TAPD,addr=0x5 -m 64');
    expect(daemon.events().slice(before).filter((e) => e.event === 'lease_start')).toEqual([]);
    expect(taps()).toEqual([]);
    const denied = await tapctlDone(['qemu', '--dry-run', '-b', 'other', '--qemu', FAKE]);
    expect(denied.code).toBe(1);
    expect(denied.stdout).toMatch(/^request: .+\nnot allowed: .+\ncommand: /);
  });

  it('-device properties and a model tapctl does not know reach the emulator', async () => {
    const { out, env } = fakeEnv('exit');
    const r = await tapctlDone(['qemu', '-b', 'lan', '--model', 'virtio-net-pci-new', '--device-opt', 'bootindex=1', '--queues', '2',
      '--device-opt', 'vectors=8', '--qemu', FAKE], { env });
    expect(r.code, r.stderr).toBe(0);
    const rep = await report(out);
    expect(rep.argv[3]).toMatch(/^virtio-net-pci-new,netdev=net0,mac=52:54:00:[0-9a-f:]{8},mq=on,vectors=8,bootindex=1$/);
    await noTapsLeft();
    const bad = await tapctlDone(['qemu', '-b', 'lan', '--device-opt', 'mac=52:54:00:00:00:01', '--qemu', FAKE]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe('tapctl: --device-opt: tapctl sets "mac" itself (use --mac or mac=)\n');
  });

  it('an open waits for the up hook and says so', async () => {
    const { out, env } = fakeEnv('exit');
    const r = await tapctlDone(['qemu', '-b', 'hooked', '--qemu', FAKE], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('tapctl: tapd is running the network\'s up hook (up to 10 s)\n');
    expect((await report(out)).taps.get(3)).toMatch(/^tap[0-9a-f]{8}$/);
    await noTapsLeft();
  });
});
