// tapd's OVSDB client against a real two-hypervisor OVN (test/helpers/ovn.ts; needs root): a TAP
// on each hypervisor goes on br-int through the client with iface-id = a logical port, ovn-controller
// installs it, a test guest on each gets its address from OVN's native DHCP and guest a fetches a
// page from guest b across Geneve. Then the failure paths: nothing stale is left on the switch.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, chownSync, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { OvsdbClient, OvsdbError } from '../../src/daemon/ovsdb.js';
import { ensureGuest, guestArgs, runGuest, type GuestRun } from '../helpers/guest.js';
import { SANDBOX_SH } from '../helpers/lan.js';
import { DIST, NOBODY } from '../helpers/netns.js';
import { OVN_PORTS, OVN_ROUTER, startOvnLab, type Hypervisor, type OvnLab } from '../helpers/ovn.js';

const isRoot = process.getuid?.() === 0;
const haveOvn = existsSync('/usr/bin/ovn-controller') && existsSync('/usr/sbin/ovs-vswitchd') && existsSync('/usr/bin/ovn-northd');

/** QEMU as nobody in hv's namespace, on the TAP `tap` (owned by nobody). */
function qemu(hv: Hypervisor, tap: string, mac: string, cmdline: string): string[] {
  return ['bash', '-c', 'source "$0" || exit 1; sandbox_exec_as "$@"', SANDBOX_SH, hv.ns.name, String(NOBODY), String(NOBODY),
    'qemu-system-x86_64',
    // The userspace datapath reads the TAP with AF_PACKET and forwards partial checksums as they
    // are (see test/helpers/ovn.ts): the guest must finish its own.
    ...guestArgs({ model: 'virtio-net-pci,csum=off,guest_csum=off', mac, extraCmdline: cmdline }),
    '-netdev', `tap,id=n0,ifname=${tap},script=no,downscript=no`];
}

describe.skipIf(!isRoot || !haveOvn)('lease ports on OVN (two userspace-datapath hypervisors, Geneve)', { timeout: 300_000 }, () => {
  let lab: OvnLab | undefined;
  const clients: OvsdbClient[] = [];
  let pids: number[] = [];

  const db = async (hv: Hypervisor): Promise<OvsdbClient> => {
    const c = await OvsdbClient.connect({ socketPath: hv.dbSock, timeoutMs: 10_000 });
    clients.push(c);
    return c;
  };
  const L = () => lab as OvnLab;
  const ports = (hv: Hypervisor) => hv.vsctl(['list-ports', 'br-int']).split('\n').filter(Boolean);
  const tapdPorts = (hv: Hypervisor) => hv.vsctl(['--bare', '--columns=name', 'find', 'Interface', 'external_ids:tapd-lease!=""']).split(/\s+/).filter(Boolean);
  const binding = (lp: string) => L().sbctl(['--bare', '--columns=chassis', 'find', 'Port_Binding', `logical_port=${lp}`]).trim();
  const chassisUuid = (name: string) => L().sbctl(['--bare', '--columns=_uuid', 'find', 'Chassis', `name=${name}`]).trim();

  beforeAll(async () => {
    ensureGuest();
    const t0 = performance.now();
    lab = await startOvnLab('ovn');
    pids = lab.pids();
    console.log(`OVN lab up in ${Math.round(performance.now() - t0)} ms: ${JSON.stringify(lab.timings)}`);
  }, 180_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    const dir = lab?.dir;
    await lab?.stop();
    if (lab) {
      // Nothing of the lab survives it: no daemon, namespace or file.
      const alive = pids.filter((p) => existsSync(`/proc/${p}`) && !/^State:\s+Z/m.test(safeRead(`/proc/${p}/status`)));
      expect(alive).toEqual([]);
      expect(existsSync(dir as string)).toBe(false);
      for (const ns of [lab.central, lab.hv.a.ns, lab.hv.b.ns]) expect(existsSync(`/run/netns/${ns.name}`)).toBe(false);
    }
  }, 60_000);

  it('reads the bridge: br-int on the userspace datapath; a missing one is null', async () => {
    const c = await db(L().hv.a);
    expect(await c.bridge('br-int')).toEqual({ name: 'br-int', datapathType: 'netdev' });
    expect(await c.bridge('br-nope')).toBeNull();
  });

  it('tapd\'s own user reaches ovsdb-server only once the admin lets it (the socket is 0750 root:root)', () => {
    const { a } = L().hv;
    // What the daemon (User=tapd, CAP_NET_ADMIN only) would run; nobody plays it here.
    const probe = `import { OvsdbClient } from ${JSON.stringify(path.join(DIST, 'daemon/ovsdb.js'))};
      try { const db = await OvsdbClient.connect({ socketPath: process.argv[1], timeoutMs: 5000 });
        console.log(JSON.stringify(await db.bridge('br-int'))); db.close(); }
      catch (e) { console.log(JSON.stringify({ failure: e.failure, message: e.message })); }`;
    const run = () => {
      const r = a.ns.exec('node', ['--input-type=module', '-e', probe, a.dbSock], { uid: NOBODY, gid: NOBODY });
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as Record<string, unknown>;
    };
    const denied = run();
    expect(denied.failure).toBe('connect');
    expect(String(denied.message)).toContain('EACCES');
    // The grant an admin adds after ovsdb-server starts (docs/ovn.md): group write on the socket.
    chownSync(a.dbSock, 0, NOBODY);
    chmodSync(a.dbSock, 0o770);
    try {
      expect(run()).toEqual({ name: 'br-int', datapathType: 'netdev' });
    } finally {
      chmodSync(a.dbSock, 0o750);
      chownSync(a.dbSock, 0, 0);
    }
  });

  it('ports added through the client carry traffic: OVN DHCP on each guest, a fetch across Geneve', async () => {
    const { a, b } = L().hv;
    const spec = { a: { hv: a, tap: 'tapd-a0', lease: 'lease-a' }, b: { hv: b, tap: 'tapd-b0', lease: 'lease-b' } } as const;
    for (const id of ['a', 'b'] as const) {
      const { hv, tap, lease } = spec[id];
      hv.ns.run('ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap', 'user', String(NOBODY)]);
      hv.ns.run('ip', ['link', 'set', tap, 'up']);
      const c = await db(hv);
      const t0 = performance.now();
      const portSpec = { bridge: 'br-int', port: tap, mac: OVN_PORTS[id].mac, leaseId: lease, ifaceId: OVN_PORTS[id].name };
      let st;
      if (id === 'a') {
        // The steps one by one ...
        await c.addPort(portSpec);
        const added = performance.now();
        st = await c.waitOvnInstalled(tap, 60_000);
        console.log(`hv-a: addPort ${Math.round(added - t0)} ms, ovn-installed after ${Math.round(performance.now() - added)} ms more`);
      } else {
        // ... and as the open path will call them.
        st = await c.attachPort(portSpec, { timeoutMs: 60_000 });
        console.log(`hv-b: attachPort (add + ovn-installed) ${Math.round(performance.now() - t0)} ms`);
      }
      expect(st.externalIds).toMatchObject({ 'iface-id': OVN_PORTS[id].name, 'attached-mac': OVN_PORTS[id].mac, 'tapd-lease': lease, 'ovn-installed': 'true' });
      expect(st.ofport).toBeGreaterThan(0);
      // What an admin sees with ovs-vsctl, and the binding OVN made.
      expect(hv.vsctl(['get', 'Interface', tap, 'external_ids:iface-id']).trim().replace(/^"(.*)"$/, '$1')).toBe(OVN_PORTS[id].name);
      expect(tapdPorts(hv)).toEqual([tap]);
      expect(await c.leasePorts()).toEqual([{ port: tap, bridge: 'br-int', leaseId: lease }]);
      expect(binding(OVN_PORTS[id].name)).toBe(chassisUuid(hv.chassis));
    }

    // Guest b serves; guest a fetches from it once it does.
    let serving!: () => void;
    const bServes = new Promise<void>((r) => (serving = r));
    let bPid: number | undefined;
    const runB = runGuest(qemu(b, spec.b.tap, OVN_PORTS.b.mac, 'tapd.serve=8080 tapd.hold=120 tapd.url=http://127.0.0.1:1/'), {
      timeoutMs: 150_000,
      onLine: (line, pid) => {
        bPid = pid;
        if (line.includes('TAPD-GUEST SERVING')) serving();
      },
    });
    let runA: GuestRun | undefined;
    let gb: GuestRun | undefined;
    try {
      await Promise.race([bServes, runB]);
      runA = await runGuest(qemu(a, spec.a.tap, OVN_PORTS.a.mac, `tapd.url=http://${OVN_PORTS.b.ip}:8080/`), { timeoutMs: 120_000 });
    } finally {
      // b would hold on: end its process group (runGuest made it a group leader).
      if (bPid !== undefined) {
        try {
          process.kill(-bPid, 'SIGTERM');
        } catch {
          // already gone
        }
      }
      gb = await runB;
    }
    const why = `guest a:\n${runA?.serial}\nguest b:\n${gb?.serial}\n${L().logs()}`;
    expect(gb?.result.lease, why).toEqual({ ip: OVN_PORTS.b.ip, prefix: 24, router: OVN_ROUTER });
    expect(gb?.result.serving, why).toBe(8080);
    expect(runA?.result.lease, why).toEqual({ ip: OVN_PORTS.a.ip, prefix: 24, router: OVN_ROUTER });
    expect(runA?.result.fetch, why).toEqual({ ok: true, line: 'tapd-guest-served' });
    console.log(`guest a: LEASE at ${runA?.at.LEASE} ms, FETCH at ${runA?.at.FETCH} ms; guest b: SERVING at ${gb?.at.SERVING} ms`);

    // Lease end: the ports go, OVN releases the bindings, only the TAPs themselves are left (ours to delete).
    for (const id of ['a', 'b'] as const) {
      const { hv, tap, lease } = spec[id];
      const c = await db(hv);
      expect(await c.deletePort(tap, 'some-other-lease')).toBe('foreign');
      expect(await c.deletePort(tap, lease)).toBe('deleted');
      expect(await c.deletePort(tap, lease)).toBe('absent');
      expect(ports(hv).filter((p) => !p.startsWith('ovn-'))).toEqual([]);
      expect(await c.interfaceState(tap)).toBeNull();
      hv.ns.run('ip', ['link', 'del', tap]);
    }
    expect(await untilTrue(() => binding(OVN_PORTS.a.name) === '' && binding(OVN_PORTS.b.name) === '', 30_000)).toBe(true);
  });

  it('failure paths leave no port behind', async () => {
    const { a } = L().hv;
    const c = await db(a);

    // No such bridge: refused in the one transaction, nothing written.
    const e1 = await c.addPort({ bridge: 'br-nope', port: 'tapd-x0', mac: '52:54:00:0a:00:99', leaseId: 'lease-x' }).catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(OvsdbError);
    expect((e1 as OvsdbError).failure).toBe('bridge');
    expect(tapdPorts(a)).toEqual([]);

    // A name that is taken (an admin's port): refused, the admin's port untouched.
    a.vsctl(['add-port', 'br-int', 'admin0', '--', 'set', 'Interface', 'admin0', 'type=internal']);
    const e2 = await c.addPort({ bridge: 'br-int', port: 'admin0', mac: '52:54:00:0a:00:99', leaseId: 'lease-x' }).catch((e: unknown) => e);
    expect((e2 as OvsdbError).failure).toBe('port');
    expect(await c.deletePort('admin0')).toBe('foreign');
    expect(ports(a)).toContain('admin0');
    a.vsctl(['del-port', 'br-int', 'admin0']);

    // The TAP is not there (gone before the switch opened it): ovs-vswitchd's own error, and
    // attachPort (the open path's call) takes the port off again.
    const e3 = await c.attachPort({ bridge: 'br-int', port: 'tapd-ghost', mac: '52:54:00:0a:00:98', leaseId: 'lease-g', ifaceId: OVN_PORTS.a.name }, { timeoutMs: 30_000 }).catch((e: unknown) => e);
    expect((e3 as OvsdbError).failure, String(e3)).toBe('port');
    expect((e3 as OvsdbError).message).toMatch(/could not add tapd-ghost: .*No such device/);
    expect(tapdPorts(a)).toEqual([]);

    // An iface-id with no logical port: never installed; the wait says what to check, the port goes.
    a.ns.run('ip', ['tuntap', 'add', 'dev', 'tapd-x1', 'mode', 'tap']);
    const e4 = await c.attachPort({ bridge: 'br-int', port: 'tapd-x1', mac: '52:54:00:0a:00:97', leaseId: 'lease-x1', ifaceId: 'lp-nowhere' }, { timeoutMs: 3_000 }).catch((e: unknown) => e);
    expect((e4 as OvsdbError).failure, String(e4)).toBe('ovn');
    expect((e4 as OvsdbError).message).toContain('lp-nowhere');
    expect(tapdPorts(a)).toEqual([]);
    a.ns.run('ip', ['link', 'del', 'tapd-x1']);

    // The same TAP without OVN (plain OVS: no iface-id) only waits for ovs-vswitchd.
    a.ns.run('ip', ['tuntap', 'add', 'dev', 'tapd-x2', 'mode', 'tap']);
    const st = await c.attachPort({ bridge: 'br-int', port: 'tapd-x2', mac: '52:54:00:0a:00:95', leaseId: 'lease-x2' }, { timeoutMs: 30_000 });
    expect(st.ofport).toBeGreaterThan(0);
    expect(st.externalIds['iface-id']).toBeUndefined();
    expect(await c.deleteLeasePorts('lease-x2')).toEqual(['tapd-x2']);
    a.ns.run('ip', ['link', 'del', 'tapd-x2']);

    // Leases that ended while tapd was down: found by their tapd-lease mark, removed, admin ports kept.
    a.vsctl(['add-port', 'br-int', 'admin1', '--', 'set', 'Interface', 'admin1', 'type=internal']);
    for (const [port, lease] of [['tapd-s0', 'dead-1'], ['tapd-s1', 'dead-1'], ['tapd-s2', 'live-2']] as const) {
      await c.addPort({ bridge: 'br-int', port, mac: '52:54:00:0a:00:96', leaseId: lease });
    }
    const found = await c.leasePorts();
    expect(found.map((p) => `${p.port}/${p.leaseId}/${p.bridge}`).sort()).toEqual(['tapd-s0/dead-1/br-int', 'tapd-s1/dead-1/br-int', 'tapd-s2/live-2/br-int']);
    const live = new Set(['live-2']);
    for (const p of found) if (!live.has(p.leaseId)) await c.deletePort(p.port, p.leaseId);
    expect(tapdPorts(a)).toEqual(['tapd-s2']);
    expect(await c.deleteLeasePorts('live-2')).toEqual(['tapd-s2']);
    expect(ports(a)).toContain('admin1');
    a.vsctl(['del-port', 'br-int', 'admin1']);
    expect(tapdPorts(a)).toEqual([]);
    expect(ports(a).filter((p) => !p.startsWith('ovn-'))).toEqual([]);
  });
});

function safeRead(p: string): string {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return '';
  }
}

async function untilTrue(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return cond();
}
