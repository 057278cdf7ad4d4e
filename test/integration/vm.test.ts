// Issue 14, daemon level: macvtap leases on a NIC (a veth standing in for it) and VLAN networks
// on a VLAN-filtering bridge, with real devices, real fds and unprivileged clients.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { captureOne, client, NOBODY, Netns, startTapd, testFrame, until, type DaemonHandle } from '../helpers/netns.js';
import { endHolders, Holder, type Opened } from '../helpers/holder.js';

const NOGROUP = 65534;
const me = { uid: NOBODY, gid: NOGROUP };
const isRoot = process.getuid?.() === 0;

/** Whether this kernel has bridge VLAN filtering and 802.1Q sub-interfaces (tried in a scratch namespace). */
function vlanKernel(): { filtering: boolean; dot1q: boolean } {
  if (!isRoot) return { filtering: false, dot1q: false };
  const ns = Netns.create('vlprobe');
  try {
    const filtering = spawnSync('ip', ['-n', ns.name, 'link', 'add', 'b0', 'type', 'bridge', 'vlan_filtering', '1']).status === 0;
    spawnSync('ip', ['-n', ns.name, 'link', 'add', 'd0', 'type', 'dummy']);
    const dot1q = spawnSync('ip', ['-n', ns.name, 'link', 'add', 'link', 'd0', 'name', 'd0.20', 'type', 'vlan', 'id', '20']).status === 0;
    return { filtering, dot1q };
  } finally {
    ns.destroy();
  }
}
const VLAN = vlanKernel();

const RECORDING_HOOK = (dir: string) => `#!/bin/sh
echo "$TAPD_EVENT $1 $TAPD_LEASE_ID $TAPD_MAC" >> ${dir}/hooks.log
`;



afterEach(async () => {
  await endHolders();
});

/** An 802.1Q-tagged test frame: what a guest could write to try to reach another VLAN. */
function taggedFrame(srcMac: string, vid: number, marker: string): string {
  const plain = testFrame(srcMac, marker);
  return plain.slice(0, 24) + '8100' + vid.toString(16).padStart(4, '0') + plain.slice(24, plain.length - 8);
}

describe.skipIf(!isRoot)('macvtap networks', () => {
  let host: Netns;
  let lan: Netns;
  let d: DaemonHandle;
  const hookLog = () => (existsSync(path.join(d.dir, 'hooks.log')) ? readFileSync(path.join(d.dir, 'hooks.log'), 'utf8') : '');
  const macvtaps = () => host.links().filter((l) => l.linkinfo?.info_kind === 'macvtap');

  beforeAll(async () => {
    host = Netns.create('mvhost');
    lan = Netns.create('mvlan');
    for (const [nic, peer] of [['nic0', 'lan0'], ['nic1', 'lan1']]) {
      host.run('ip', ['link', 'add', nic!, 'type', 'veth', 'peer', 'name', peer!, 'netns', lan.name]);
      host.run('ip', ['link', 'set', nic!, 'up']);
      lan.run('ip', ['link', 'set', peer!, 'up']);
    }
    d = await startTapd(host, `
network mv macvtap nic0 up @DIR@/hooks/rec down @DIR@/hooks/rec
network mvp macvtap nic0 mode private
network mvx macvtap nic1
network gone macvtap nosuch0
permit @nogroup on mv leases 2 queues 2 mac
permit @nogroup on mvp queues 2
permit @nogroup on mvx
permit @nogroup on gone
`, { 'hooks/rec': [RECORDING_HOOK('@DIR@'), 0o755] });
  });

  afterAll(async () => {
    await d?.stop();
    host?.destroy();
    lan?.destroy();
  });

  it('gives an unprivileged client a macvtap on the NIC with the guest MAC; a frame reaches the LAN; the lease ends with the last fd', async () => {
    const capture = await captureOne(lan, 'lan0');
    const mac = '52:54:00:5e:00:01';
    const [open, wrote] = client(host, d.socket, [{ op: 'open', network: 'mv', mac }, { frame: testFrame(mac, 'tapd-mvt-1') }], me);
    expect(open).toMatchObject({ ok: true, fds: 1, body: { lease: { network: 'mv', bridge: null, mac, kind: 'macvtap', owner_uid: NOBODY } } });
    const lease = (open!.body as Opened['body']).lease;
    expect(lease.ifname).toMatch(/^mvt[0-9a-f]{8}$/);
    expect(wrote).toEqual({ wrote: 60 });
    const seen = await capture.seen();
    expect(seen).toContain(`${mac} > ff:ff:ff:ff:ff:ff`);
    expect(seen).toContain('tapd-mvt-1');
    // The client exited: its fd was the last open file of /dev/tapN, so tapd deleted the device.
    expect((await d.waitFor('lease_end', { lease: lease.id })).reason).toBe('last fd closed');
    await until(() => hookLog().includes(`down ${lease.ifname} ${lease.id}`), 5000);
    expect(hookLog().split('\n').filter((l) => l.startsWith(`up ${lease.ifname} ${lease.id} ${mac}`))).toHaveLength(1);
    expect(hookLog().split('\n').filter((l) => l.startsWith(`down ${lease.ifname} ${lease.id}`))).toHaveLength(1);
    await until(() => macvtaps().length === 0, 5000);
    expect(macvtaps()).toEqual([]);
  });

  it('the device is a macvtap on the NIC, its MAC the guest\'s, its mode the network\'s; two queues are two fds', async () => {
    const h = new Holder(host, d.socket, { network: 'mvp', queues: 2 });
    const o = await h.opened();
    expect(o).toMatchObject({ ok: true, fds: 2, body: { lease: { kind: 'macvtap', queues: 2 } } });
    const link = host.link(o.body.lease.ifname) as unknown as { address: string; link: string; linkinfo: { info_kind: string; info_data: { mode: string } }; operstate: string };
    expect(link.address).toBe(o.body.lease.mac);
    expect(link.link).toBe('nic0');
    expect(link.linkinfo.info_kind).toBe('macvtap');
    expect(link.linkinfo.info_data.mode).toBe('private');
    // Still there while the client holds its fds.
    await new Promise((r) => setTimeout(r, 600));
    expect(host.link(o.body.lease.ifname)).toBeDefined();
    await h.kill9();
    await d.waitFor('lease_end', { lease: o.body.lease.id });
    await until(() => macvtaps().length === 0, 5000);
    expect(macvtaps()).toEqual([]);
  });

  it('a holder that changes the MAC through its fd (SIOCSIFHWADDR) loses the lease and the device', async () => {
    const h = new Holder(host, d.socket, { network: 'mv' }, [{ setmac: '52:54:00:66:66:66' }]);
    const lines = await h.ready();
    expect(lines[1]).toMatchObject({ setmac: '52:54:00:66:66:66', ok: true });
    const id = (lines[0] as unknown as Opened).body.lease.id;
    expect((await d.waitFor('lease_end', { lease: id })).reason).toMatch(/changed the device's MAC to 52:54:00:66:66:66/);
    await until(() => macvtaps().length === 0, 5000);
    expect(macvtaps()).toEqual([]);
    await h.exit();
  });

  it('the lease ends when the NIC goes away (the kernel deletes its macvtaps)', async () => {
    const h = new Holder(host, d.socket, { network: 'mvx' });
    const o = await h.opened();
    expect(o.ok).toBe(true);
    host.run('ip', ['link', 'del', 'nic1']);
    expect((await d.waitFor('lease_end', { lease: o.body.lease.id })).reason).toBe('device gone');
    await h.exit();
  });

  it('a macvtap network whose NIC does not exist is unavailable, and check says so too', () => {
    const [r, c] = client(host, d.socket, [{ op: 'open', network: 'gone' }, { op: 'check', network: 'gone' }], me);
    expect(r).toMatchObject({ ok: false, code: 'network_unavailable' });
    expect(r!.message).toMatch(/NIC nosuch0 does not exist/);
    expect(c).toMatchObject({ ok: true, body: { allowed: false, code: 'network_unavailable' } });
    expect(macvtaps()).toEqual([]);
  });

  it('re-adopts a live macvtap lease after its own SIGKILL and still ends it when the holder exits', async () => {
    const h = new Holder(host, d.socket, { network: 'mv' });
    const o = await h.opened();
    await d.kill9();
    await d.restart();
    await d.waitFor('lease_recovered', { lease: o.body.lease.id });
    await new Promise((r) => setTimeout(r, 500));
    expect(host.link(o.body.lease.ifname)).toBeDefined();
    await h.exit();
    expect((await d.waitFor('lease_end', { lease: o.body.lease.id })).reason).toBe('last fd closed');
    await until(() => macvtaps().length === 0, 5000);
    expect(macvtaps()).toEqual([]);
  });
});

describe.skipIf(!isRoot)('VLAN networks on a VLAN-filtering bridge', () => {
  let host: Netns;
  let lan: Netns;
  let d: DaemonHandle;
  const portVlans = (dev: string) => {
    const all = JSON.parse(host.run('bridge', ['-j', 'vlan', 'show', 'dev', dev])) as Array<{ ifname: string; vlans: Array<{ vlan: number; flags?: string[] }> }>;
    return (all.find((e) => e.ifname === dev)?.vlans ?? []).map((v) => `${v.vlan}${(v.flags ?? []).map((f) => ` ${f}`).join('')}`);
  };

  beforeAll(async () => {
    host = Netns.create('vlhost');
    lan = Netns.create('vllan');
    host.run('ip', ['link', 'add', 'up1', 'type', 'veth', 'peer', 'name', 'lan1', 'netns', lan.name]);
    lan.run('ip', ['link', 'set', 'lan1', 'up']);
    for (const vid of VLAN.dot1q ? [20, 30] : []) {
      lan.run('ip', ['link', 'add', 'link', 'lan1', 'name', `lan1.${vid}`, 'type', 'vlan', 'id', String(vid)]);
      lan.run('ip', ['link', 'set', `lan1.${vid}`, 'up']);
    }
    host.addBridge('brflat');
    d = await startTapd(host, `
network v20 uplink up1 bridge brv vlan 20
network v30 uplink up1 bridge brv vlan 30
network flat bridge brflat vlan 20
permit @nogroup on v20 leases 2
permit @nogroup on v30 leases 2
permit @nogroup on flat
`);
  });

  afterAll(async () => {
    await d?.stop();
    host?.destroy();
    lan?.destroy();
  });

  it.skipIf(VLAN.filtering)('on a kernel without bridge VLAN filtering: network_unavailable saying so, and no bridge left, the NIC not enslaved', () => {
    const [r] = client(host, d.socket, [{ op: 'open', network: 'v20' }], me);
    expect(r).toMatchObject({ ok: false, code: 'network_unavailable' });
    expect(r!.message).toMatch(/this kernel cannot filter VLANs on a bridge \(built without CONFIG_BRIDGE_VLAN_FILTERING\)/);
    expect(host.link('brv')).toBeUndefined();
    expect(host.link('up1')?.master).toBeUndefined();
  });

  it.skipIf(!VLAN.filtering)('tapd creates the bridge filtering VLANs; each lease\'s port has only its VLAN (PVID, untagged); the uplink carries both tagged', async () => {
    const a = new Holder(host, d.socket, { network: 'v20' });
    const b = new Holder(host, d.socket, { network: 'v30' });
    const [oa, ob] = [await a.opened(), await b.opened()];
    expect(oa).toMatchObject({ ok: true, body: { lease: { bridge: 'brv', vlan: 20 } } });
    expect(ob).toMatchObject({ ok: true, body: { lease: { bridge: 'brv', vlan: 30 } } });
    expect(host.run('cat', ['/sys/class/net/brv/bridge/vlan_filtering']).trim()).toBe('1');
    expect(portVlans(oa.body.lease.ifname)).toEqual(['20 PVID Egress Untagged']);
    expect(portVlans(ob.body.lease.ifname)).toEqual(['30 PVID Egress Untagged']);
    expect(portVlans('up1')).toEqual(['1 PVID Egress Untagged', '20', '30']);
    await a.exit();
    await b.exit();
  });

  it.skipIf(!VLAN.filtering || !VLAN.dot1q)('a frame on VLAN 20 reaches the LAN tagged 20, never VLAN 30\'s port nor the LAN\'s VLAN 30; a frame tagged 30 by the guest goes nowhere', async () => {
    const b = new Holder(host, d.socket, { network: 'v30' });
    const ob = await b.opened();
    const mac = '52:54:00:20:00:01';
    const on20 = await captureOne(lan, 'lan1.20');
    const on30 = await captureOne(lan, 'lan1.30');
    const at30 = await captureOne(host, ob.body.lease.ifname);
    const [open, wrote] = client(host, d.socket, [{ op: 'open', network: 'v20', mac }, { frame: testFrame(mac, 'tapd-vlan-20') }], me);
    expect(open).toMatchObject({ ok: true });
    expect(wrote).toEqual({ wrote: 60 });
    expect(await on20.seen()).toContain('tapd-vlan-20');
    expect(await on30.seen()).toBe('');
    expect(await at30.seen()).toBe('');
    // VLAN hopping: the guest tags its frame with VLAN 30 itself. Ingress filtering drops it.
    const hop30 = await captureOne(lan, 'lan1.30');
    const hopAt30 = await captureOne(host, ob.body.lease.ifname);
    const [o2, w2] = client(host, d.socket, [{ op: 'open', network: 'v20', mac }, { frame: taggedFrame(mac, 30, 'tapd-hop-30') }], me);
    expect(o2).toMatchObject({ ok: true });
    expect(w2).toMatchObject({ wrote: 64 });
    expect(await hop30.seen()).toBe('');
    expect(await hopAt30.seen()).toBe('');
    await b.exit();
  });

  it('refuses a VLAN network on an admin\'s bridge that does not filter VLANs', () => {
    const [r, c] = client(host, d.socket, [{ op: 'open', network: 'flat' }, { op: 'check', network: 'flat' }], me);
    expect(r).toMatchObject({ ok: false, code: 'network_unavailable' });
    expect(r!.message).toMatch(/bridge brflat does not filter VLANs/);
    expect(c).toMatchObject({ ok: true, body: { allowed: false, code: 'network_unavailable' } });
  });
});
