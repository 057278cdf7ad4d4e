// tapd for real: a daemon in a namespace, unprivileged clients, hooks, lifecycle, hostile input.
import { readdirSync, readFileSync, readlinkSync, existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { captureOne, client, DIST, NOBODY, Netns, ROOT, startTapd, testFrame, until, type DaemonHandle } from '../helpers/netns.js';
import { endHolders, Holder } from '../helpers/holder.js';
import { frame, raw, req } from '../helpers/raw.js';

const NOGROUP = 65534;
const STRANGER = { uid: 4242, gid: 4242 };
const me = { uid: NOBODY, gid: NOGROUP };

/** Hooks that record what they saw in DIR/hooks.log, DIR/env.EVENT.IF, DIR/fds.EVENT.IF. */
const RECORDING_HOOK = (dir: string) => `#!/bin/sh
echo "$TAPD_EVENT $1 $TAPD_LEASE_ID" >> ${dir}/hooks.log
env | sort > ${dir}/env.$TAPD_EVENT.$1
ls -l /proc/self/fd > ${dir}/fds.$TAPD_EVENT.$1
`;

const CONFIG = `
network lan  bridge br0 up @DIR@/hooks/rec down @DIR@/hooks/rec
network made bridge brmade0 create
network notbr bridge lo
network fail bridge brfail0 create up @DIR@/hooks/fail
network hang bridge brhang0 create up @DIR@/hooks/hang
network untrusted bridge bruntr0 create up @DIR@/hooks/writable
network host hostonly up @DIR@/hooks/ifup down @DIR@/hooks/rec
permit @nogroup on lan leases 2 queues 4 mac mtu
permit @nogroup on made
permit @nogroup on notbr
permit @nogroup on fail
permit @nogroup on hang
permit @nogroup on untrusted
permit @nogroup on host leases 1
permit root on any
limits request-timeout 1s max-connections 300 max-connections-per-user 250 hook-timeout 1s
`;

function hookFiles(dir: string): Record<string, [string, number]> {
  const ifup = readFileSync(path.join(ROOT, 'scripts/qemu-ifup'), 'utf8').replace('192.168.1.250/24', '198.18.9.1/24');
  return {
    'hooks/rec': [RECORDING_HOOK(dir), 0o755],
    'hooks/fail': ['#!/bin/sh\necho "no such uplink" >&2\nexit 3\n', 0o755],
    'hooks/hang': ['#!/bin/sh\nsleep 30\n', 0o755],
    'hooks/writable': ['#!/bin/sh\nexit 0\n', 0o777],
    'hooks/ifup': [ifup, 0o755],
  };
}



describe('tapd daemon', () => {
  let host: Netns;
  let lan: Netns;
  let d: DaemonHandle;

  const hookLog = () => (existsSync(path.join(d.dir, 'hooks.log')) ? readFileSync(path.join(d.dir, 'hooks.log'), 'utf8') : '');
  const taps = () => host.links().filter((l) => l.linkinfo?.info_kind === 'tun').map((l) => l.ifname);
  const daemonFds = () => readdirSync(`/proc/${d.proc.pid}/fd`).length;
  const alive = async () => {
    const r = await raw(d.socket, [req({ op: 'status' })], { waitMs: 2000, replies: 1 });
    expect(r.replies[0]).toMatchObject({ ok: true });
  };

  beforeAll(async () => {
    host = Netns.create('dhost');
    lan = Netns.create('dlan');
    host.run('ip', ['link', 'add', 'br0', 'type', 'bridge']);
    host.run('ip', ['link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'lan0', 'netns', lan.name]);
    host.run('ip', ['link', 'set', 'up0', 'master', 'br0', 'up']);
    host.run('ip', ['link', 'set', 'br0', 'up']);
    lan.run('ip', ['link', 'set', 'lan0', 'up']);
    d = await startTapd(host, CONFIG, hookFiles('@DIR@'));
  });

  // A failed test can leave its holder waiting: end it here.
  afterEach(async () => {
    await endHolders();
  });

  afterAll(async () => {
    await d?.stop();
    host?.destroy();
    lan?.destroy();
  });

  it('gives an unprivileged client in an allowed group a working bridged TAP; a frame crosses to the LAN', async () => {
    const capture = await captureOne(lan, 'lan0');
    const frameHex = testFrame('52:54:00:ab:cd:ef', 'tapd-frame-d1');
    const [open, wrote] = client(host, d.socket, [{ op: 'open', network: 'lan', mac: '52:54:00:ab:cd:ef' }, { frame: frameHex }], me);
    expect(open).toMatchObject({ ok: true, fds: 1, body: { ok: true, lease: { network: 'lan', bridge: 'br0', mac: '52:54:00:ab:cd:ef', owner_uid: NOBODY, queues: 1 } } });
    expect(wrote).toEqual({ wrote: 60 });
    const seen = await capture.seen();
    expect(seen).toContain('52:54:00:ab:cd:ef > ff:ff:ff:ff:ff:ff');
    expect(seen).toContain('tapd-frame-d1');
    // The client exited: the device went with its fd and the lease ended, down hook once.
    const lease = (open!.body as { lease: { id: string; ifname: string } }).lease;
    await d.waitFor('lease_end', { lease: lease.id });
    await until(() => hookLog().includes(`down ${lease.ifname} ${lease.id}`), 5000);
    expect(hookLog().split('\n').filter((l) => l === `up ${lease.ifname} ${lease.id}`)).toHaveLength(1);
    expect(hookLog().split('\n').filter((l) => l === `down ${lease.ifname} ${lease.id}`)).toHaveLength(1);
    expect(taps()).toEqual([]);
  });

  it('logs where an open\'s time went: lease_start has every step of the open path, adding up to less than the client waited', async () => {
    const [open] = client(host, d.socket, [{ op: 'open', network: 'lan', timed: true }], me);
    expect(open).toMatchObject({ ok: true, fds: 1 });
    const lease = (open!.body as { lease: { id: string } }).lease;
    const start = await d.waitFor('lease_start', { lease: lease.id });
    const steps = start.steps_us as Record<string, number>;
    // In the order they ran (the peer is identified once the request is in: this kernel has
    // SO_PEERPIDFD); network lan has an up hook, and no ovs port.
    expect(Object.keys(steps)).toEqual(['accept', 'read', 'identify', 'decode', 'decide', 'reserve', 'bridge', 'create', 'configure', 'verify', 'hook', 'journal', 'send']);
    for (const [k, us] of Object.entries(steps)) expect(Number.isInteger(us) && us >= 0, `${k} = ${us}`).toBe(true);
    const total = Object.values(steps).reduce((a, b) => a + b, 0);
    expect(total).toBeGreaterThan(0);
    // The daemon's steps lie between the client's connect and its receipt of the fds.
    expect(total).toBeLessThanOrEqual((open!.ms as number) * 1000);
    await d.waitFor('lease_end', { lease: lease.id });
  });

  it('denies a client no rule permits, and no device appears', () => {
    const [r] = client(host, d.socket, [{ op: 'open', network: 'lan' }], STRANGER);
    expect(r).toMatchObject({ ok: false, code: 'denied' });
    expect(taps()).toEqual([]);
  });

  it('does not tell a denied user whether a network exists (no existence oracle)', () => {
    const [exists, missing] = client(host, d.socket, [{ op: 'open', network: 'lan' }, { op: 'open', network: 'nosuchnet' }], STRANGER);
    expect(exists!.message).toBe(missing!.message);
  });

  it('hands the hooks a minimal environment, TAPD_* facts, and no daemon fd', async () => {
    const h = new Holder(host, d.socket, { network: 'lan' });
    const { body } = await h.opened();
    const ifname = body.lease.ifname;
    await until(() => existsSync(path.join(d.dir, `fds.up.${ifname}`)), 5000);
    const env = readFileSync(path.join(d.dir, `env.up.${ifname}`), 'utf8');
    const names = env.split('\n').filter(Boolean).map((l) => l.split('=')[0]);
    // sh adds PWD (and may add SHLVL/_); nothing of the daemon's or the client's environment.
    expect(names.filter((n) => !['PWD', 'SHLVL', '_', 'OLDPWD'].includes(n!)).sort()).toEqual(
      ['PATH', 'TAPD_BRIDGE', 'TAPD_EVENT', 'TAPD_IFINDEX', 'TAPD_IFNAME', 'TAPD_LEASE_ID', 'TAPD_MAC', 'TAPD_MTU', 'TAPD_NETWORK', 'TAPD_OWNER_UID'].sort());
    expect(env).toContain(`TAPD_OWNER_UID=${NOBODY}`);
    expect(env).toContain('TAPD_BRIDGE=br0');
    // What `ls` inherited from the hook: 0 /dev/null, 1 the file it writes, 2 the daemon's
    // capture socket, 3 ls's own handle on /proc/self/fd. Nothing else of the daemon's.
    const fds = readFileSync(path.join(d.dir, `fds.up.${ifname}`), 'utf8').split('\n')
      .map((l) => / (\d+) -> (.*)$/.exec(l)).filter((m) => m !== null).map((m) => [Number(m[1]), m[2]] as const);
    expect(fds.map(([n]) => n).sort()).toEqual([0, 1, 2, 3]);
    expect(new Map(fds).get(0)).toBe('/dev/null');
    expect(new Map(fds).get(3)).toMatch(/^\/proc\/\d+\/fd$/);
    await h.exit();
    await d.waitFor('lease_end', { lease: body.lease.id });
  });

  it('ends the lease when the client is killed with SIGKILL', async () => {
    const h = new Holder(host, d.socket, { network: 'lan' });
    const { body } = await h.opened();
    expect(taps()).toContain(body.lease.ifname);
    await h.kill9();
    await d.waitFor('lease_end', { lease: body.lease.id });
    await until(() => hookLog().includes(`down ${body.lease.ifname} ${body.lease.id}`), 5000);
    expect(taps()).toEqual([]);
  });

  it('holds quotas atomically: 10 concurrent opens at a quota of 2 grant exactly 2, and slots free when leases end', async () => {
    // One process fires all 10 at once (async client: connect and recvmsg on threads).
    const script = `
      import * as c from '${DIST}/client/client.js';
      const rs = await Promise.allSettled(Array.from({length: 10}, () => c.openTap(process.argv[1], {network: 'lan'})));
      console.log(JSON.stringify(rs.map(r => r.status === 'fulfilled' ? 'ok' : r.reason.code)));
      await new Promise(r => setTimeout(r, 300));`;
    const r = host.exec('node', ['--input-type=module', '-e', script, d.socket], me);
    const results = JSON.parse(r.stdout) as string[];
    expect(results.filter((x) => x === 'ok')).toHaveLength(2);
    expect(results.filter((x) => x === 'quota')).toHaveLength(8);
    await until(() => taps().length === 0, 5000);
    // Both slots are free again.
    const again = client(host, d.socket, [{ op: 'open', network: 'lan' }, { op: 'open', network: 'lan' }], me);
    expect(again.map((x) => x.ok)).toEqual([true, true]);
  });

  it('survives its own SIGKILL: a live lease is re-adopted, and its end after restart runs the down hook once', async () => {
    const h = new Holder(host, d.socket, { network: 'lan' });
    const { body } = await h.opened();
    await d.kill9();
    await d.restart();
    await d.waitFor('lease_recovered', { lease: body.lease.id });
    const [list] = client(host, d.socket, [{ op: 'list' }], me);
    expect((list!.body as { leases: Array<{ id: string }> }).leases.map((l) => l.id)).toEqual([body.lease.id]);
    await h.exit();
    await d.waitFor('lease_end', { lease: body.lease.id });
    await until(() => hookLog().includes(`down ${body.lease.ifname} ${body.lease.id}`), 5000);
    expect(hookLog().split('\n').filter((l) => l === `down ${body.lease.ifname} ${body.lease.id}`)).toHaveLength(1);
  });

  it('ends, on restart, a lease whose holder exited while the daemon was down', async () => {
    const h = new Holder(host, d.socket, { network: 'lan' });
    const { body } = await h.opened();
    await d.kill9();
    await h.exit();
    await until(() => taps().length === 0, 5000);
    await d.restart();
    await until(() => hookLog().includes(`down ${body.lease.ifname} ${body.lease.id}`), 5000);
    expect(hookLog().split('\n').filter((l) => l === `down ${body.lease.ifname} ${body.lease.id}`)).toHaveLength(1);
    const [list] = client(host, d.socket, [{ op: 'list' }], me);
    expect((list!.body as { leases: unknown[] }).leases).toEqual([]);
  });

  it('creates a configured bridge on first use, and refuses a non-bridge device as bridge', () => {
    const [made, notbr] = client(host, d.socket, [{ op: 'open', network: 'made' }, { op: 'open', network: 'notbr' }], me);
    expect(made).toMatchObject({ ok: true, body: { lease: { bridge: 'brmade0' } } });
    expect(host.link('brmade0')?.linkinfo?.info_kind).toBe('bridge');
    expect(notbr).toMatchObject({ ok: false, code: 'network_unavailable' });
    expect(notbr!.message).toMatch(/lo exists but is not a bridge/);
    host.run('ip', ['link', 'del', 'brmade0']);
  });

  it('host-only: the up hook gives the host side its address; the down hook runs after the end', async () => {
    const h = new Holder(host, d.socket, { network: 'host' });
    const { body } = await h.opened();
    const addrs = JSON.parse(host.run('ip', ['-j', 'addr', 'show', 'dev', body.lease.ifname])) as Array<{ addr_info: Array<{ local: string }> }>;
    expect(addrs[0]!.addr_info.map((a) => a.local)).toContain('198.18.9.1');
    // Quota of 1 on this network.
    const [second] = client(host, d.socket, [{ op: 'open', network: 'host' }], me);
    expect(second).toMatchObject({ ok: false, code: 'quota' });
    await h.exit();
    await until(() => hookLog().includes(`down ${body.lease.ifname} ${body.lease.id}`), 5000);
  });

  it('a failing up hook removes the device and says so; a hanging one is killed at the timeout', async () => {
    const [fail] = client(host, d.socket, [{ op: 'open', network: 'fail' }], me);
    expect(fail).toMatchObject({ ok: false, code: 'hook_failed' });
    expect(fail!.message).toMatch(/up hook failed, so tap[0-9a-f]{8} was removed/);
    const start = Date.now();
    const [hang] = client(host, d.socket, [{ op: 'open', network: 'hang' }], me);
    expect(hang).toMatchObject({ ok: false, code: 'hook_failed' });
    expect(Date.now() - start).toBeLessThan(8000);
    await d.waitFor('hook', { script: path.join(d.dir, 'hooks/hang') });
    expect(d.log()).toContain('hook timed out');
    expect((await d.waitFor('hook', { script: path.join(d.dir, 'hooks/fail') })).output).toBe('no such uplink\n');
    await until(() => taps().length === 0, 5000);
    expect(taps()).toEqual([]);
  });

  it('refuses a world-writable hook and one not owned by root', async () => {
    const [w] = client(host, d.socket, [{ op: 'open', network: 'untrusted' }], me);
    expect(w).toMatchObject({ ok: false, code: 'hook_failed' });
    expect((await d.waitFor('hook_refused')).reason).toMatch(/hooks\/writable is writable by group or others; chmod go-w/);
    const { chownSync, chmodSync } = await import('node:fs');
    const p = path.join(d.dir, 'hooks/writable');
    chmodSync(p, 0o755);
    chownSync(p, NOBODY, NOGROUP);
    const [o] = client(host, d.socket, [{ op: 'open', network: 'untrusted' }], me);
    expect(o).toMatchObject({ ok: false, code: 'hook_failed' });
    await until(() => d.log().includes('hooks/writable is not owned by root'), 5000);
    expect(d.log()).toMatch(/hooks\/writable is not owned by root; chown root/);
    await until(() => taps().length === 0, 5000);
  });

  describe('hostile and broken input', () => {
    const before = { fds: 0 };
    beforeAll(() => {
      before.fds = daemonFds();
    });

    it.each([
      ['oversized frame', [Buffer.from([0, 1, 0, 0])], 'frame_too_large'],
      ['zero-length frame', [Buffer.from([0, 0, 0, 0])], 'bad_frame'],
      ['invalid JSON', [frame('{"v":1,')], 'bad_request'],
      ['not an object', [frame('[1,2]')], 'bad_request'],
      ['invalid UTF-8', [frame(Buffer.from([0x7b, 0xff, 0x7d]))], 'bad_request'],
      ['deep nesting', [frame('['.repeat(2000) + ']'.repeat(2000))], 'bad_request'],
      ['no version', [frame('{"op":"status"}')], 'bad_version'],
      ['unknown request type', [req({ op: 'destroy' })], 'bad_request'],
      ['unknown field', [req({ op: 'open', network: 'lan', user: 'root' })], 'bad_request'],
      ['wrong type', [req({ op: 'open', network: 7 })], 'bad_request'],
      ['queue count 0', [req({ op: 'open', network: 'lan', queues: 0 })], 'bad_request'],
      ['queue count 1000', [req({ op: 'open', network: 'lan', queues: 1000 })], 'bad_request'],
      ['MTU 0', [req({ op: 'open', network: 'lan', mtu: 0 })], 'bad_request'],
      ['MTU 70000', [req({ op: 'open', network: 'lan', mtu: 70000 })], 'bad_request'],
      ['fractional MTU', [req({ op: 'open', network: 'lan', mtu: 1500.5 })], 'bad_request'],
    ])('%s: an error naming the problem, then the connection is closed', async (_name, chunks, code) => {
      const r = await raw(d.socket, chunks as Buffer[]);
      expect(r.replies).toHaveLength(1);
      expect(r.replies[0]).toMatchObject({ ok: false, error: { code } });
      expect(r.closed).toBe(true);
      await alive();
    });

    it('names the offending field', async () => {
      const r = await raw(d.socket, [req({ op: 'open', network: 'lan', queues: 1000 })]);
      expect((r.replies[0]!.error as { message: string }).message).toBe('field "queues" must be between 1 and 16, got 1000');
      const u = await raw(d.socket, [req({ op: 'open', network: 'lan', colour: 'red' })]);
      expect((u.replies[0]!.error as { message: string }).message).toBe('unknown field "colour" in open request');
    });

    it.each([
      ['16-byte name', 'a'.repeat(16)],
      ['NUL in name', 'br0\u0000x'],
      ['a bridge not in the config', 'br1'],
      ['an existing device that is not a configured network', 'up0'],
    ])('%s: denied like any network the caller may not use', async (_n, network) => {
      const r = await raw(d.socket, [req({ op: 'open', network })], { replies: 1 });
      expect(r.replies[0]).toMatchObject({ ok: false, error: { code: 'denied' } });
      expect(taps()).toEqual([]);
    });

    it.each([
      ['multicast MAC', '01:00:5e:00:00:01'],
      ['all-zero MAC', '00:00:00:00:00:00'],
      ['malformed MAC', '52:54:00:zz:00:01'],
    ])('%s is refused', async (_n, mac) => {
      const [r] = client(host, d.socket, [{ op: 'open', network: 'lan', mac }], me);
      expect(r).toMatchObject({ ok: false, code: 'invalid_mac' });
    });

    it('refuses an MTU below the bridge\'s (it would lower it for everyone)', () => {
      const [r] = client(host, d.socket, [{ op: 'open', network: 'lan', mtu: 1280 }], me);
      expect(r).toMatchObject({ ok: false, code: 'mtu_too_small' });
    });

    it('refuses a MAC another live lease has', async () => {
      const h = new Holder(host, d.socket, { network: 'lan', mac: '52:54:00:00:00:77' });
      await h.opened();
      const [r] = client(host, d.socket, [{ op: 'open', network: 'lan', mac: '52:54:00:00:00:77' }], me);
      expect(r).toMatchObject({ ok: false, code: 'mac_in_use' });
      await h.exit();
    });

    it('accepts a valid request split into single bytes', async () => {
      const bytes = [...req({ op: 'status' })].map((b) => Buffer.from([b]));
      const r = await raw(d.socket, bytes, { gapMs: 2 });
      expect(r.replies[0]).toMatchObject({ ok: true });
    });

    it('drops a truncated frame at the deadline, and a client that sends nothing, saying why', async () => {
      const late = { ok: false, error: { code: 'bad_request', message: 'no complete request within 1000 ms' } };
      const t = await raw(d.socket, [frame('{"v":1,"op":"status"}').subarray(0, 10)], { waitMs: 4000 });
      expect(t).toMatchObject({ replies: [late], closed: true });
      const silent = await raw(d.socket, [], { waitMs: 4000 });
      expect(silent).toMatchObject({ replies: [late], closed: true });
      await alive();
    });

    it('survives a client that disconnects mid-request', async () => {
      await raw(d.socket, [frame('{"v":1,"op":"open","network":"lan"}').subarray(0, 20)], { endAfter: true, waitMs: 200 });
      await alive();
    });

    it('closes and ignores fds a client sends', async () => {
      const fdsBefore = daemonFds();
      const script = `
        import * as sys from '${DIST}/sys/index.js';
        import { openSync } from 'node:fs';
        const fd = sys.connectUnix(process.argv[1], 3000);
        const f = openSync('/etc/hostname', 'r');
        const body = Buffer.from(JSON.stringify({v:1, op:'status'}));
        const h = Buffer.alloc(4); h.writeUInt32BE(body.length);
        sys.sendWithFds(fd, Buffer.concat([h, body]), [f, f, f], {action: 'send'});
        const r = sys.recvWithFds(fd, 4096, 4, {action: 'recv'});
        console.log(JSON.stringify({len: r.length}));`;
      const r = host.exec('node', ['--input-type=module', '-e', script, d.socket], me);
      // Answered, and the three fds never stay in the daemon (the kernel drops them unread).
      expect(JSON.parse(r.stdout).len).toBeGreaterThan(4);
      const held = readdirSync(`/proc/${d.proc.pid}/fd`).map((n) => { try { return readlinkSync(`/proc/${d.proc.pid}/fd/${n}`); } catch { return ''; } });
      expect(held).not.toContain('/etc/hostname');
      await until(() => daemonFds() <= fdsBefore, 2000);
      expect(daemonFds()).toBeLessThanOrEqual(fdsBefore);
    });

    it('serves 200 clients at once', async () => {
      const rs = await Promise.all(Array.from({ length: 200 }, () => raw(d.socket, [req({ op: 'status' })], { waitMs: 10_000, replies: 1 })));
      expect(rs.filter((r) => r.replies[0]?.ok === true)).toHaveLength(200);
      await alive();
    });

    it('leaks no fd and no device after all of it', async () => {
      await until(() => daemonFds() <= before.fds, 3000);
      expect(daemonFds()).toBeLessThanOrEqual(before.fds);
      expect(taps()).toEqual([]);
    });
  });
});

// With SO_PEERPIDFD (this kernel has it) an idle connection is a socket and nothing more: the
// process that connected is identified once its request is in, which still binds the process that
// called connect() (the kernel kept its struct pid), not whoever has its pid by then.
describe('tapd daemon: idle connections, and identifying the peer once the request is in', () => {
  let host: Netns;
  let d: DaemonHandle;
  const daemonFds = () => readdirSync(`/proc/${d.proc.pid}/fd`).length;
  const status = async () => {
    const r = await raw(d.socket, [req({ op: 'status' })], { waitMs: 5000, replies: 1 });
    return (r.replies[0] as { status: { connections: number } }).status;
  };
  const CLIENT = readFileSync(path.join(ROOT, 'test/fixtures/peer-client.pl'), 'utf8');
  const perl = (args: string[]) => {
    const p = host.spawn('perl', ['-e', CLIENT, ...args], me);
    let out = '';
    p.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    const line = async (prefix: string) => {
      const find = () => out.split('\n').find((l) => l.startsWith(`${prefix} `));
      if (!(await until(() => find() !== undefined, 20_000))) throw new Error(`no "${prefix}" from the client: ${out}`);
      return find()!.slice(prefix.length + 1);
    };
    return { p, exited, line };
  };
  const untilAsync = async (cond: () => Promise<boolean>, ms: number) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (await cond()) return true;
      await new Promise((r) => setTimeout(r, 25));
    }
    return cond();
  };
  const refusedFor = (pid: number) => d.waitFor('request_refused', { peer_pid: pid });

  beforeAll(async () => {
    host = Netns.create('didle');
    d = await startTapd(host, `
network pk bridge brpk0 create
permit @nogroup on pk polkit
limits request-timeout 60s max-connections 300 max-connections-per-user 250
`);
  });

  afterAll(async () => {
    await d?.stop();
    host?.destroy();
  });

  it('an idle connection costs the daemon exactly one fd (its socket; no pidfd)', async () => {
    const N = 40;
        const before = daemonFds();
    const script = `const net = require('node:net'); let n = 0; const all = [];
      for (let i = 0; i < ${N}; i++) all.push(net.connect(process.argv[1], () => { if (++n === ${N}) console.log('connected ' + n); }).on('error', (e) => console.log('error ' + e.message)));
      process.stdin.on('data', () => {}).on('end', () => process.exit(0));`;
    const c = host.spawn('node', ['-e', script, d.socket], { ...me, stdin: 'pipe' });
    let out = '';
    c.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    try {
      expect(await until(() => out.includes(`connected ${N}`), 20_000), out).toBe(true);
      // All N accepted (the daemon counts a connection at accept), plus the status request itself.
      let seen = 0;
      expect(await untilAsync(async () => (seen = (await status()).connections) === N + 1, 20_000), `connections ${seen}`).toBe(true);
      // The status connection's own fd goes once its reply is sent; then N sockets and nothing else.
      await until(() => daemonFds() === before + N, 5000);
      expect(daemonFds() - before).toBe(N);
    } finally {
      c.stdin!.end();
      await exited;
    }
    await until(() => daemonFds() === before, 5000);
    expect(daemonFds()).toBe(before);
  });

  it('a client that connects, hands the socket to a child and exits before sending: the child\'s request finds the process gone (binding none), polkit is not asked', async () => {
    const go = path.join(d.dir, 'go-handoff');
    const c = perl(['handoff-send', d.socket, JSON.stringify({ v: 1, op: 'open', network: 'pk' }), go]);
    const [parent, child] = (await c.line('handed')).split(' ').map(Number);
    await c.exited; // reaped by us: its pid is free, and the connection is still idle
    writeFileSync(go, '');
    expect(JSON.parse(await c.line('reply'))).toMatchObject({ ok: false, error: { code: 'denied' } });
    const refused = await refusedFor(parent!);
    expect(refused).toMatchObject({ op: 'open', result: 'denied', peer_uid: NOBODY, peer_binding: 'none' });
    expect(String(refused.reason)).toMatch(/polkit did not authorize/);
    try {
      process.kill(child!, 'SIGKILL');
    } catch {
      // It has answered and gone.
    }
  });

  it('control: the process that connected and sends itself is bound through its pidfd', async () => {
    const c = perl(['send', d.socket, JSON.stringify({ v: 1, op: 'open', network: 'nosuchnet' })]);
    const [pid] = [c.p.pid!];
    expect(JSON.parse(await c.line('reply'))).toMatchObject({ ok: false, error: { code: 'denied' } });
    expect(await refusedFor(pid)).toMatchObject({ peer_uid: NOBODY, peer_binding: 'pidfd' });
    await c.exited;
  });
});
