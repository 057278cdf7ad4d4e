// The daemon's socket side (src/daemon/server.ts serve) in this process, with real Unix sockets
// and real client processes (uid 65534 when we are root), for what a daemon started from the
// command line does not let a test choose: the identification without SO_PEERPIDFD (what a kernel
// older than 6.5 gets), what polkit was asked about, and request-timeouts changed between
// connections (a reload). polkit here is polkitAllows with a pkcheck that always says yes, so a
// no comes from tapd's own checks of the process.
import { spawn } from 'node:child_process';
import { chmodSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DaemonContext } from '../../src/daemon/context.js';
import { LeaseTable } from '../../src/daemon/leases.js';
import { createLogger } from '../../src/daemon/log.js';
import type { IdentifiedPeer } from '../../src/daemon/peer.js';
import { loadPolicy } from '../../src/daemon/policy/index.js';
import type { Subject } from '../../src/daemon/policy/types.js';
import { polkitAllows } from '../../src/daemon/polkit.js';
import { serve, type ServeOptions } from '../../src/daemon/server.js';
import { NOBODY, ROOT, tempDir, until } from '../helpers/netns.js';
import { raw, req } from '../helpers/raw.js';

const CLIENT = readFileSync(path.join(ROOT, 'test/fixtures/peer-client.pl'), 'utf8');
const isRoot = process.getuid?.() === 0;
const CHECK = JSON.stringify({ v: 1, op: 'check', network: 'pk' });

let dir: string;

beforeAll(() => {
  dir = tempDir('server');
  writeFileSync(path.join(dir, 'yes'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  // A host-only network: a check that polkit allows looks at no bridge.
  writeFileSync(path.join(dir, 'tapd.conf'), `network pk hostonly\npermit ${isRoot ? '@nogroup' : `${process.getuid!()}`} on pk polkit\n`, { mode: 0o644 });
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A server as main.ts makes it, with polkit calls recorded. */
async function startServer(name: string, opts: ServeOptions) {
  const lines: string[] = [];
  const asked: Array<{ binding: string | undefined; startTime: string | undefined; yes: boolean }> = [];
  const ctx: DaemonContext = {
    policy: loadPolicy(path.join(dir, 'tapd.conf'), { checkOwnership: false }),
    leases: new LeaseTable(path.join(dir, `state-${name}`)),
    log: createLogger('debug', { format: 'json', journal: false, out: { write: (s: string) => lines.push(s) } }),
    startedAt: Date.now(),
    connections: { total: 0, byUid: new Map() },
    reload() {},
    async polkitAllows(subject: Subject, action: string) {
      const yes = await polkitAllows(subject, action, { pkcheck: path.join(dir, 'yes') });
      asked.push({ binding: (subject as Partial<IdentifiedPeer>).binding, startTime: subject.startTime, yes });
      return yes;
    },
  };
  const server = net.createServer({ pauseOnConnect: false });
  serve(server, ctx, () => {}, opts);
  const socket = path.join(dir, `${name}.sock`);
  await new Promise<void>((r) => server.listen(socket, r));
  chmodSync(socket, 0o777);
  const events = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return {
    ctx, socket, asked, events,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** A peer-client.pl process (as uid 65534 when root); its output lines. */
function perl(args: string[]) {
  const who = isRoot ? ['setpriv', '--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups', '--'] : [];
  const argv = [...who, 'perl', '-e', CLIENT, ...args];
  const p = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (b: Buffer) => (out += b.toString()));
  p.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  const line = async (prefix: string) => {
    const find = () => out.split('\n').find((l) => l.startsWith(`${prefix} `));
    if (!(await until(() => find() !== undefined, 20_000))) throw new Error(`no "${prefix}" from the client: ${out}`);
    return find()!.slice(prefix.length + 1);
  };
  return { p, exited, line };
}

const fdsOfSelf = () => readdirSync('/proc/self/fd').length;

describe.each([
  ['with SO_PEERPIDFD (identified once the request is in)', {}, 'pidfd'],
  ['without SO_PEERPIDFD (identified at accept, by pid + start time)', { peerPidfd: false }, 'pid-start'],
] as const)('serve %s', (name, opts, binding) => {
  let s: Awaited<ReturnType<typeof startServer>>;
  beforeAll(async () => {
    s = await startServer(binding, opts);
  });
  afterAll(async () => {
    await s.close();
  });

  it('a process that sends its own request is bound, and polkit is asked about it', async () => {
    const c = perl(['send', s.socket, CHECK]);
    expect(JSON.parse(await c.line('reply'))).toMatchObject({ ok: true, allowed: true });
    await c.exited;
    expect(s.asked.at(-1)).toMatchObject({ binding, yes: true });
    expect(s.asked.at(-1)!.startTime).toMatch(/^[0-9]+$/);
  });

  it('a process that connected, was accepted, handed the socket to a child and exited: the child is not taken for it', async () => {
    const go = path.join(dir, `go-${binding}`);
    const before = s.asked.length;
    const c = perl(['handoff-send', s.socket, CHECK, go]);
    const [parent, child] = (await c.line('handed')).split(' ').map(Number);
    await until(() => s.ctx.connections.total === 1, 5000); // accepted (and, without SO_PEERPIDFD, bound)
    await c.exited; // reaped: its pid is free
    writeFileSync(go, '');
    expect(JSON.parse(await c.line('reply'))).toMatchObject({ ok: true, allowed: false, code: 'denied' });
    // With the pidfd, taken once the request came, the connecting process is known to be gone;
    // without it, it was bound at accept and is found gone when polkit would be asked.
    expect(s.asked.slice(before)).toEqual([{ binding: binding === 'pidfd' ? 'none' : 'pid-start', startTime: binding === 'pidfd' ? undefined : expect.stringMatching(/^[0-9]+$/), yes: false }]);
    expect(parent).toBeGreaterThan(0);
    try {
      process.kill(child!, 'SIGKILL');
    } catch {
      // It answered and has gone.
    }
  });

  it('an idle connection costs the server one fd, its socket (no pidfd)', async () => {
    const N = 20;
    const script = `const net = require('node:net'); const all = []; let n = 0;
      for (let i = 0; i < ${N}; i++) all.push(net.connect(process.argv[1], () => { if (++n === ${N}) console.log('connected'); }));
      process.stdin.on('data', () => { for (const c of all) c.destroy(); console.log('released'); });`;
    const who = isRoot ? ['setpriv', '--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups', '--'] : [];
    const c = spawn(who[0] ?? 'node', [...who.slice(1), ...(who.length ? ['node'] : []), '-e', script, s.socket], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    try {
      expect(await until(() => out.includes('connected') && s.ctx.connections.total === N, 10_000)).toBe(true);
      const held = fdsOfSelf();
      c.stdin.write('go\n');
      expect(await until(() => out.includes('released') && s.ctx.connections.total === 0, 10_000)).toBe(true);
      // The client and its pipes are still there: only the connections went.
      expect(held - fdsOfSelf()).toBe(N);
    } finally {
      c.stdin.end();
      c.kill();
      await exited;
    }
  });

  it('one timer for every request deadline: each silent connection is told and dropped; a changed request-timeout (a reload) applies to connections accepted after it', async () => {
    const old = s.ctx.policy;
    // What a reload does: a new policy, here the old one with another request-timeout.
    const timeout = (ms: number) => (s.ctx.policy = Object.create(old, { limits: { value: { ...old.limits, requestTimeoutMs: ms } } }) as typeof old);
    try {
      timeout(1500);
      const short = Array.from({ length: 20 }, () => raw(s.socket, [], { waitMs: 20_000 }));
      await until(() => s.ctx.connections.total >= 20, 5000);
      timeout(1000); // shorter, after the first ones: its own queue
      const shorter = raw(s.socket, [], { waitMs: 20_000 });
      await until(() => s.ctx.connections.total >= 21, 5000); // accepted: its timeout is taken
      timeout(2000);
      const longer = raw(s.socket, [], { waitMs: 20_000 });
      await until(() => s.ctx.connections.total >= 22, 5000);
      const said = (ms: number) => ({ replies: [{ ok: false, error: { code: 'bad_request', message: `no complete request within ${ms} ms` } }], closed: true });
      for (const r of await Promise.all(short)) expect(r).toMatchObject(said(1500));
      expect(await shorter).toMatchObject(said(1000));
      expect(await longer).toMatchObject(said(2000));
      // A request that comes in time is answered, the deadline of a connection gone is forgotten.
      timeout(5000);
      expect((await raw(s.socket, [req({ op: 'status' })], { replies: 1, waitMs: 10_000 })).replies[0]).toMatchObject({ ok: true });
      await raw(s.socket, [], { waitMs: 50 });
      await until(() => s.ctx.connections.total === 0, 5000);
      expect(s.ctx.connections).toEqual({ total: 0, byUid: new Map() });
    } finally {
      s.ctx.policy = old;
    }
  });
});
