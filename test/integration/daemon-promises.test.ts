// What the docs promise about the daemon, each through real requests from unprivileged clients:
// down hooks, undelivered replies, check = open, MTUs, STP, revoke, networks.
import { chmodSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, NOBODY, Netns, ROOT, startTapd, tempDir, until, type DaemonHandle } from '../helpers/netns.js';
import { req } from '../helpers/raw.js';

const me = { uid: NOBODY, gid: 65534 };
const STRANGER = { uid: 4242, gid: 4242 };

const CONFIG = `
network downonly bridge br0 down @DIR@/hooks/rec
network slow bridge br0s create up @DIR@/hooks/slow down @DIR@/hooks/rec
network stp bridge brstp0
network jumbo bridge brj0
network secret bridge brs0
permit @nogroup on downonly leases 4
permit @nogroup on slow
permit @nogroup on stp
permit @nogroup on jumbo mtu queues 2
admin 4343
permit root on slow
limits hook-timeout 5s
`;

const REC = (dir: string) => `#!/bin/sh
echo "$TAPD_EVENT $1 $TAPD_LEASE_ID" >> ${dir}/hooks.log
`;

describe('daemon promises', () => {
  let ns: Netns;
  let d: DaemonHandle;
  const taps = () => ns.links().filter((l) => l.linkinfo?.info_kind === 'tun').map((l) => l.ifname);
  const hookLog = () => (existsSync(path.join(d.dir, 'hooks.log')) ? readFileSync(path.join(d.dir, 'hooks.log'), 'utf8') : '');

  /** A client (uid 65534) holding one lease until end(). */
  const hold = async (request: Record<string, unknown>) => {
    const p = ns.spawn('node', [path.join(ROOT, 'test/fixtures/client.mjs'), d.socket, JSON.stringify([{ op: 'open', ...request }, { hold: 30_000 }])], me);
    let out = '';
    p.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    await until(() => out.includes('\n'), 10_000);
    const lease = (JSON.parse(out.split('\n')[0]!) as { body: { lease: { id: string; ifname: string; mtu: number } } }).body.lease;
    return {
      lease,
      end: async () => {
        p.kill('SIGKILL');
        await new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r(null) : p.once('exit', r)));
      },
    };
  };

  beforeAll(async () => {
    ns = Netns.create('promise');
    ns.addBridge('br0');
    ns.addBridge('brstp0');
    ns.run('ip', ['link', 'set', 'brstp0', 'type', 'bridge', 'stp_state', '1']);
    // No ports and no MTU set: a bridge like this follows its smallest port, so a jumbo TAP
    // alone on it would take the bridge (and any address on it) to 9000.
    ns.addBridge('brj0');
    ns.addBridge('brs0');
    d = await startTapd(ns, CONFIG, {
      'hooks/rec': [REC('@DIR@'), 0o755],
      'hooks/slow': ['#!/bin/sh\nsleep 1.5\n', 0o755],
    });
  });

  afterAll(async () => {
    await d?.stop();
    ns?.destroy();
  });

  it('runs the down hook once for a network that has only a down hook', async () => {
    const [r] = client(ns, d.socket, [{ op: 'open', network: 'downonly' }], me);
    const lease = (r!.body as { lease: { ifname: string; id: string } }).lease;
    await until(() => hookLog().includes(`down ${lease.ifname} ${lease.id}`), 5000);
    expect(hookLog().split('\n').filter((l) => l === `down ${lease.ifname} ${lease.id}`)).toHaveLength(1);
  });

  it('a reply that cannot be delivered ends its lease: no device stays, the down hook runs', async () => {
    // Ask, then go away while the slow up hook runs.
    const s = net.connect(d.socket);
    await new Promise((r) => s.once('connect', r));
    s.write(req({ op: 'open', network: 'slow' }));
    // The bridge is made just before the up hook starts: leave while the hook runs.
    await d.waitFor('bridge_created', { bridge: 'br0s' });
    s.destroy();
    const undelivered = await d.waitFor('lease_undelivered', {}, 10_000);
    await d.waitFor('lease_end', { lease: undelivered.lease }, 10_000);
    await until(() => taps().length === 0, 5000);
    expect(taps()).toEqual([]);
    await until(() => hookLog().includes(`down ${undelivered.ifname} ${undelivered.lease}`), 5000);
    expect(d.events().some((e) => e.event === 'lease_start' && e.lease === undelivered.lease)).toBe(false);
  });

  it('tells a client that asked for progress how long the up hook may take', async () => {
    const s = net.connect(d.socket);
    const frames: Array<Record<string, unknown>> = [];
    let buf = Buffer.alloc(0);
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        frames.push(JSON.parse(buf.subarray(4, 4 + buf.readUInt32BE(0)).toString()));
        buf = buf.subarray(4 + buf.readUInt32BE(0));
      }
    });
    await new Promise((r) => s.once('connect', r));
    s.write(req({ op: 'open', network: 'slow', progress: true }));
    await until(() => frames.length >= 2, 10_000);
    s.destroy();
    expect(frames[0]).toEqual({ v: 1, ok: true, pending: { waiting_for: "the network's up hook", timeout_ms: 5000 } });
    expect(frames[1]).toMatchObject({ ok: true, lease: { network: 'slow' } });
    await until(() => taps().length === 0, 5000);
  });

  it('check gives every refusal the open gives, and opens nothing', () => {
    const cases: Array<Record<string, unknown>> = [
      { network: 'downonly', mtu: 1280 }, // needs the mtu option: denied
      { network: 'jumbo', mtu: 1280 }, // below the bridge's: mtu_too_small
      { network: 'jumbo', queues: 4 }, // above the rule's queues
      { network: 'jumbo', mac: '01:00:5e:00:00:01' },
      { network: 'secret' },
      { network: 'nosuch' },
    ];
    for (const c of cases) {
      const [chk, open] = client(ns, d.socket, [{ op: 'check', ...c }, { op: 'open', ...c }], me);
      const body = chk!.body as { allowed: boolean; code: string; reason: string };
      expect(body.allowed, JSON.stringify(c)).toBe(false);
      expect({ code: body.code, message: body.reason }).toEqual({ code: open!.code, message: open!.message });
    }
    expect(taps()).toEqual([]);
  });

  it('an MTU above the bridge\'s, where the rule grants mtu, never moves the bridge\'s own MTU', async () => {
    const before = ns.link('brj0')!.mtu;
    const h = await hold({ network: 'jumbo', mtu: 9000 });
    try {
      expect(h.lease).toMatchObject({ mtu: 9000 });
      expect(ns.link(h.lease.ifname)).toMatchObject({ mtu: 9000, master: 'brj0' });
      expect(before).toBe(1500);
      expect(ns.link('brj0')!.mtu).toBe(before);
    } finally {
      await h.end();
    }
  });

  it('warns in check when the bridge has STP on', () => {
    const [r] = client(ns, d.socket, [{ op: 'check', network: 'stp' }], me);
    expect(r!.body).toMatchObject({ allowed: true, warnings: [expect.stringMatching(/STP on/)] });
  });

  it('networks lists only what the caller may use, with what the rule grants', () => {
    const [mine] = client(ns, d.socket, [{ op: 'networks' }], me);
    const names = (mine!.body as { networks: Array<{ name: string }> }).networks.map((n) => n.name).sort();
    expect(names).toEqual(['downonly', 'jumbo', 'slow', 'stp']);
    expect((mine!.body as { networks: Array<Record<string, unknown>> }).networks.find((n) => n.name === 'jumbo'))
      .toMatchObject({ mode: 'bridged', bridge: 'brj0', grants: { queues: 2, mtu: true, mac: false } });
    const [theirs] = client(ns, d.socket, [{ op: 'networks' }], STRANGER);
    expect((theirs!.body as { networks: unknown[] }).networks).toEqual([]);
  });

  it('revoke: an admin ends a lease (device gone, down hook once, logged); others may not', async () => {
    const h = await hold({ network: 'downonly' });
    const { lease } = h;
    try {
      expect(client(ns, d.socket, [{ op: 'revoke', lease: lease.id }], me)[0]).toMatchObject({ ok: false, code: 'forbidden' });
      expect(client(ns, d.socket, [{ op: 'revoke', lease: '0000000000000000' }], { uid: 4343, gid: 4343 })[0]).toMatchObject({ ok: false, code: 'not_found' });
      const [r] = client(ns, d.socket, [{ op: 'revoke', user: NOBODY, network: 'downonly' }], { uid: 4343, gid: 4343 });
      expect(r).toMatchObject({ ok: true, body: { revoked: [{ id: lease.id }] } });
      expect(taps()).not.toContain(lease.ifname);
      const end = await d.waitFor('lease_end', { lease: lease.id });
      expect(end.reason).toBe('revoked by uid 4343');
      await d.waitFor('lease_revoked', { lease: lease.id, peer_uid: 4343 });
      await until(() => hookLog().includes(`down ${lease.ifname} ${lease.id}`), 5000);
      expect(hookLog().split('\n').filter((l) => l === `down ${lease.ifname} ${lease.id}`)).toHaveLength(1);
    } finally {
      await h.end();
    }
  });
});

describe('a broken configuration under socket activation', () => {
  it('tells the client that tapd cannot start and where to look, instead of a reset connection', async () => {
    const ns = Netns.create('broken');
    const dir = tempDir('broken');
    try {
      writeFileSync(path.join(dir, 'tapd.conf'), 'network lan bridge br0\npermit @nogroup onn lan\n', { mode: 0o644 });
      const sock = path.join(dir, 'tapd.sock');
      const launcher = ns.spawn('systemd-socket-activate', ['-l', sock, 'node', path.join(ROOT, 'dist/cli/tapd.js'),
        '--config', path.join(dir, 'tapd.conf'), '--state-dir', path.join(dir, 'state')]);
      let out = '';
      launcher.stderr!.on('data', (x: Buffer) => (out += x.toString()));
      try {
        await until(() => out.includes('Listening on'), 10_000);
        chmodSync(sock, 0o666);
        const [r] = client(ns, sock, [{ op: 'status' }], me);
        expect(r).toMatchObject({ ok: false, code: 'config_invalid' });
        expect(String(r!.message)).toMatch(/tapd cannot start: its configuration \S+tapd\.conf has errors; .*tapd --check-config/);
      } finally {
        launcher.kill('SIGTERM');
        await new Promise((r) => (launcher.exitCode !== null || launcher.signalCode !== null ? r(null) : launcher.once('exit', r)));
      }
    } finally {
      ns.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
