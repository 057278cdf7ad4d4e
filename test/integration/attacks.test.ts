// A local attacker against the daemon: each test plays one attack class of SECURITY.md for real
// (unprivileged uids, real TAPs and bridges, inside namespaces) and checks that it fails.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { client, NOBODY, Netns, ROOT, startTapd, until, type DaemonHandle } from '../helpers/netns.js';
import { endHolders, Holder } from '../helpers/holder.js';
import { raw, req } from '../helpers/raw.js';

const NOGROUP = 65534;
const me = { uid: NOBODY, gid: NOGROUP };
const MALLORY = { uid: 4242, gid: 4242 };

const CONFIG = `
network lan bridge br0 up @DIR@/hooks/rec down @DIR@/hooks/rec
network plain bridge brp0
network follow bridge brf0
network loop uplink brx0 bridge bry0
permit @nogroup on lan queues 4 mac mtu
permit @nogroup on plain
permit @nogroup on follow
permit @nogroup on loop
limits request-timeout 1s max-connections-per-user 8 hook-timeout 5s
`;

/** Records "EVENT IFNAME IFINDEX LEASE" (the down hook lingers, as a slow real one would). */
const REC = (dir: string) => `#!/bin/sh
echo "$TAPD_EVENT $1 $TAPD_IFINDEX $TAPD_LEASE_ID" >> ${dir}/hooks.log
[ "$TAPD_EVENT" = down ] && sleep 0.2
exit 0
`;



describe('attacks on the privileged path', () => {
  let host: Netns;
  let d: DaemonHandle;
  const taps = () => host.links().filter((l) => l.linkinfo?.info_kind === 'tun').map((l) => l.ifname);
  const hookLog = () => (existsSync(path.join(d.dir, 'hooks.log')) ? readFileSync(path.join(d.dir, 'hooks.log'), 'utf8') : '');
  const macOf = (dev: string) => host.link(dev)!.address;

  /** Runs the attach fixture as `user` with a private world-writable /dev/net/tun (udev's 0666). */
  const attach = (user: { uid: number; gid: number }, name: string, queues: 'multi' | 'single', vnet: 'vnet' | 'novnet') => {
    const cmd = `mount -t tmpfs -o mode=0755 tmpfs /dev/net && mknod -m 0666 /dev/net/tun c 10 200 && exec setpriv --reuid ${user.uid} --regid ${user.gid} --clear-groups -- node ${ROOT}/test/fixtures/tun-attach.mjs ${name} ${queues} ${vnet}`;
    const r = host.exec('unshare', ['-m', 'sh', '-c', cmd]);
    if (r.status !== 0) throw new Error(`attach fixture failed: ${r.stderr}`);
    return JSON.parse(r.stdout) as { ok: boolean; errno?: string };
  };

  beforeAll(async () => {
    host = Netns.create('attack');
    host.addBridge('br0');
    host.addBridge('brp0');
    host.addBridge('brx0');
    // A bridge that follows its ports (MAC never set), whose one port has an fe:ff address.
    host.run('ip', ['link', 'add', 'brf0', 'type', 'bridge']);
    host.run('ip', ['link', 'add', 'vf0', 'address', 'fe:ff:00:00:00:01', 'type', 'veth', 'peer', 'name', 'vf1']);
    host.run('ip', ['link', 'set', 'vf0', 'master', 'brf0', 'up']);
    host.run('ip', ['link', 'set', 'brf0', 'up']);
    d = await startTapd(host, CONFIG, { 'hooks/rec': [REC('@DIR@'), 0o755] });
  });

  afterEach(async () => {
    await endHolders();
    await until(() => taps().length === 0, 5000);
  });

  afterAll(async () => {
    await d?.stop();
    host?.destroy();
  });

  it('class 1: nobody but the owner attaches a queue to a lease, single or multiqueue, with or without vnet_hdr', async () => {
    const mq = new Holder(host, d.socket, { network: 'lan', queues: 4, vnet_hdr: true });
    const sq = new Holder(host, d.socket, { network: 'plain' });
    const multi = (await mq.opened()).body.lease.ifname;
    const single = (await sq.opened()).body.lease.ifname;
    for (const [name, kind] of [[multi, 'multi'], [single, 'single']] as const) {
      for (const queues of ['multi', 'single'] as const) {
        for (const vnet of ['vnet', 'novnet'] as const) {
          const r = attach(MALLORY, name, queues, vnet);
          expect(r.ok, `${name} (${kind}) attached by uid 4242 as ${queues}/${vnet}`).toBe(false);
          // With the matching multiqueue flag only the owner check stands between them and the device.
          if (queues === kind) expect(r.errno).toBe('EPERM');
        }
      }
    }
    // The same attach as the lease's owner works: the refusal above is the owner check, not chance.
    expect(attach(me, multi, 'multi', 'vnet')).toEqual({ ok: true });
    await mq.exit();
    await sq.exit();
  });

  it('class 2: the holder setting its TAP\'s MAC changes no bridge\'s address, and ends its lease', async () => {
    const before = macOf('br0');
    const h = new Holder(host, d.socket, { network: 'lan' }, [{ setmac: '00:00:00:00:00:01' }]);
    const { body } = await h.opened(1);
    expect(h.lines()[1]).toMatchObject({ setmac: '00:00:00:00:00:01', ok: true });
    await d.waitFor('lease_end', { lease: body.lease.id });
    expect(String((await d.waitFor('lease_end', { lease: body.lease.id })).reason)).toMatch(/changed the device's MAC/);
    expect(macOf('br0')).toBe(before);
    await until(() => !taps().includes(body.lease.ifname), 5000);
    expect(taps()).not.toContain(body.lease.ifname);
    await h.exit();
  });

  it('class 2: a bridge that follows its ports keeps its address when a lease joins it', async () => {
    expect(macOf('brf0')).toBe('fe:ff:00:00:00:01');
    const h = new Holder(host, d.socket, { network: 'follow' });
    const { body } = await h.opened();
    expect(host.link(body.lease.ifname)!.master).toBe('brf0');
    expect(macOf('brf0')).toBe('fe:ff:00:00:00:01');
    await h.exit();
  });

  it('class 5: every lease has a name of its own, and hooks get the ifindex', async () => {
    const seen: Array<{ ifname: string; ifindex: number; id: string }> = [];
    for (let i = 0; i < 6; i++) {
      const [r] = client(host, d.socket, [{ op: 'open', network: 'lan' }], me);
      seen.push((r as { body: { lease: { ifname: string; ifindex: number; id: string } } }).body.lease);
    }
    expect(new Set(seen.map((l) => l.ifname)).size).toBe(6);
    await until(() => seen.every((l) => hookLog().includes(`down ${l.ifname} ${l.ifindex} ${l.id}`)), 10_000);
    for (const l of seen) {
      expect(hookLog()).toContain(`up ${l.ifname} ${l.ifindex} ${l.id}`);
      expect(hookLog()).toContain(`down ${l.ifname} ${l.ifindex} ${l.id}`);
    }
  });

  it.each([
    ['TUNSETPERSIST', 1, /persistent/],
    ['TUNSETOWNER', 4242, /owner to 4242/],
    ['TUNSETGROUP', 4242, /group 4242/],
  ])('class 6: %s by the holder ends the lease, deletes the device and runs the down hook', async (ioctl, value, why) => {
    const h = new Holder(host, d.socket, { network: 'lan' }, [{ tunioctl: ioctl, value }]);
    const { body } = await h.opened(1);
    expect(h.lines()[1]).toMatchObject({ ioctl, ok: true });
    const end = await d.waitFor('lease_end', { lease: body.lease.id });
    expect(String(end.reason)).toMatch(why);
    await until(() => !taps().includes(body.lease.ifname), 5000);
    expect(taps()).not.toContain(body.lease.ifname);
    await until(() => hookLog().includes(`down ${body.lease.ifname}`), 5000);
    expect(hookLog().split('\n').filter((l) => l.startsWith(`down ${body.lease.ifname}`))).toHaveLength(1);
    await h.exit();
  });

  it('class 6: a device made persistent while the daemon was down is deleted at restart', async () => {
    // Open, then (while the daemon is dead) make the device persistent and leave.
    const h = new Holder(host, d.socket, { network: 'plain' }, [{ hold: 1500 }, { tunioctl: 'TUNSETPERSIST', value: 1 }]);
    await until(() => h.lines().length > 0, 15_000);
    const { body } = h.lines()[0] as { body: { lease: { ifname: string; id: string } } };
    await d.kill9();
    await h.opened(1);
    expect(h.lines()[1]).toMatchObject({ ioctl: 'TUNSETPERSIST', ok: true });
    await h.exit();
    expect(taps()).toContain(body.lease.ifname); // persistent: it outlived its holder
    await d.restart();
    await until(() => !taps().includes(body.lease.ifname), 5000);
    expect(taps()).not.toContain(body.lease.ifname);
    expect(String((await d.waitFor('lease_end', { lease: body.lease.id })).reason)).toMatch(/persistent/);
  });

  it('class 7: one uid flooding connections does not keep another from its TAP', async () => {
    const flood = spawn('ip', ['netns', 'exec', host.name, 'setpriv', '--reuid', '4242', '--regid', '4242', '--clear-groups', '--',
      'node', '-e', `
        const net = require('node:net');
        const end = Date.now() + 6000;
        let open = 0;
        const one = () => {
          if (Date.now() > end) return;
          open++;
          const s = net.connect(process.argv[1]);
          s.on('error', () => {});
          s.on('close', () => { open--; setImmediate(one); });
        };
        for (let i = 0; i < 400; i++) one();
        setTimeout(() => process.exit(0), 6500);`, d.socket], { stdio: 'ignore' });
    // Ended by pid whatever happens: it exits on its own after 6.5 s, or here.
    onTestFinished(() => {
      flood.kill('SIGKILL');
    });
    // Until the flood holds its whole share of connections.
    const connections = async () => ((await raw(d.socket, [req({ op: 'status' })], { replies: 1 })).replies[0]?.status as { connections: number } | undefined)?.connections ?? 0;
    for (const end = Date.now() + 10_000; Date.now() < end && (await connections()) < 8;);
    let granted = 0;
    for (let i = 0; i < 10; i++) {
      const [r] = client(host, d.socket, [{ op: 'open', network: 'plain' }], me);
      if (r?.ok) granted++;
    }
    expect(granted).toBe(10);
    await new Promise((r) => flood.once('exit', r));
  });

  it('class 7: a uid over its connection share is told why, not a bare EPIPE', () => {
    // uid 4242 holds its whole share (8) idle, then asks 20 times, sync and async. tapd refuses
    // each at accept (one send, then close), often before the client's own send, which then
    // fails with EPIPE: the client must still read and report the refusal waiting for it.
    const script = `
      const net = require('node:net');
      const held = [];
      let up = 0;
      for (let i = 0; i < 8; i++) {
        const s = net.connect(process.argv[1], () => { if (++up === 8) setTimeout(ask, 150); });
        s.on('error', () => {});
        held.push(s);
      }
      const ask = async () => {
        const c = await import(process.argv[2]);
        const out = [];
        const one = async (f) => { try { await f(); out.push('ok'); } catch (e) { out.push(e.code + ': ' + e.message); } };
        for (let i = 0; i < 10; i++) await one(() => c.requestSync(process.argv[1], { op: 'status' }, 2000));
        for (let i = 0; i < 10; i++) await one(() => c.request(process.argv[1], { op: 'status' }, 2000));
        console.log(JSON.stringify(out));
        process.exit(0);
      };`;
    const r = host.exec('node', ['-e', script, d.socket, path.join(ROOT, 'dist/client/client.js')], MALLORY);
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as string[];
    expect(out).toHaveLength(20);
    for (const line of out) expect(line).toBe('busy: you have too many connections open to tapd; try again in a moment');
  });

  it('class 7: a client that pipelines and never reads loses its connection within the deadline', async () => {
    const net = await import('node:net');
    const s = net.connect(d.socket);
    s.pause();
    await new Promise((r) => s.once('connect', r));
    // Enough requests that their replies would fill the socket buffer of a daemon that answered them all.
    s.write(Buffer.concat(Array.from({ length: 5000 }, () => req({ op: 'status' }))));
    // The client never reads: the daemon must still be done with it (one answer, then close)
    // well within its deadlines, leaving only the status connection that asks.
    const others = async () => ((await raw(d.socket, [req({ op: 'status' })], { replies: 1 })).replies[0]!.status as { connections: number }).connections - 1;
    let left = await others();
    for (const end = Date.now() + 5000; left > 0 && Date.now() < end;) left = await others();
    expect(left).toBe(0);
    s.destroy();
  });

  it('class 9: a denied user gets the same answer for existing and missing networks, whatever else it asks', () => {
    const variants: Array<Record<string, unknown>> = [
      {}, { mac: '01:00:5e:00:00:01' }, { mac: '00:00:00:00:00:00' }, { mac: '52:54:00:zz:00:01' }, { mac: '52:54:00:00:00:01' },
      { queues: 16 }, { queues: 4, vnet_hdr: true }, { mtu: 68 }, { mtu: 9000 }, { vhost: true },
    ];
    for (const op of ['open', 'check']) {
      for (const v of variants) {
        const names = ['lan', 'br0', 'bry0', 'brx0', 'nosuchnet', 'br9'];
        const answers = client(host, d.socket, names.map((network) => ({ op, network, ...v })), MALLORY);
        const distinct = new Set(answers.map((a) => JSON.stringify(op === 'check' ? (a.body as { allowed: boolean; code: string; reason: string }) : { code: a.code, message: a.message })));
        expect([...distinct], `${op} ${JSON.stringify(v)}`).toHaveLength(1);
      }
    }
  });

  it('class 11: a kernel failure reaches the peer as `internal`, and the log at error', async () => {
    const [r] = client(host, d.socket, [{ op: 'open', network: 'loop' }], me);
    expect(r).toMatchObject({ ok: false, code: 'internal', message: 'tapd failed to handle the request; an admin can find why in the tapd log' });
    const e = await d.waitFor('internal_error');
    expect(e.level).toBe('error');
    expect(String(e.reason)).toMatch(/ELOOP|EINVAL|EBUSY/);
    expect(host.link('bry0')).toBeUndefined();
  });
});
