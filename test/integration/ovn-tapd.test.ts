// tapd's ovs network kind against a real two-hypervisor OVN (test/helpers/ovn.ts; needs root):
// a tapd in each hypervisor's namespace, on br-int with ovn-wait. Guests started through
// `tapctl qemu --port` as uid 65534 get their addresses from OVN's DHCP and guest a fetches a
// page from guest b across Geneve; the policy decides which logical ports a user may bind;
// the switch keeps no tapd port once the leases end, whether tapd saw them end or was killed
// with SIGKILL meanwhile.
import { type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureGuest, guestArgs, runGuest, type GuestRun } from '../helpers/guest.js';
import { DIST, NOBODY, ROOT, asUser, client, startTapd, until, type DaemonHandle } from '../helpers/netns.js';
import { OVN_PORTS, OVN_ROUTER, OVN_SWITCH, startOvnLab, type Hypervisor, type OvnLab } from '../helpers/ovn.js';

const isRoot = process.getuid?.() === 0;
const haveOvn = existsSync('/usr/bin/ovn-controller') && existsSync('/usr/sbin/ovs-vswitchd') && existsSync('/usr/bin/ovn-northd');
const TAPCTL = path.join(DIST, 'cli/tapctl.js');
/** A second unprivileged user, granted other ports only. */
const OTHER = 65533;
/** A logical port that exists only for the kill -9 test. */
const LP_C = { name: 'lp-c', mac: '52:54:00:0a:00:0c', ip: '198.18.64.12' };

/** tapd.conf on hypervisor `id`: nobody may bind that hypervisor's port (and lp-c / lp-x* on a). */
function config(hv: Hypervisor): string {
  const mine = OVN_PORTS[hv.id].name;
  return `
network ovn ovs-bridge br-int ovn-wait 8s ovsdb ${hv.dbSock}
permit nobody on ovn ports ${mine}${hv.id === 'a' ? ',lp-c,lp-x*' : ''} mac
permit ${OTHER} on ovn ports other-*
`;
}

describe.skipIf(!isRoot || !haveOvn)('tapd on OVN: ovs networks through the daemon', { timeout: 120_000 }, () => {
  let lab: OvnLab | undefined;
  const tapd: Partial<Record<'a' | 'b', DaemonHandle>> = {};
  const holders: ChildProcess[] = [];
  const L = () => lab as OvnLab;
  const D = (id: 'a' | 'b') => tapd[id] as DaemonHandle;
  /** tapd's ports on hv (Interfaces with a tapd-lease mark). */
  const tapdPorts = (hv: Hypervisor) => hv.vsctl(['--bare', '--columns=name', 'find', 'Interface', 'external_ids:tapd-lease!=""']).split(/\s+/).filter(Boolean).sort();
  const ports = (hv: Hypervisor) => hv.vsctl(['list-ports', 'br-int']).split('\n').filter((p) => p && !p.startsWith('ovn-'));
  const binding = (lp: string) => L().sbctl(['--bare', '--columns=chassis', 'find', 'Port_Binding', `logical_port=${lp}`]).trim();
  const leases = (id: 'a' | 'b') => client(L().hv[id].ns, D(id).socket, [{ op: 'list' }], {})[0]?.body as { leases: Array<Record<string, unknown>> };

  beforeAll(async () => {
    ensureGuest();
    lab = await startOvnLab('ovt');
    lab.nbctl(['lsp-add', OVN_SWITCH, LP_C.name, '--', 'lsp-set-addresses', LP_C.name, `${LP_C.mac} ${LP_C.ip}`]);
    for (const id of ['a', 'b'] as const) tapd[id] = await startTapd(lab.hv[id].ns, config(lab.hv[id]));
  }, 120_000);

  afterAll(async () => {
    for (const h of holders) if (h.exitCode === null && h.signalCode === null) h.kill('SIGKILL');
    for (const id of ['a', 'b'] as const) await tapd[id]?.stop();
    await lab?.stop();
  }, 60_000);

  /** Opens with test/fixtures/client.mjs as `uid` in hv's namespace and holds the TAP until `release()`. */
  async function hold(id: 'a' | 'b', port: string, mac: string): Promise<{ body: Record<string, unknown>; ifname: string; release(): Promise<void> }> {
    const proc = L().hv[id].ns.spawn('node', [path.join(ROOT, 'test/fixtures/client.mjs'), D(id).socket,
      JSON.stringify([{ op: 'open', network: 'ovn', port, mac }, { hold: 600_000 }])], { uid: NOBODY });
    holders.push(proc);
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await until(() => out.includes('\n') || proc.exitCode !== null, 30_000);
    const first = JSON.parse(out.split('\n')[0] as string) as { ok: boolean; body: Record<string, unknown> };
    expect(first.ok, out).toBe(true);
    const lease = first.body.lease as Record<string, unknown>;
    return {
      body: lease,
      ifname: String(lease.ifname),
      release: async () => {
        proc.kill('SIGTERM');
        await until(() => proc.exitCode !== null || proc.signalCode !== null, 10_000);
      },
    };
  }

  it('the policy decides which logical ports a user binds, after it let them on the network', () => {
    const { a } = L().hv;
    const sock = D('a').socket;
    const [noPort, notMine, other, stranger, ok, bad] = [
      client(a.ns, sock, [{ op: 'open', network: 'ovn' }])[0],
      client(a.ns, sock, [{ op: 'open', network: 'ovn', port: OVN_PORTS.b.name }])[0],
      client(a.ns, sock, [{ op: 'open', network: 'ovn', port: OVN_PORTS.a.name }], { uid: OTHER })[0],
      client(a.ns, sock, [{ op: 'open', network: 'ovn', port: OVN_PORTS.a.name }], { uid: 65532 })[0],
      client(a.ns, sock, [{ op: 'check', network: 'ovn', port: OVN_PORTS.a.name, mac: OVN_PORTS.a.mac }])[0],
      client(a.ns, sock, [{ op: 'open', network: 'ovn', port: 'lp a' }])[0],
    ];
    const why = () => `${JSON.stringify([noPort, notMine, other, stranger, ok, bad])}\n${D('a').log().slice(-4000)}`;
    expect(noPort, why()).toMatchObject({ ok: false, code: 'denied' });
    expect(noPort?.message).toMatch(/ovn is an Open vSwitch network: name the logical port/);
    expect(notMine).toMatchObject({ ok: false, code: 'denied' });
    expect(notMine?.message).toMatch(/does not grant logical port lp-b \(it grants lp-a,lp-c,lp-x\*\)/);
    expect(other).toMatchObject({ ok: false, code: 'denied' });
    expect(other?.message).toMatch(/does not grant logical port lp-a \(it grants other-\*\)/);
    // No rule for this uid: the same words as for a network that does not exist.
    expect(stranger).toMatchObject({ ok: false, code: 'denied', message: 'no rule permits you on this network (default deny)' });
    expect(client(a.ns, sock, [{ op: 'open', network: 'nowhere', port: 'lp-a' }], { uid: 65532 })[0]?.message).toBe(stranger?.message);
    expect(ok?.body).toMatchObject({ allowed: true });
    expect(bad).toMatchObject({ ok: false, code: 'bad_request' });
    // An existing, granted name that OVN never installs: refused in the end, nothing left on the switch.
    const never = client(a.ns, sock, [{ op: 'open', network: 'ovn', port: 'lp-x1' }])[0];
    expect(never, `${JSON.stringify(never)}\n${why()}`).toMatchObject({ ok: false, code: 'network_unavailable' });
    expect(never?.message).toMatch(/OVN did not install logical port lp-x1 in time/);
    expect(tapdPorts(a), why()).toEqual([]);
    expect(leases('a').leases, why()).toEqual([]);
  });

  it('guests through tapctl qemu --port as uid 65534: OVN DHCP on each, a fetch across Geneve, nothing left after', async () => {
    const { b } = L().hv;
    const tapctl = (id: 'a' | 'b', cmdline: string) => {
      const args = guestArgs({ model: 'virtio-net-pci', mac: OVN_PORTS[id].mac, extraCmdline: cmdline });
      args.splice(args.indexOf('-device'), 2); // tapctl adds the -device
      return ['ip', 'netns', 'exec', L().hv[id].ns.name, ...asUser({ uid: NOBODY }), 'node', TAPCTL, '--socket', D(id).socket,
        'qemu', '-v', '-b', 'ovn', '--port', OVN_PORTS[id].name, '--mac', OVN_PORTS[id].mac, '--',
        // The userspace datapath forwards partial checksums as they are (test/helpers/ovn.ts).
        '-global', 'virtio-net-pci.csum=off', '-global', 'virtio-net-pci.guest_csum=off', ...args];
    };
    let serving!: () => void;
    const bServes = new Promise<void>((r) => (serving = r));
    let bPid: number | undefined;
    const bPorts: string[][] = [];
    const runB = runGuest(tapctl('b', 'tapd.serve=8080 tapd.hold=90 tapd.url=http://127.0.0.1:1/'), {
      timeoutMs: 110_000,
      onLine: (line, pid) => {
        bPid = pid;
        if (line.includes('TAPD-GUEST SERVING')) serving();
      },
    });
    let runA: GuestRun | undefined;
    let gb: GuestRun | undefined;
    try {
      await Promise.race([bServes, runB]);
      bPorts.push(tapdPorts(b));
      runA = await runGuest(tapctl('a', `tapd.url=http://${OVN_PORTS.b.ip}:8080/`), { timeoutMs: 90_000 });
    } finally {
      if (bPid !== undefined) {
        try {
          process.kill(-bPid, 'SIGTERM'); // tapctl passes it on to QEMU
        } catch {
          // already gone
        }
      }
      gb = await runB;
    }
    const why = `guest a:\n${runA?.serial}\nguest b:\n${gb?.serial}\n${L().logs()}\ntapd a:\n${D('a').log().slice(-3000)}`;
    expect(gb?.result.lease, why).toEqual({ ip: OVN_PORTS.b.ip, prefix: 24, router: OVN_ROUTER });
    expect(runA?.result.lease, why).toEqual({ ip: OVN_PORTS.a.ip, prefix: 24, router: OVN_ROUTER });
    expect(runA?.result.fetch, why).toEqual({ ok: true, line: 'tapd-guest-served' });
    expect(runA?.exitCode, why).toBe(0);
    // While b ran, its TAP was tapd's port on br-int, marked with the lease that tapctl -v printed.
    const bLease = /tapctl: net0: (tap[0-9a-f]{8}) on ovn .* lease ([0-9a-f]{16})/.exec(gb?.serial ?? '');
    expect(bLease, why).not.toBeNull();
    expect(bPorts[0]).toEqual([bLease![1]]);
    const added = D('b').events().find((e) => e.event === 'ovs_port_added');
    expect(added).toMatchObject({ lease: bLease![2], ifname: bLease![1], port: 'lp-b', ovn_installed: true });

    // Both guests gone: their leases ended, their ports are off the switch, OVN let the ports go.
    for (const id of ['a', 'b'] as const) {
      const hv = L().hv[id];
      expect(await until(() => tapdPorts(hv).length === 0 && leases(id).leases.length === 0, 10_000), D(id).log().slice(-3000)).toBe(true);
      expect(ports(hv)).toEqual([]);
      expect(hv.ns.links().filter((l) => l.linkinfo?.info_kind === 'tun' && l.ifname.startsWith('tap'))).toEqual([]);
    }
    expect(await until(() => binding('lp-a') === '' && binding('lp-b') === '', 30_000)).toBe(true);
  });

  it('one lease per logical port; kill -9 and restart leave no port behind, and keep live ones', async () => {
    const { a } = L().hv;
    const keep = await hold('a', OVN_PORTS.a.name, OVN_PORTS.a.mac);
    const gone = await hold('a', LP_C.name, LP_C.mac);
    expect(keep.body.port).toBe('lp-a');
    expect(tapdPorts(a)).toEqual([keep.ifname, gone.ifname].sort());
    // A second lease on a bound logical port would move it away from the first VM.
    const twice = client(a.ns, D('a').socket, [{ op: 'open', network: 'ovn', port: OVN_PORTS.a.name }])[0];
    expect(twice).toMatchObject({ ok: false, code: 'port_in_use' });
    expect(tapdPorts(a)).toHaveLength(2);

    await D('a').kill9();
    // While tapd is down: one lease's VM exits, and a crashed open's port (marked, never
    // recorded) sits on the switch beside an admin's own port.
    await gone.release();
    a.vsctl(['add-port', 'br-int', 'tapdorphan', '--', 'set', 'Interface', 'tapdorphan', 'type=internal', 'external_ids:tapd-lease=00000000deadbeef',
      '--', 'set', 'Port', 'tapdorphan', 'external_ids:tapd-lease=00000000deadbeef']);
    a.vsctl(['add-port', 'br-int', 'admin0', '--', 'set', 'Interface', 'admin0', 'type=internal']);
    expect(tapdPorts(a)).toEqual([keep.ifname, gone.ifname, 'tapdorphan'].sort());

    await D('a').restart();
    expect(await until(() => tapdPorts(a).join() === keep.ifname, 10_000), `${tapdPorts(a)}\n${D('a').log().slice(-3000)}`).toBe(true);
    expect(ports(a).sort()).toEqual(['admin0', keep.ifname].sort());
    expect(leases('a').leases.map((l) => l.port)).toEqual(['lp-a']);
    // The lease kept across the restart still binds lp-a, and still ends cleanly.
    expect(client(a.ns, D('a').socket, [{ op: 'open', network: 'ovn', port: OVN_PORTS.a.name }])[0]).toMatchObject({ code: 'port_in_use' });
    await keep.release();
    expect(await until(() => tapdPorts(a).length === 0 && leases('a').leases.length === 0, 10_000), D('a').log().slice(-3000)).toBe(true);
    expect(ports(a)).toEqual(['admin0']);
    a.vsctl(['del-port', 'br-int', 'admin0']);
  });
});
