// End to end: the test guest (test/guest) on the sandbox LAN (scripts/lib/sandbox.sh), started the
// ways docs/launching.md describes, as uid 65534, with tapd running in the sandbox's host namespace
// on its br0 (the uplink to the LAN enslaved). Each boot must get a DHCP lease from the LAN's
// dnsmasq and fetch the LAN's page; --user-net must forward a host port into the guest.
// Needs root and a build (npx tsc -p tsconfig.json). TCG: a few seconds per boot, run one by one.
import { spawnSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureGuest, guestArgs, runGuest, type GuestRun, type RunGuestOptions } from '../helpers/guest.js';
import { LAN_INDEX_FIRST_LINE, LAN_ROUTER, startLan, type Lan } from '../helpers/lan.js';
import { DIST, NOBODY, Netns, ROOT, asUser, startTapd, until, type DaemonHandle } from '../helpers/netns.js';

const isRoot = process.getuid?.() === 0;
const TAPCTL = path.join(DIST, 'cli/tapctl.js');
const START_EXAMPLE = path.join(ROOT, 'scripts/qemu-start-example');
const HELPER = path.join(ROOT, 'native/build/tapd-bridge-helper');

const CONFIG = `
network lan bridge br0
permit @nogroup on lan leases 4 queues 4
`;

let lan: Lan | undefined;
let daemon: DaemonHandle | undefined;
let hostNs: Netns;
const timings: string[] = [];

beforeAll(async () => {
  if (!isRoot) return;
  ensureGuest();
  lan = await startLan(`te${process.pid}`, { bridge: true });
  hostNs = Netns.attach(lan.hostNs);
  daemon = await startTapd(hostNs, CONFIG);
}, 600_000);

afterAll(async () => {
  await daemon?.stop();
  await lan?.stop();
  if (timings.length) console.log(`boot timings (spawn → line, ms):\n  ${timings.join('\n  ')}`);
});

/** The guest's QEMU arguments without its -device (tapctl, or the start script, adds that). */
function guestArgsNoDevice(extraCmdline?: string): string[] {
  const args = guestArgs({ model: 'virtio-net-pci', mac: '52:54:00:00:00:01', ...(extraCmdline ? { extraCmdline } : {}) });
  const i = args.indexOf('-device');
  args.splice(i, 2);
  return args;
}

interface Boot extends GuestRun {
  /** MACs tapctl -v reported for its leases. */
  leaseMacs: string[];
}

/** runGuest, plus the MACs tapctl -v reported (its stderr is part of the collected output). */
async function boot(argv: string[], opts: RunGuestOptions = {}): Promise<Boot> {
  const run = await runGuest(argv, { timeoutMs: 150_000, ...opts });
  const leaseMacs = [...run.serial.matchAll(/^tapctl: \S+: \S+ on .*, MAC (\S+),/gm)].map((m) => m[1]!);
  return { ...run, leaseMacs };
}

function asNobody(argv: string[]): string[] {
  return ['ip', 'netns', 'exec', lan!.hostNs, ...asUser({ uid: NOBODY }), ...argv];
}

function tapctl(...args: string[]): string[] {
  return asNobody(['node', TAPCTL, '--socket', daemon!.socket, ...args]);
}

function ipInRange(ip: string | undefined): boolean {
  const m = /^198\.18\.0\.(\d+)$/.exec(ip ?? '');
  return !!m && Number(m[1]) >= 100 && Number(m[1]) <= 199;
}

function why(b: Boot): string {
  return `serial:\n${b.serial}\n--- dnsmasq log:\n${lan?.dnsmasqLog() ?? ''}`;
}

/** A lease from the LAN, the page fetched, the guest powered off (exit 0), its MAC the lease's. */
function expectOnline(b: Boot, name: string, mac?: string): void {
  const w = why(b);
  expect(b.result.lease, w).toBeDefined();
  expect(ipInRange(b.result.lease?.ip), w).toBe(true);
  expect(b.result.lease?.router, w).toBe(LAN_ROUTER);
  expect(b.result.fetch, w).toEqual({ ok: true, line: LAN_INDEX_FIRST_LINE });
  expect(b.result.done, w).toBe(true);
  expect(b.exitCode, w).toBe(0);
  if (mac) {
    expect(b.result.nic?.mac, w).toBe(mac);
    expect(lan!.leases(), w).toContain(`${mac} ${b.result.lease!.ip}`);
  }
  timings.push(`${name}: NIC ${b.at.NIC}, LEASE ${b.at.LEASE}, FETCH ${b.at.FETCH}, DONE ${b.at.DONE}`);
}

async function nothingLeft(): Promise<void> {
  const taps = () => JSON.parse(hostNs.run('ip', ['-d', '-j', 'link', 'show'])).filter(
    (l: { linkinfo?: { info_kind?: string } }) => l.linkinfo?.info_kind === 'tun');
  expect(await until(() => taps().length === 0, 5000)).toBe(true);
  const list = spawnSync(tapctl('list', '--json')[0]!, tapctl('list', '--json').slice(1), { encoding: 'utf8' });
  expect(JSON.parse(list.stdout)).toEqual([]);
}

describe.skipIf(!isRoot)('guests on the sandbox LAN through tapd', { timeout: 200_000 }, () => {
  it.each([
    ['virtio-net-pci', 'virtio_net'],
    ['e1000', 'e1000'],
    ['rtl8139', undefined],
  ])('tapctl qemu --model %s: DHCP lease and page', async (model, driver) => {
    const b = await boot(tapctl('qemu', '-v', '-b', 'lan', '--model', model, '--', ...guestArgsNoDevice()));
    expect(b.leaseMacs, why(b)).toHaveLength(1);
    expectOnline(b, `tapctl qemu ${model}`, b.leaseMacs[0]);
    if (driver) expect(b.result.nic?.driver).toBe(driver);
    await nothingLeft();
  });

  it('tapctl qemu --queues 4: multiqueue virtio with the vnet header', async () => {
    const b = await boot(tapctl('qemu', '-v', '-b', 'br0', '--queues', '4', '--', ...guestArgsNoDevice()));
    expect(b.serial).toMatch(/^tapctl: net0: \S+ on lan \(bridge br0\), MAC \S+, 4 queue\(s\), vnet_hdr, fd 3:4:5:6,/m);
    expect(b.result.queues?.mq, why(b)).toBe(true);
    expectOnline(b, 'tapctl qemu virtio --queues 4', b.leaseMacs[0]);
    await nothingLeft();
  });

  it('tapctl run with scripts/qemu-start-example', async () => {
    const b = await boot(tapctl('run', '-v', '-b', 'lan', '--', START_EXAMPLE, ...guestArgsNoDevice()));
    expectOnline(b, 'tapctl run qemu-start-example', b.leaseMacs[0]);
    await nothingLeft();
  });

  it('qemu -netdev bridge,helper=tapd-bridge-helper', async () => {
    const mac = `52:54:00:${[0, 0, 0].map(() => randomInt(256).toString(16).padStart(2, '0')).join(':')}`;
    const args = guestArgs({ model: 'virtio-net-pci', mac });
    const b = await boot(asNobody(['qemu-system-x86_64', ...args, '-netdev', `bridge,id=n0,br=br0,helper=${HELPER}`]), {
      env: { TAPD_SOCKET: daemon!.socket },
    });
    expectOnline(b, 'qemu -netdev bridge,helper=', mac);
    await nothingLeft();
  });

  it('tapctl qemu --user-net --redir tcp:PORT::80: the forwarded port reaches the guest', async () => {
    const port = randomInt(20000, 60000);
    let fetched: { status: number | null; body: string } | undefined;
    const b = await boot(asNobody(['node', TAPCTL, 'qemu', '--user-net', '--redir', `tcp:${port}::80`, '--',
      ...guestArgsNoDevice('tapd.serve=80 tapd.hold=20')]), {
      onLine: (line, pid) => {
        if (!line.includes('TAPD-GUEST SERVING')) return;
        // From the test, over the namespace's loopback: QEMU's slirp listens there for the guest.
        const get = `require('http').get('http://127.0.0.1:${port}/', (r) => { let s = ''; r.on('data', (d) => s += d); r.on('end', () => { console.log(s.trim()); }); }).on('error', (e) => { console.error(e.message); process.exit(1); })`;
        const r = spawnSync('ip', ['netns', 'exec', lan!.hostNs, 'node', '-e', get], { encoding: 'utf8', timeout: 20_000 });
        fetched = { status: r.status, body: r.stdout.trim() || r.stderr.trim() };
        // INT/TERM/HUP to tapctl go to QEMU: no need to wait out tapd.hold.
        process.kill(pid, 'SIGTERM');
      },
    });
    expect(b.result.serving, why(b)).toBe(80);
    expect(fetched, why(b)).toEqual({ status: 0, body: 'tapd-guest-served' });
    // QEMU handles TERM itself: it says so and exits 0 (before tapd.hold runs out); tapctl passes that on.
    expect(b.serial).toMatch(/terminating on signal 15 from pid \d+/);
    expect(b.result.done, why(b)).toBe(false);
    expect(b.exitCode, why(b)).toBe(0);
    timings.push(`tapctl qemu --user-net: NIC ${b.at.NIC}, LEASE ${b.at.LEASE} (slirp), SERVING ${b.at.SERVING}`);
  });
});
