// Issue 14 with real guests (test/guest) on the sandbox LAN: a guest on a macvtap lease (the
// sandbox's uplink0 veth stands in for the NIC) gets its DHCP lease and the page, and the lease
// ends when QEMU exits; a running guest gets a NIC hot-plugged by `tapctl attach` over QMP,
// runs DHCP and fetches the page over it, and `tapctl detach` removes it and ends its lease.
// Needs root and a build. TCG: several seconds per boot.
import { spawn, spawnSync } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureGuest, guestArgs, runGuest } from '../helpers/guest.js';
import { LAN_INDEX_FIRST_LINE, LAN_ROUTER, startLan, type Lan } from '../helpers/lan.js';
import { DIST, NOBODY, Netns, asUser, startTapd, until, type DaemonHandle } from '../helpers/netns.js';

const isRoot = process.getuid?.() === 0;
const TAPCTL = path.join(DIST, 'cli/tapctl.js');

interface Site {
  lan: Lan;
  ns: Netns;
  daemon: DaemonHandle;
}
let mv: Site | undefined;
let br: Site | undefined;
let qmpDir: string | undefined;

beforeAll(async () => {
  if (!isRoot) return;
  ensureGuest();
  const lan1 = await startLan(`tm${process.pid}`);
  const ns1 = Netns.attach(lan1.hostNs);
  mv = { lan: lan1, ns: ns1, daemon: await startTapd(ns1, 'network mv macvtap uplink0\npermit @nogroup on mv leases 2 queues 2\n') };
  const lan2 = await startLan(`th${process.pid}`, { bridge: true });
  const ns2 = Netns.attach(lan2.hostNs);
  br = { lan: lan2, ns: ns2, daemon: await startTapd(ns2, 'network lan bridge br0\npermit @nogroup on lan leases 3\n') };
  qmpDir = mkdtempSync(path.join(os.tmpdir(), 'tapd-vmqmp-'));
  chownSync(qmpDir, NOBODY, NOBODY);
}, 600_000);

afterAll(async () => {
  await mv?.daemon.stop();
  await mv?.lan.stop();
  await br?.daemon.stop();
  await br?.lan.stop();
  if (qmpDir) rmSync(qmpDir, { recursive: true, force: true });
});

function asNobody(site: Site, argv: string[]): string[] {
  return ['ip', 'netns', 'exec', site.lan.hostNs, ...asUser({ uid: NOBODY }), ...argv];
}

function tapctl(site: Site, ...args: string[]): string[] {
  return asNobody(site, ['node', TAPCTL, '--socket', site.daemon.socket, ...args]);
}

/** The guest's QEMU arguments without its -device (tapctl adds it). */
function guestNoDevice(extraCmdline?: string): string[] {
  const args = guestArgs({ model: 'virtio-net-pci', mac: '52:54:00:00:00:01', ...(extraCmdline ? { extraCmdline } : {}) });
  args.splice(args.indexOf('-device'), 2);
  return args;
}

const inRange = (ip: string | undefined) => /^198\.18\.0\.1\d\d$/.test(ip ?? '');

describe.skipIf(!isRoot)('guests and issue 14', { timeout: 300_000 }, () => {
  it('a guest on a macvtap lease gets a DHCP lease from the LAN and the page; the lease and the device end with QEMU', async () => {
    const site = mv!;
    const b = await runGuest(tapctl(site, 'qemu', '-v', '-b', 'mv', '--', ...guestNoDevice()), { timeoutMs: 200_000 });
    const why = `${b.serial}\n--- dnsmasq:\n${site.lan.dnsmasqLog()}`;
    const mac = /^tapctl: \S+: (mvt[0-9a-f]{8}) on mv, MAC (\S+),/m.exec(b.serial);
    expect(mac, why).not.toBeNull();
    expect(b.result.lease, why).toBeDefined();
    expect(inRange(b.result.lease?.ip), why).toBe(true);
    expect(b.result.lease?.router, why).toBe(LAN_ROUTER);
    expect(b.result.fetch, why).toEqual({ ok: true, line: LAN_INDEX_FIRST_LINE });
    expect(b.result.nic?.mac, why).toBe(mac![2]);
    expect(site.lan.leases(), why).toContain(`${mac![2]} ${b.result.lease!.ip}`);
    expect(b.exitCode, why).toBe(0);
    // QEMU exited: its fds were the node's last open files.
    const end = await site.daemon.waitFor('lease_end', { ifname: mac![1] }, 10_000);
    expect(end.reason).toBe('last fd closed');
    await until(() => !site.ns.links().some((l) => l.linkinfo?.info_kind === 'macvtap'), 5000);
    expect(site.ns.links().filter((l) => l.linkinfo?.info_kind === 'macvtap')).toEqual([]);
  });

  it('tapctl attach hot-plugs a NIC into a running guest over QMP; the guest uses it; tapctl detach removes it and the lease ends', async () => {
    const site = br!;
    const qmp = path.join(qmpDir!, 'vm.qmp');
    const steps: string[] = [];
    const runs: Array<Promise<{ code: number | null; out: string }>> = [];
    const run = (argv: string[]) => {
      const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const done = new Promise<{ code: number | null; out: string }>((r) => p.once('close', (code) => r({ code, out })));
      runs.push(done);
      return done;
    };
    let attached: { code: number | null; out: string } | undefined;
    let detached: { code: number | null; out: string } | undefined;
    let endedWhileRunning: Record<string, unknown> | undefined;
    const b = await runGuest(tapctl(site, 'qemu', '-b', 'lan', '--', ...guestNoDevice('tapd.hotplug=60 tapd.hold=60'), '-qmp', `unix:${qmp},server,wait=off`), {
      timeoutMs: 250_000,
      onLine: (line, pid) => {
        if (line.includes('TAPD-GUEST FETCH ')) {
          steps.push('attach');
          void run(tapctl(site, 'attach', '--qmp', qmp, '-b', 'lan', '--model', 'e1000', '--id', 'hp1')).then((r) => (attached = r));
        }
        if (line.includes('TAPD-GUEST HOTPLUG FETCH')) {
          steps.push('detach');
          void run(asNobody(site, ['node', TAPCTL, 'detach', '--qmp', qmp, 'hp1'])).then(async (r) => {
            detached = r;
            // netdev_del closed QEMU's fd, the TAP's last: the lease ends while QEMU still runs.
            const lease = /lease ([0-9a-f]{16})$/m.exec(attached?.out ?? '')?.[1];
            endedWhileRunning = await site.daemon.waitFor('lease_end', { lease }, 10_000).catch(() => undefined);
            process.kill(pid, 'SIGTERM'); // tapctl passes it on; QEMU exits 0
          });
        }
      },
    });
    await Promise.all(runs);
    const why = `${b.serial}\n--- attach: ${JSON.stringify(attached)}\n--- detach: ${JSON.stringify(detached)}\n--- dnsmasq:\n${site.lan.dnsmasqLog()}`;
    expect(steps, why).toEqual(['attach', 'detach']);
    expect(attached?.code, why).toBe(0);
    const m = /^attached hp1: (tap[0-9a-f]{8}) on lan, MAC (\S+), lease ([0-9a-f]{16})$/m.exec(attached!.out);
    expect(m, why).not.toBeNull();
    const hpNic = b.result.lines.find((l) => l.startsWith('TAPD-GUEST HOTPLUG NIC '));
    expect(hpNic, why).toMatch(new RegExp(`^TAPD-GUEST HOTPLUG NIC \\S+ ${m![2]} e1000$`));
    const hpLease = /^TAPD-GUEST HOTPLUG LEASE (\S+)\/\d+ router=(\S+)$/m.exec(b.result.lines.join('\n'));
    expect(hpLease, why).not.toBeNull();
    expect(inRange(hpLease![1]), why).toBe(true);
    expect(site.lan.leases(), why).toContain(`${m![2]} ${hpLease![1]}`);
    expect(b.result.lines, why).toContain(`TAPD-GUEST HOTPLUG FETCH ok ${LAN_INDEX_FIRST_LINE}`);
    expect(detached?.code, why).toBe(0);
    expect(detached?.out, why).toBe('detached hp1\n');
    expect(b.result.lines, why).toContain('TAPD-GUEST HOTPLUG GONE');
    expect(endedWhileRunning, why).toMatchObject({ lease: m![3], ifname: m![1], reason: 'device gone' });
    expect(b.serial).toMatch(/terminating on signal 15/);
    expect(b.exitCode, why).toBe(0);
  });

  it('tapctl attach shows QEMU\'s own error, and leaves no lease behind', async () => {
    const site = br!;
    const qmp = path.join(qmpDir!, 'err.qmp');
    let attached: { status: number | null; modelStatus: number | null; out: string } | undefined;
    const b = await runGuest(tapctl(site, 'qemu', '-b', 'lan', '--', ...guestNoDevice('tapd.hotplug=3'), '-qmp', `unix:${qmp},server,wait=off`), {
      timeoutMs: 200_000,
      onLine: (line) => {
        if (!line.includes('TAPD-GUEST FETCH ')) return;
        const argv = tapctl(site, 'attach', '--qmp', qmp, '-b', 'lan', '--model', 'no-such-nic', '--id', 'bad1');
        // Model names tapctl does not know go to QEMU, which refuses this one; and a duplicate id.
        const r1 = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
        const dup = tapctl(site, 'attach', '--qmp', qmp, '-b', 'lan', '--id', 'net0');
        const r2 = spawnSync(dup[0]!, dup.slice(1), { encoding: 'utf8' });
        attached = { status: r2.status, modelStatus: r1.status, out: `${r1.stderr}|${r2.stderr}` };
      },
    });
    expect(attached?.out, b.serial).toMatch(/QEMU refused device_add: .*no-such-nic/);
    expect(attached?.modelStatus, b.serial).not.toBe(0);
    expect(attached?.status, b.serial).not.toBe(0);
    // QEMU's words, as it gave them (a netdev id that already exists).
    expect(attached?.out, b.serial).toMatch(/QEMU refused netdev_add: Duplicate ID 'net0'/);
    expect(b.exitCode, b.serial).toBe(0);
    await until(() => JSON.parse(spawnSync(tapctl(site, 'list', '--json')[0]!, tapctl(site, 'list', '--json').slice(1), { encoding: 'utf8' }).stdout).length === 0, 5000);
    const list = spawnSync(tapctl(site, 'list', '--json')[0]!, tapctl(site, 'list', '--json').slice(1), { encoding: 'utf8' });
    expect(JSON.parse(list.stdout)).toEqual([]);
  });
});
