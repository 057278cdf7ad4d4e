// identifyPeer for real: a real Unix socket, real client processes (as uid 65534 when we are root),
// the kernel's SO_PEERCRED / SO_PEERGROUPS / SO_PEERPIDFD, and what happens when the connecting
// process hands its socket on and goes away.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readlinkSync, rmSync, chmodSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { identifyPeer, parseStat, stillConnectedProcess, type IdentifiedPeer } from '../../src/daemon/peer.js';
import { polkitAllows, POLKIT_ACTION_OPEN } from '../../src/daemon/polkit.js';
import { C } from '../../src/sys/constants.js';
import { fcntl } from '../../src/sys/index.js';
import { NOBODY, ROOT, tempDir, until } from '../helpers/netns.js';

const CLIENT = readFileSync(path.join(ROOT, 'test/fixtures/peer-client.pl'), 'utf8');
const isRoot = process.getuid?.() === 0;

/** A client process; its stdout lines as they come. */
class Client {
  readonly proc: ChildProcess;
  out = '';
  err = '';
  exited: Promise<void>;

  constructor(mode: string, args: string[], opts: { asRoot?: boolean } = {}) {
    const who = isRoot && !opts.asRoot ? ['setpriv', '--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups', '--'] : [];
    const argv = [...who, 'perl', '-e', CLIENT, mode, ...args];
    this.proc = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    clients.add(this);
    this.exited = new Promise((r) => this.proc.once('exit', () => r()));
    this.proc.stdout!.on('data', (d: Buffer) => (this.out += d.toString()));
    this.proc.stderr!.on('data', (d: Buffer) => (this.err += d.toString()));
  }

  async line(prefix: string): Promise<string[]> {
    const find = () => this.out.split('\n').find((l) => l.startsWith(`${prefix} `) || l === prefix);
    if (!(await until(() => find() !== undefined, 20_000))) throw new Error(`client said no "${prefix}": ${this.out} ${this.err}`);
    return find()!.split(' ').slice(1);
  }

  /** Lets a waiting client go on: a line on stdin, or the go-file (handoff modes). */
  go(goFile?: string): void {
    if (goFile !== undefined) writeFileSync(goFile, '');
    else this.proc.stdin!.write('go\n');
  }
}
const clients = new Set<Client>();

/** libuv's fd for an accepted socket, as the daemon's server takes it. */
function fdOf(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no fd');
  return fd;
}

function startTimeOf(pid: number): string | undefined {
  return parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'))?.startTime;
}

function isPidfd(fd: number): boolean {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[pidfd]';
  } catch {
    return false;
  }
}

let dir: string;
let server: net.Server;
let sockPath: string;
const accepted: net.Socket[] = [];
const peers: IdentifiedPeer[] = [];
let onConnection: (s: net.Socket) => void = () => {};

beforeAll(async () => {
  dir = tempDir('peer');
  sockPath = path.join(dir, 'sock');
  // Paused like a daemon that has not read yet: a peer that closes early must not take the fd away.
  server = net.createServer({ pauseOnConnect: true }, (s) => {
    accepted.push(s);
    s.on('error', () => s.destroy());
    onConnection(s);
  });
  await new Promise<void>((r) => server.listen(sockPath, r));
  chmodSync(sockPath, 0o777);
  // A pkcheck that always says yes: these tests are about the binding, not about polkit.
  writeFileSync(path.join(dir, 'yes'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
});

afterEach(async () => {
  for (const c of clients) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
  await Promise.all([...clients].map((c) => c.exited));
  clients.clear();
  for (const p of peers.splice(0)) p.close();
  for (const s of accepted.splice(0)) s.destroy();
});

afterAll(async () => {
  await new Promise<void>((r) => server.close(() => r()));
  rmSync(dir, { recursive: true, force: true });
});

/**
 * The next connection, identified the moment it is accepted, then told "ready". (The daemon does
 * so only without SO_PEERPIDFD; with it, it identifies once the request is in: the test of a
 * process gone before accept below, and test/integration/server.test.ts.)
 */
function nextPeer(opts?: { pidfd?: boolean }): Promise<{ peer: IdentifiedPeer; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    onConnection = (socket) => {
      let peer: IdentifiedPeer;
      try {
        peer = identifyPeer(fdOf(socket), opts);
      } catch (err) {
        reject(err as Error);
        return;
      }
      peers.push(peer);
      socket.resume();
      socket.write('ready\n');
      resolve({ peer, socket });
    };
  });
}

const yes = () => ({ pkcheck: path.join(dir, 'yes') });

describe('identifyPeer', () => {
  it('binds the connecting process through a CLOEXEC pidfd, and close() releases it', async () => {
    const got = nextPeer();
    const c = new Client('hold', [sockPath]);
    const { peer } = await got;
    const [pid] = await c.line('connected');
    expect(peer.pid).toBe(Number(pid));
    expect(peer.uid).toBe(isRoot ? NOBODY : process.getuid!());
    expect(peer.binding).toBe('pidfd');
    expect(peer.startTime).toBe(startTimeOf(peer.pid));
    const fd = peer.pidfd!;
    expect(isPidfd(fd)).toBe(true);
    expect(fcntl(fd, C.F_GETFD, 0, { action: 'test' }) & C.FD_CLOEXEC).toBe(C.FD_CLOEXEC);
    expect(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8')).toMatch(new RegExp(`^Pid:\\s+${pid}$`, 'm'));
    expect(stillConnectedProcess(peer)).toBe(true);
    expect(await polkitAllows(peer, POLKIT_ACTION_OPEN, yes())).toBe(true);
    peer.close();
    peer.close(); // idempotent
    expect(isPidfd(fd)).toBe(false);
    expect(peer.pidfd).toBeUndefined();
    expect(peer.startTime).toBeUndefined();
    expect(await polkitAllows(peer, POLKIT_ACTION_OPEN, yes())).toBe(false);
  });

  it('once the connecting process has exited, polkit is not even asked, though its child still holds the socket', async () => {
    const got = nextPeer();
    const goFile = path.join(dir, 'go-handoff');
    const c = new Client('handoff', [sockPath, goFile]);
    const { peer, socket } = await got;
    const [parent, child] = await c.line('handed');
    expect(peer.pid).toBe(Number(parent));
    await c.exited; // reaped: its pid is free for anyone
    expect(await until(() => peer.pidfd !== undefined && !readFileSync(`/proc/self/fdinfo/${peer.pidfd}`, 'utf8').match(/^Pid:\s+[1-9]/m), 5000)).toBe(true);
    expect(stillConnectedProcess(peer)).toBe(false);
    const asked = new Promise<string>((r) => socket.once('data', (d) => r(d.toString())));
    c.go(goFile);
    expect(await asked).toBe('ask\n'); // the child really talks on the parent's connection
    expect(await polkitAllows(peer, POLKIT_ACTION_OPEN, yes())).toBe(false);
    process.kill(Number(child), 'SIGKILL');
  });

  it('a process gone before accept is not bound at all (no start time, no pidfd)', async () => {
    let accept: (s: net.Socket) => void = () => {};
    const arrived = new Promise<net.Socket>((r) => (accept = r));
    onConnection = (s) => accept(s);
    const c = new Client('handoff-early', [sockPath, path.join(dir, 'go-never')]);
    const socket = await arrived;
    const [, child] = await c.line('handed');
    await c.exited;
    const peer = identifyPeer(fdOf(socket));
    peers.push(peer);
    expect(peer.binding).toBe('none');
    expect(peer.startTime).toBeUndefined();
    expect(peer.pidfd).toBeUndefined();
    expect(peer.uid).toBe(isRoot ? NOBODY : process.getuid!()); // uid policy still has the credentials
    expect(await polkitAllows(peer, POLKIT_ACTION_OPEN, yes())).toBe(false);
    process.kill(Number(child), 'SIGKILL');
  });

  it('a zombie is gone: not bound', async () => {
    let accept: (s: net.Socket) => void = () => {};
    const arrived = new Promise<net.Socket>((r) => (accept = r));
    onConnection = (s) => accept(s);
    const c = new Client('zombie', [sockPath]);
    const socket = await arrived;
    const [pid] = await c.line('connected');
    expect(await until(() => readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z '), 10_000)).toBe(true);
    const peer = identifyPeer(fdOf(socket));
    peers.push(peer);
    expect(peer.pid).toBe(Number(pid));
    expect(peer.binding).toBe('none');
    expect(await polkitAllows(peer, POLKIT_ACTION_OPEN, yes())).toBe(false);
  });

  it('without SO_PEERPIDFD it falls back to pid + start time taken at accept', async () => {
    const got = nextPeer({ pidfd: false });
    const c = new Client('hold', [sockPath]);
    const { peer } = await got;
    await c.line('connected');
    expect(peer.binding).toBe('pid-start');
    expect(peer.pidfd).toBeUndefined();
    expect(peer.startTime).toBe(startTimeOf(peer.pid));
    expect(await polkitAllows(peer, POLKIT_ACTION_OPEN, yes())).toBe(true);
    // Another start time for the same pid (what a pid reuser has): no.
    expect(await polkitAllows({ ...peer, startTime: String(BigInt(peer.startTime!) + 1n) }, POLKIT_ACTION_OPEN, yes())).toBe(false);
    c.go();
    await c.exited;
    expect(await polkitAllows(peer, POLKIT_ACTION_OPEN, yes())).toBe(false);
  });
});

describe.skipIf(!isRoot)('identifyPeer with many supplementary groups (root: setgroups, then uid 65534)', () => {
  /** Groups 1..n as /proc reports them for the client, and what identifyPeer saw. */
  async function groupsSeen(n: number): Promise<{ proc: number[]; peer: number[] }> {
    const got = nextPeer();
    const c = new Client('groups', [sockPath, String(n)], { asRoot: true });
    const { peer } = await Promise.race([got, c.exited.then(() => {
      throw new Error(`client exited: ${c.err}`);
    })]);
    const [pid] = await c.line('connected');
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    expect(status).toMatch(/^Uid:\s+65534\s/m);
    const proc = /^Groups:\s*(.*)$/m.exec(status)![1]!.trim().split(/\s+/).map(Number);
    return { proc, peer: [...peer.groups] };
  }

  it('40000 groups: all of them (more than the 32768 the buffer used to stop at)', async () => {
    const { proc, peer } = await groupsSeen(40_000);
    expect(proc).toHaveLength(40_000);
    expect(peer).toEqual(proc);
  });

  it('65536 groups (NGROUPS_MAX): all of them', async () => {
    const { proc, peer } = await groupsSeen(65_536);
    expect(proc).toHaveLength(65_536);
    expect(peer).toEqual(proc);
  });
});
