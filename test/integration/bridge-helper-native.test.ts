// The C tapd-bridge-helper (native/) on its own: its command line, its reply parser under a fuzz
// driver built with ASan and UBSan, and its answers to a fake tapd that misbehaves (oversized
// frame, bad JSON, extra fds, hostile text), run as uid 65534. The real daemon, QEMU and the
// kernel's TAPs are test/bridge-helper.test.ts. Needs gcc; root for the fake-daemon part.
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, openSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as sys from '../../src/sys/index.js';
import { DIST, NOBODY, ROOT, asUser, tempDir } from '../helpers/netns.js';

const HELPER = path.join(ROOT, 'native/build/tapd-bridge-helper');
const QEMU_DRIVER = path.join(ROOT, 'test/fixtures/tapctl/qemu-like-driver.mjs');
const LIBVIRT_DRIVER = path.join(ROOT, 'test/fixtures/tapctl/libvirt-like-driver.mjs');
const isRoot = process.getuid?.() === 0;
const run = promisify(execFile);

let dir: string;

beforeAll(() => {
  // npm run build makes it; build it here too when this file runs alone on a fresh checkout.
  if (!existsSync(HELPER)) execFileSync('sh', [path.join(ROOT, 'native/build.sh')], { stdio: 'inherit' });
  dir = tempDir('bhnative');
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function helper(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(HELPER, args, { encoding: 'utf8', env: { PATH: process.env.PATH ?? '', ...env }, timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('the binary', () => {
  it('is a static executable with no setuid bit', () => {
    // No program interpreter and no shared libraries: nothing loaded at run time but itself.
    const headers = execFileSync('readelf', ['-lW', HELPER], { encoding: 'utf8' });
    expect(headers).not.toMatch(/INTERP/);
    expect(execFileSync('readelf', ['-dW', HELPER], { encoding: 'utf8' })).not.toMatch(/\(NEEDED\)/);
    expect((statSync(HELPER).mode & 0o7777).toString(8)).toBe('755');
  });
});

describe('command line (what QEMU and libvirt pass)', () => {
  it('takes what QEMU passes: parsing gets as far as checking the socket', () => {
    // fd 8 / 12 are not open here, so the helper stops right after parsing, at the fd check.
    expect(helper(['--use-vnet', '--fd=8', '--br=br0']).stderr).toBe(
      'tapd-bridge-helper: --fd=8 is not an open socket; QEMU runs this helper itself (-netdev bridge,br=BR,helper=PATH)\n');
    expect(helper(['--socket=/tmp/t.sock', '--fd=12', '--br=lan']).stderr).toMatch(/^tapd-bridge-helper: --fd=12 is not an open socket/);
    expect(helper(['--use-vnet', '--br=lan', '--fd=12']).stderr).toMatch(/--fd=12 is not an open socket/);
    const help = helper(['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^Usage: tapd-bridge-helper \[--use-vnet\] --fd=N --br=BRIDGE/);
    expect(helper(['-h']).status).toBe(0);
  });

  it.each([
    [[], /missing --fd=N/],
    [['--fd=8'], /missing --br=BRIDGE/],
    [['--fd', '8', '--br=br0'], /--fd=N needs a file descriptor number/],
    [['--fd=x', '--br=br0'], /--fd=N needs/],
    [['--fd=1234567890', '--br=br0'], /--fd=N needs/],
    [['--fd=1', '--br=br0'], /standard input\/output/],
    [['--fd=8', '--br='], /--br=BRIDGE needs/],
    [['--fd=8', '--br=a b'], /--br=BRIDGE needs/],
    [['--fd=8', '--br=a"b'], /--br=BRIDGE needs/],
    [['--fd=8', `--br=${'b'.repeat(65)}`], /--br=BRIDGE needs/],
    [['--fd=8', '--br=br0', '--br=br1'], /--br given twice/],
    [['--fd=8', '--br=br0', '--use-vnet=1'], /takes no value/],
    [['--fd=8', '--br=br0', '--verbose'], /unknown argument "--verbose"/],
    [['--fd=8', '--br=br0', '--socket='], /--socket=PATH needs a path/],
  ])('rejects %j: exit 1, one line', (argv, message) => {
    const r = helper(argv);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toMatch(/^tapd-bridge-helper: [^\n]+\n$/);
  });
});

describe('reply parser (native/tapd-reply.c)', () => {
  let fuzz: string;
  beforeAll(() => {
    fuzz = path.join(dir, 'fuzz-reply');
    execFileSync('gcc', ['-std=gnu11', '-D_GNU_SOURCE', '-O1', '-g', '-Wall', '-Wextra', '-Werror',
      '-fsanitize=address,undefined', '-fno-sanitize-recover=all', '-o', fuzz,
      path.join(ROOT, 'native/fuzz-reply.c'), path.join(ROOT, 'native/tapd-reply.c')]);
  }, 120_000);

  const one = (body: string | Buffer) => execFileSync(fuzz, ['--one'], { input: body, encoding: 'utf8' }).trim();

  it('survives 120000 generated replies under ASan/UBSan and reads every valid one back exactly', () => {
    const r = spawnSync(fuzz, ['120000'], { encoding: 'utf8', timeout: 120_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const m = /^120000 replies: (\d+) valid, (\d+) mutated, (\d+) random; (\d+) accepted, (\d+) rejected\n$/.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    const [valid, mutated, random, accepted, rejected] = m!.slice(1).map(Number);
    for (const n of [valid!, mutated!, random!]) expect(n).toBeGreaterThan(30_000);
    // Every valid one is accepted (the driver checks the fields); most mutants are not.
    expect(accepted).toBeGreaterThanOrEqual(valid!);
    expect(rejected).toBeGreaterThan(mutated! / 2);
  }, 180_000);

  it('accepts nothing that JSON.parse rejects, and decodes what it accepts as JSON.parse does', () => {
    const out = execFileSync(fuzz, ['--corpus', '40000'], { maxBuffer: 256 * 1024 * 1024 });
    const utf8 = new TextDecoder('utf-8', { fatal: true });
    let off = 0;
    let checked = 0;
    const str = () => {
      const n = out.readUInt32BE(off);
      const s = out.subarray(off + 4, off + 4 + n);
      off += 4 + n;
      return s;
    };
    while (off < out.length) {
      const body = str();
      const verdict = out[off++];
      if (verdict === 0) continue;
      const parsed = JSON.parse(utf8.decode(body)) as { v: unknown; ok: unknown; lease?: { queues?: unknown }; error?: { code?: unknown; message?: unknown } };
      expect(parsed.v).toBe(1);
      if (verdict === 1) {
        expect(parsed.ok).toBe(true);
        expect(parsed.lease?.queues).toBe(out[off++]);
      } else {
        expect(parsed.ok).toBe(false);
        expect(str().toString('utf8')).toBe(parsed.error?.code);
        expect(str().equals(Buffer.from(parsed.error!.message as string, 'utf8'))).toBe(true);
      }
      checked++;
    }
    expect(checked).toBeGreaterThan(5000);
  }, 120_000);

  it.each([
    ['{"v":1,"ok":true,"lease":{"id":"3876d1f7934e5048","ifname":"tap0","ifindex":3,"mac":"52:54:00:6e:e2:91","network":"lan","bridge":"br0","mtu":1500,"queues":2,"vnet_hdr":true,"owner_uid":1000,"pid":4242,"started":"2026-12-01T04:10:26.938Z"}}', 'ok queues=2'],
    ['{"v":1,"ok":true,"lease":{"queues":1,"bridge":null,"future":[1,{"a":-0.5e+3}]}}', 'ok queues=1'],
    ['{"ok":false,"v":1,"error":{"message":"no rule permits \\"nobody\\" on br1 \\ud83d\\ude00","code":"denied"}}', 'error denied no rule permits "nobody" on br1 \u{1F600}'],
    ['{"v":1,"ok":true,"lease":{"queues":1.0}}', 'reject "lease.queues" must be an integer from 1 to 16 at 35'],
    ['{"v":1,"ok":true,"lease":{"queues":17}}', 'reject "lease.queues" must be an integer from 1 to 16 at 35'],
    ['{"v":1,"ok":true,"lease":{"queues":"1"}}', 'reject "lease.queues" must be an integer from 1 to 16 at 35'],
    ['{"v":1,"ok":true,"lease":{"queues":1,"queues":2}}', 'reject duplicate field at 46'],
    ['{"v":2,"ok":true,"lease":{"queues":1}}', 'reject "v" must be 1 at 5'],
    ['{"v":1,"ok":true}', 'reject "lease" is missing at 17'],
    ['{"v":1,"ok":false,"error":{"code":"denied"}}', 'reject "error.message" is missing at 44'],
    ['{"v":1,"ok":false,"error":{"code":"Denied!","message":"x"}}', 'reject "error.code" must be 1 to 64 of [a-z0-9_] at 34'],
    ['{"v":1,"ok":"yes","lease":{"queues":1}}', 'reject "ok" must be true or false at 12'],
    ['{"v":1,"ok":true,"lease":{"queues":1}} {}', 'reject trailing data after the reply at 39'],
    ['{"v":1,"ok":true,"lease":{"queues":1},}', 'reject expected a key at 38'],
    ['{"v":1,"ok":true,"lease":{"queues":1}}\u0000', 'reject trailing data after the reply at 38'],
    ['{"v":1,"ok":false,"error":{"code":"x","message":"\\ud800"}}', 'reject lone high surrogate at 55'],
    ['{"v":1,"ok":false,"error":{"code":"x","message":"\\udc00"}}', 'reject lone low surrogate at 55'],
    ['{"v":1,"ok":false,"error":{"code":"x","message":"a\\u0000b"}}', 'reject \\u0000 in string at 56'],
    ['{"v":1,"ok":false,"error":{"code":"x","message":"a\nb"}}', 'reject control character in string at 50'],
    ['{"v":1,"ok":false,"error":{"code":"x","message":"\\x"}}', 'reject bad escape in string at 49'],
    ['{"v":1,"ok":false,"error":{"code":"x","message":"abc', 'reject unterminated string at 52'],
    [`{"x":${'['.repeat(16)}${']'.repeat(16)},"v":1}`, 'reject nested too deeply at 20'],
    ['{"v":01}', 'reject "v" must be 1 at 5'],
    ['{"v":1,"ok":tru}', 'reject unexpected character at 12'],
    ['[{"v":1}]', 'reject the reply is not a JSON object at 0'],
    ['', 'reject the reply is not a JSON object at 0'],
  ])('%s → %s', (body, want) => {
    expect(one(body)).toBe(want);
  });

  it.each([
    ['overlong', [0xc0, 0xaf]],
    ['surrogate as UTF-8', [0xed, 0xa0, 0x80]],
    ['above U+10FFFF', [0xf4, 0x90, 0x80, 0x80]],
    ['truncated sequence', [0xe2, 0x82]],
    ['stray continuation', [0x80]],
  ])('rejects invalid UTF-8 in a string: %s', (_name, bytes) => {
    const body = Buffer.concat([Buffer.from('{"v":1,"ok":false,"error":{"code":"x","message":"'), Buffer.from(bytes), Buffer.from('"}}')]);
    expect(one(body)).toBe('reject invalid UTF-8 at 49');
  });
});

type Scenario = (sock: net.Socket) => void;

/** A fake tapd on a socket of its own that answers the first request with `scenario`. */
async function fakeTapd(name: string, scenario: Scenario): Promise<{ path: string; requests: string[]; close: () => Promise<void> }> {
  const sockPath = path.join(dir, `${name}.sock`);
  const requests: string[] = [];
  const conns = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    conns.add(sock);
    sock.on('close', () => conns.delete(sock));
    sock.on('error', () => {});
    let buf = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        requests.push(buf.subarray(4, 4 + buf.readUInt32BE(0)).toString('utf8'));
        scenario(sock);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(sockPath, resolve));
  chmodSync(sockPath, 0o777);
  return {
    path: sockPath,
    requests,
    close: async () => {
      for (const c of conns) c.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

function frame(body: string | Buffer): Buffer {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  const h = Buffer.alloc(4);
  h.writeUInt32BE(b.length, 0);
  return Buffer.concat([h, b]);
}

/** The libuv-owned fd of an accepted socket, to send SCM_RIGHTS on (libuv only writes when we do). */
function rawFd(sock: net.Socket): number {
  return (sock as unknown as { _handle: { fd: number } })._handle.fd;
}

interface QemuResult { status: { code: number | null }; stderr: string; length: number; fds: number }

async function asQemu(socketPath: string, extraEnv: Record<string, string> = {}): Promise<QemuResult> {
  const [cmd, ...pre] = asUser({ uid: NOBODY });
  const r = await run(cmd!, [...pre, 'node', QEMU_DRIVER, DIST, '9', HELPER, '--use-vnet', '--fd=@N@', '--br=br0'], {
    env: { ...process.env, TAPD_SOCKET: socketPath, ...extraEnv }, timeout: 60_000,
  });
  return JSON.parse(r.stdout) as QemuResult;
}

interface LibvirtResult { status: { code: number | null }; length: number; fds: number; stderrAtRecv: string; stderr: string }

/** libvirt's order of arguments; stderr as it stood the moment the fd receive returned. */
async function asLibvirt(socketPath: string, tag: string, extraEnv: Record<string, string> = {}, root = false): Promise<LibvirtResult> {
  const errDir = path.join(dir, `libvirt-${tag}`);
  mkdirSync(errDir);
  chownSync(errDir, NOBODY, NOBODY);
  const [cmd, ...pre] = root ? ['node'] : [...asUser({ uid: NOBODY }), 'node'];
  const r = await run(cmd!, [...pre, LIBVIRT_DRIVER, DIST, '23', path.join(errDir, 'stderr'), HELPER, '--use-vnet', '--br=br0', '--fd=@N@'], {
    env: { ...process.env, TAPD_SOCKET: socketPath, ...extraEnv }, timeout: 60_000,
  });
  return JSON.parse(r.stdout) as LibvirtResult;
}

describe.skipIf(!isRoot)('against a fake tapd (run as uid 65534)', () => {
  it('sends exactly the open request tapctl would, and passes the fd on', async () => {
    const tun = openSync('/dev/null', 'r');
    const fake = await fakeTapd('good', (sock) => {
      sys.sendWithFds(rawFd(sock), frame('{"v":1,"ok":true,"lease":{"queues":1,"ifname":"tap0"}}'), [tun], { action: 'send' });
    });
    try {
      const r = await asLibvirt(fake.path, 'good');
      expect(r).toMatchObject({ status: { code: 0 }, stderr: '', length: 1, fds: 1 });
      expect(fake.requests).toEqual(['{"v":1,"op":"open","network":"br0","vnet_hdr":true,"bridge_helper":true}']);
    } finally {
      closeSync(tun);
      await fake.close();
    }
  });

  it('refuses a reply over 1 MiB from its length alone, without waiting for the body', async () => {
    // The body never comes: a helper that tried to read it would sit out its 30 s timeout.
    const fake = await fakeTapd('big', (sock) => sock.write(Buffer.from([0, 0x20, 0, 0])));
    try {
      const r = await asQemu(fake.path);
      expect(r.status.code).toBe(1);
      expect(r.stderr).toBe('tapd-bridge-helper: no TAP on br0: frame of 2097152 bytes is over the limit of 1048576\n');
      expect([r.length, r.fds]).toEqual([0, 0]);
    } finally {
      await fake.close();
    }
  }, 20_000);

  it.each([
    ['a malformed reply', frame('{"v":1,"ok":true,"lease":{"queues":1}'), /^tapd-bridge-helper: no TAP on br0: tapd sent a malformed reply \(expected ',' or '}' at byte 37 of 37\)\n$/],
    ['an empty frame', Buffer.from([0, 0, 0, 0]), /^tapd-bridge-helper: no TAP on br0: empty frame\n$/],
    ['a half frame, then close', Buffer.from([0, 0, 0, 9, 0x7b]), /^tapd-bridge-helper: no TAP on br0: tapd closed the connection without a reply\n$/],
    ['a lease without its fd', frame('{"v":1,"ok":true,"lease":{"queues":1}}'), /^tapd-bridge-helper: no TAP on br0: expected 1 TAP fds from tapd, got 0\n$/],
  ])('%s: exit 1, the reason, nothing passed to QEMU', async (_name, reply, message) => {
    const fake = await fakeTapd('bad', (sock) => sock.end(reply));
    try {
      const r = await asQemu(fake.path);
      expect(r.status.code).toBe(1);
      expect(r.stderr).toMatch(message);
      expect([r.length, r.fds]).toEqual([0, 0]);
    } finally {
      await fake.close();
    }
  });

  it('more fds than the lease has queues: refused, none passed on', async () => {
    const a = openSync('/dev/null', 'r');
    const b = openSync('/dev/null', 'r');
    const fake = await fakeTapd('extra', (sock) => {
      sys.sendWithFds(rawFd(sock), frame('{"v":1,"ok":true,"lease":{"queues":1}}'), [a, b], { action: 'send' });
    });
    try {
      const r = await asQemu(fake.path);
      expect(r.status.code).toBe(1);
      expect(r.stderr).toBe('tapd-bridge-helper: no TAP on br0: expected 1 TAP fds from tapd, got 2\n');
      expect([r.length, r.fds]).toEqual([0, 0]);
    } finally {
      closeSync(a);
      closeSync(b);
      await fake.close();
    }
  });

  it('tapd\'s words reach the terminal as one line without control characters', async () => {
    const msg = JSON.stringify({ v: 1, ok: false, error: { code: 'denied', message: 'no rule \u001b[31mpermits\u0007 you\n   on br0\r\n' } });
    const fake = await fakeTapd('words', (sock) => sock.end(frame(msg)));
    try {
      const r = await asQemu(fake.path);
      expect(r.status.code).toBe(1);
      expect(r.stderr).toBe('tapd-bridge-helper: no TAP on br0: no rule ?[31mpermits? you on br0\n');
    } finally {
      await fake.close();
    }
  });

  it('libvirt session mode: the reason is on stderr before QEMU\'s socket closes (issue 12)', async () => {
    const fake = await fakeTapd('libvirt', (sock) => sock.end(frame('{"v":1,"ok":false,"error":{"code":"denied","message":"no rule permits uid 65534 on br0"}}')));
    try {
      const out = await asLibvirt(fake.path, 'denied');
      expect(out.status.code).toBe(1);
      expect([out.length, out.fds]).toEqual([0, 0]);
      expect(out.stderrAtRecv).toBe('tapd-bridge-helper: no TAP on br0: no rule permits uid 65534 on br0\n');
      expect(out.stderr).toBe(out.stderrAtRecv);
    } finally {
      await fake.close();
    }
  });

  it('root under sudo asks for SUDO_UID (as tapctl does); a bad SUDO_UID is refused', async () => {
    const tun = openSync('/dev/null', 'r');
    const fake = await fakeTapd('sudo', (sock) => {
      sys.sendWithFds(rawFd(sock), frame('{"v":1,"ok":true,"lease":{"queues":1}}'), [tun], { action: 'send' });
    });
    let n = 0;
    const asRoot = (env: Record<string, string>) => asLibvirt(fake.path, `sudo${n++}`, env, true);
    try {
      expect((await asRoot({ SUDO_UID: '65534' })).status.code).toBe(0);
      expect((await asRoot({ SUDO_UID: '0' })).status.code).toBe(0);
      expect((await asRoot({ SUDO_UID: '' })).status.code).toBe(0);
      const bad = await asRoot({ SUDO_UID: '12x' });
      expect(bad.status.code).toBe(1);
      expect(bad.stderrAtRecv).toBe('tapd-bridge-helper: SUDO_UID="12x" is not a uid\n');
      // Not root: SUDO_UID means nothing (a user cannot claim to be someone else).
      expect((await asLibvirt(fake.path, 'sudo-nobody', { SUDO_UID: '1000' })).status.code).toBe(0);
      expect(fake.requests).toEqual([
        '{"v":1,"op":"open","network":"br0","vnet_hdr":true,"bridge_helper":true,"as_uid":65534}',
        '{"v":1,"op":"open","network":"br0","vnet_hdr":true,"bridge_helper":true}',
        '{"v":1,"op":"open","network":"br0","vnet_hdr":true,"bridge_helper":true}',
        '{"v":1,"op":"open","network":"br0","vnet_hdr":true,"bridge_helper":true}',
      ]);
    } finally {
      closeSync(tun);
      await fake.close();
    }
  });
});
