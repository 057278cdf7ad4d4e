// tapd-bridge-helper as QEMU uses it: driven through a socketpair exactly like
// net_bridge_run_helper, then by qemu-system-x86_64 itself (-netdev bridge,helper=...).
// A real tapd in a namespace of our own; QEMU and the helper run as uid 65534. Needs root and a build.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIST, NOBODY, Netns, ROOT, asUser, client, startTapd, until, type DaemonHandle } from '../helpers/netns.js';

// The built binary (npm run build: native/build.sh), exactly what install.sh puts in /usr/bin.
const HELPER = path.join(ROOT, 'native/build/tapd-bridge-helper');
const DRIVER = path.join(ROOT, 'test/fixtures/tapctl/qemu-like-driver.mjs');

// Bridges made before tapd starts, with a fixed low MAC (see test/integration/tapctl.test.ts for why).
const CONFIG = `
network lan bridge br0
network other bridge br1
permit @nogroup on lan leases 4
permit root on any
`;

let ns: Netns;
let daemon: DaemonHandle;

beforeAll(async () => {
  ns = Netns.create('bhelper');
  ns.addBridge('br0', '02:00:00:00:00:01');
  ns.addBridge('br1', '02:00:00:00:00:02');
  daemon = await startTapd(ns, CONFIG);
});

afterAll(async () => {
  await daemon?.stop();
  ns?.destroy();
});

function taps(): Array<{ ifname: string; master?: string; vnetHdr: unknown }> {
  return ns.links()
    .filter((l) => l.linkinfo?.info_kind === 'tun')
    .map((l) => ({ ifname: l.ifname, master: l.master, vnetHdr: l.linkinfo?.info_data?.vnet_hdr }));
}

interface DriverResult {
  status: { code: number | null; signal: string | null };
  stderr: string;
  length: number;
  bytes: number[];
  fds: number;
  tap?: { name: string; vnetHdr: boolean; tap: boolean };
}

/** The helper at `n`, run by the QEMU-like driver as uid 65534 in the namespace. */
function drive(n: number, helperArgs: string[], env: Record<string, string> = {}): DriverResult {
  const r = ns.exec('node', [DRIVER, DIST, String(n), HELPER, ...helperArgs], { uid: NOBODY, env: { TAPD_SOCKET: daemon.socket, ...env } });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as DriverResult;
}

describe('driven like QEMU (socketpair, fd N, one recvmsg)', () => {
  it('sends one zero byte carrying one TAP fd, with the virtio-net header for --use-vnet', () => {
    const r = drive(9, ['--use-vnet', '--fd=@N@', '--br=br0']);
    expect(r.status).toEqual({ code: 0, signal: null });
    expect(r.stderr).toBe('');
    expect(r.length).toBe(1);
    expect(r.bytes).toEqual([0]);
    expect(r.fds).toBe(1);
    expect(r.tap).toMatchObject({ tap: true, vnetHdr: true });
    expect(r.tap!.name).toMatch(/^tap[0-9a-f]{8}$/);
  });

  it('without --use-vnet the TAP has no header; the network name works as --br too', () => {
    const r = drive(5, ['--fd=@N@', '--br=lan'], {});
    expect(r.status.code).toBe(0);
    expect(r.tap).toMatchObject({ tap: true, vnetHdr: false });
  });

  it('--socket= overrides $TAPD_SOCKET (helper= strings with blanks run through sh -c)', () => {
    const r = drive(7, [`--socket=${daemon.socket}`, '--use-vnet', '--fd=@N@', '--br=br0'], { TAPD_SOCKET: '/nonexistent/tapd.sock' });
    expect(r.status.code).toBe(0);
    expect(r.fds).toBe(1);
  });

  it('refused: exit 1, one line naming the bridge and tapd\'s reason, nothing sent, no device', async () => {
    const r = drive(8, ['--use-vnet', '--fd=@N@', '--br=br1']);
    expect(r.status.code).toBe(1);
    expect(r.stderr).toMatch(/^tapd-bridge-helper: no TAP on br1: [^\n]+\n$/);
    expect(r.length).toBe(0);
    expect(r.fds).toBe(0);
    expect(await until(() => taps().length === 0, 5000)).toBe(true);
  });

  it('tapd not running: exit 1 and why', () => {
    const r = drive(6, ['--use-vnet', '--fd=@N@', '--br=br0'], { TAPD_SOCKET: '/nonexistent/tapd.sock' });
    expect(r.status.code).toBe(1);
    expect(r.stderr).toMatch(/^tapd-bridge-helper: no TAP on br0: tapd is not running/);
  });

  it('run by hand: usage errors and --help', () => {
    const bad = ns.exec(HELPER, ['--br=br0'], { uid: NOBODY });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toBe('tapd-bridge-helper: missing --fd=N: QEMU runs this helper itself (-netdev bridge,br=BR,helper=PATH); see --help\n');
    const notSocket = ns.exec(HELPER, ['--fd=7', '--br=br0'], { uid: NOBODY });
    expect(notSocket.status).toBe(1);
    expect(notSocket.stderr).toMatch(/^tapd-bridge-helper: --fd=7 is not an open socket/);
    const help = ns.exec(HELPER, ['--help'], { uid: NOBODY });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^Usage: tapd-bridge-helper \[--use-vnet\] --fd=N --br=BRIDGE/);
  });
});

describe('qemu-system-x86_64 -netdev bridge,helper=tapd-bridge-helper', () => {
  function qemu(netdev: string): { proc: ChildProcess; output: () => string; exit: Promise<number | null> } {
    const proc = spawn('ip', ['netns', 'exec', ns.name, ...asUser({ uid: NOBODY }), 'qemu-system-x86_64',
      '-nodefaults', '-nographic', '-display', 'none', '-monitor', 'none', '-S',
      '-netdev', netdev, '-device', 'virtio-net-pci,netdev=n0,mac=52:54:00:00:00:42'], {
      stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TAPD_SOCKET: daemon.socket },
    });
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exit = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
    return { proc, output: () => out, exit };
  }

  it.each([
    ['helper=PATH (execv)', `bridge,id=n0,br=br0,helper=${HELPER}`],
    ['helper="PATH --socket=..." (sh -c)', 'SOCKET'],
  ])('QEMU starts with its TAP on br0: %s', async (_name, netdev) => {
    const spec = netdev === 'SOCKET' ? `bridge,id=n0,br=br0,helper=${HELPER} --socket=${daemon.socket}` : netdev;
    const q = qemu(spec);
    try {
      expect(await until(() => taps().length === 1 || q.proc.exitCode !== null, 20_000), q.output()).toBe(true);
      const [tap] = taps();
      expect(tap, q.output()).toMatchObject({ master: 'br0', vnetHdr: true });
      await new Promise((r) => setTimeout(r, 200));
      expect(q.proc.exitCode, q.output()).toBeNull();
      // The lease's guest MAC is QEMU's, unknown to tapd; its process is the helper's parent:
      // QEMU when QEMU execs the helper (through sh -c, the shell in between).
      const [list] = client(ns, daemon.socket, [{ op: 'list' }], { uid: 0 });
      const leases = (list!.body as { leases: Array<{ pid: number; mac: string | null; ifname: string }> }).leases;
      expect(leases).toEqual([expect.objectContaining({ mac: null, ifname: tap!.ifname })]);
      if (netdev !== 'SOCKET') expect(leases[0]!.pid).toBe(q.proc.pid);
    } finally {
      // `ip netns exec` and setpriv exec, so this pid is QEMU.
      q.proc.kill('SIGTERM');
    }
    await q.exit;
    expect(await until(() => taps().length === 0, 5000)).toBe(true);
  });

  it('a denied user: QEMU fails with our message and no device is left', async () => {
    const q = qemu(`bridge,id=n0,br=br1,helper=${HELPER}`);
    const code = await q.exit;
    expect(code).not.toBe(0);
    expect(q.output()).toMatch(/^tapd-bridge-helper: no TAP on br1: [^\n]+$/m);
    expect(q.output()).toMatch(/bridge helper failed/);
    expect(taps()).toEqual([]);
  });
});
