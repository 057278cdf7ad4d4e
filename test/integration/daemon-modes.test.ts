// tapd's other modes and controls: uplink NICs, socket activation, limits, reload, sudo.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, closeSync, fstatSync, mkdtempSync, openSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { captureOne, client, DIST, NOBODY, Netns, ROOT, startTapd, tempDir, testFrame, until, type DaemonHandle } from '../helpers/netns.js';
import { raw, req } from '../helpers/raw.js';
import { rmSync } from 'node:fs';

const me = { uid: NOBODY, gid: 65534 };

describe('uplink mode: a physical NIC the daemon bridges on first use', () => {
  let host: Netns;
  let lan: Netns;
  let d: DaemonHandle;
  let pong: ReturnType<typeof spawn>;

  beforeAll(async () => {
    host = Netns.create('uhost');
    lan = Netns.create('ulan');
    // The "NIC": a veth carrying the host's address and default route, as eth0 would.
    host.run('ip', ['link', 'add', 'nic0', 'type', 'veth', 'peer', 'name', 'lan0', 'netns', lan.name]);
    host.run('ip', ['addr', 'add', '198.18.3.2/24', 'dev', 'nic0']);
    host.run('ip', ['link', 'set', 'nic0', 'up']);
    host.run('ip', ['route', 'add', 'default', 'via', '198.18.3.1']);
    host.run('ip', ['link', 'add', 'nic1', 'type', 'veth', 'peer', 'name', 'nic1peer']);
    host.run('ip', ['addr', 'add', '198.18.4.2/24', 'dev', 'nic1']);
    host.run('ip', ['link', 'set', 'nic1', 'up']);
    lan.run('ip', ['addr', 'add', '198.18.3.1/24', 'dev', 'lan0']);
    lan.run('ip', ['link', 'set', 'lan0', 'up']);
    pong = spawn('ip', ['netns', 'exec', lan.name, 'node', '-e',
      "require('net').createServer(s=>s.end('pong')).listen(7777,'198.18.3.1',()=>console.log('up'))"], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((r) => pong.stdout!.once('data', r));
    const script = readFileSync(path.join(ROOT, 'scripts/tapd-bridge-up'), 'utf8');
    d = await startTapd(host, `
network wan uplink nic0 bridge brwan0 bridge-script @DIR@/tapd-bridge-up
network typo uplink nic9 bridge brtypo0
network broken uplink nic1 bridge brbroken0 bridge-script @DIR@/failing-bridge-up
permit @nogroup on wan mac
permit @nogroup on typo
permit @nogroup on broken
`, {
      'tapd-bridge-up': [script, 0o755],
      // Moves the address, then fails: what it did must not be undone by deleting the bridge.
      'failing-bridge-up': ['#!/bin/sh\nip addr del 198.18.4.2/24 dev "$2"\nip addr add 198.18.4.2/24 dev "$1"\nexit 1\n', 0o755],
    });
  });

  afterAll(async () => {
    await d?.stop();
    pong?.kill();
    host?.destroy();
    lan?.destroy();
  });

  const reachLan = () => host.exec('node', ['-e', "const s=require('net').connect(7777,'198.18.3.1');s.setTimeout(3000,()=>process.exit(2));s.on('data',d=>{console.log(String(d));process.exit(0)});s.on('error',()=>process.exit(1))"]);

  it('the host reaches its LAN before', () => {
    expect(reachLan().stdout.trim()).toBe('pong');
  });

  it('first open (by NIC name, as with -b nic0) creates the bridge, enslaves the NIC, moves address and route; the host still reaches the LAN; frames flow', async () => {
    const capture = await captureOne(lan, 'lan0');
    const frameHex = testFrame('52:54:00:12:34:56', 'tapd-uplink');
    const [probe] = client(host, d.socket, [{ op: 'check', network: 'nic0', mac: '52:54:00:12:34:56' }], me);
    expect(probe, JSON.stringify(probe)).toMatchObject({ ok: true, body: { allowed: true } });
    const [open] = client(host, d.socket, [{ op: 'open', network: 'nic0', mac: '52:54:00:12:34:56' }, { frame: frameHex }], me);
    expect(open).toMatchObject({ ok: true, body: { lease: { network: 'wan', bridge: 'brwan0' } } });
    expect(await capture.seen()).toContain('tapd-uplink');
    expect(host.link('nic0')!.master).toBe('brwan0');
    const addrs = JSON.parse(host.run('ip', ['-j', '-4', 'addr', 'show', 'dev', 'brwan0'])) as Array<{ addr_info: Array<{ local: string }> }>;
    expect(addrs[0]!.addr_info.map((a) => a.local)).toEqual(['198.18.3.2']);
    expect(host.run('ip', ['route', 'show', 'default'])).toContain('via 198.18.3.1 dev brwan0');
    // The bridge kept the NIC's MAC, so the LAN sees the host at the same address.
    expect(host.link('brwan0')!.address).toBe(host.link('nic0')!.address);
    expect(reachLan().stdout.trim()).toBe('pong');
    // The bridge script ran once; a second open does not run it again.
    client(host, d.socket, [{ op: 'open', network: 'wan' }], me);
    expect(d.events().filter((e) => e.event === 'bridge_created')).toHaveLength(1);
    expect(d.events().filter((e) => e.event === 'hook' && String(e.script).endsWith('tapd-bridge-up'))).toHaveLength(1);
  });

  it('a missing NIC changes nothing and says which', () => {
    const [r] = client(host, d.socket, [{ op: 'open', network: 'typo' }], me);
    expect(r).toMatchObject({ ok: false, code: 'network_unavailable', message: 'network typo: uplink NIC nic9 does not exist' });
    expect(host.link('brtypo0')).toBeUndefined();
  });

  it('a failing bridge script: clear error, and the bridge is left as the script left it', () => {
    const [r] = client(host, d.socket, [{ op: 'open', network: 'broken' }], me);
    expect(r).toMatchObject({ ok: false, code: 'network_unavailable' });
    expect(String(r!.message)).toMatch(/the bridge script for brbroken0 failed; an admin must check/);
    expect(host.link('nic1')!.master).toBe('brbroken0');
    const addrs = JSON.parse(host.run('ip', ['-j', '-4', 'addr', 'show', 'dev', 'brbroken0'])) as Array<{ addr_info: Array<{ local: string }> }>;
    expect(addrs[0]!.addr_info.map((a) => a.local)).toEqual(['198.18.4.2']);
    expect(host.links().filter((l) => l.linkinfo?.info_kind === 'tun')).toEqual([]);
  });
});

describe('controls', () => {
  let ns: Netns;
  let d: DaemonHandle | undefined;

  beforeAll(() => {
    ns = Netns.create('ctl');
    ns.addBridge('br0');
  });
  afterEach(async () => {
    await d?.stop();
    d = undefined;
  });
  afterAll(() => ns?.destroy());

  it('refuses connections over max-connections with a clear error, and serves again after', async () => {
    d = await startTapd(ns, 'network lan bridge br0\npermit root on any\nlimits max-connections 2 request-timeout 3s\n');
    const idle = [raw(d.socket, [], { waitMs: 1500 }), raw(d.socket, [], { waitMs: 1500 })];
    await new Promise((r) => setTimeout(r, 200));
    // The refusal comes at accept, before any request is read (sending one could meet a closed socket).
    const third = await raw(d.socket, [], { waitMs: 1000, replies: 1 });
    expect(third.replies[0]).toMatchObject({ ok: false, error: { code: 'busy' } });
    await Promise.all(idle);
    // The daemon frees the slots when it sees the closes.
    let later = await raw(d.socket, [req({ op: 'status' })]);
    for (let i = 0; i < 20 && later.replies[0]?.ok !== true; i++) later = await raw(d.socket, [req({ op: 'status' })]);
    expect(later.replies[0], JSON.stringify(later)).toMatchObject({ ok: true });
  });

  it('enforces per-user totals across networks and the global lease limit', async () => {
    d = await startTapd(ns, 'network lan bridge br0\nnetwork lab bridge brlab0 create\npermit @nogroup on any total 2\npermit root on any\nlimits max-leases 3\n');
    const r = client(ns, d.socket, [{ op: 'open', network: 'lan' }, { op: 'open', network: 'lab' }, { op: 'open', network: 'lan' }], me);
    expect(r.map((x) => x.ok ?? x.code)).toEqual([true, true, false]);
    expect(r[2]).toMatchObject({ code: 'quota' });
    const all = client(ns, d.socket, [{ op: 'open', network: 'lan' }, { op: 'open', network: 'lan' }, { op: 'open', network: 'lan' }, { op: 'open', network: 'lan' }], { uid: 0 });
    expect(all.map((x) => x.code ?? 'ok')).toEqual(['ok', 'ok', 'ok', 'limit']);
    ns.exec('ip', ['link', 'del', 'brlab0']);
  });

  it('reloads on SIGHUP: new rules for new requests, live leases stay, a broken file keeps the old policy', async () => {
    d = await startTapd(ns, 'network lan bridge br0\npermit root on any\n');
    expect(client(ns, d.socket, [{ op: 'open', network: 'lan' }], me)[0]).toMatchObject({ ok: false, code: 'denied' });
    writeFileSync(d.config, 'network lan bridge br0\npermit root on any\npermit @nogroup on lan\n');
    d.proc.kill('SIGHUP');
    await d.waitFor('policy_reloaded');
    expect(client(ns, d.socket, [{ op: 'open', network: 'lan' }], me)[0]).toMatchObject({ ok: true });
    writeFileSync(d.config, 'network lan bridge br0\npermit root on any\npermit @nogroup onn lan\n');
    d.proc.kill('SIGHUP');
    const failed = await d.waitFor('policy_reload_failed');
    expect(failed.problems).toEqual([expect.stringMatching(/tapd\.conf:3:\d+: /)]);
    expect(failed.msg).toBe('reload failed; the old policy stays in force');
    expect(client(ns, d.socket, [{ op: 'open', network: 'lan' }], me)[0]).toMatchObject({ ok: true });
    // The reload request: root may, others may not.
    expect(client(ns, d.socket, [{ op: 'reload' }], me)[0]).toMatchObject({ ok: false, code: 'forbidden' });
    const [broken] = client(ns, d.socket, [{ op: 'reload' }], { uid: 0 });
    expect(broken).toMatchObject({ ok: false, code: 'config_invalid' });
    expect(String(broken!.message).split('\n')).toEqual([expect.stringMatching(/has 1 error/), expect.stringMatching(/^ +\S+tapd\.conf:3:\d+: /), 'The old policy stays in force.']);
  });

  it('lets root open on behalf of a sudo user (owned and counted as that user), and nobody else', async () => {
    d = await startTapd(ns, 'network lan bridge br0\npermit @nogroup on lan leases 1\n');
    const [asNobody, again] = client(ns, d.socket, [{ op: 'open', network: 'lan', as_uid: NOBODY }, { op: 'open', network: 'lan', as_uid: NOBODY }], { uid: 0 });
    expect(asNobody).toMatchObject({ ok: true, body: { lease: { owner_uid: NOBODY } } });
    expect(again).toMatchObject({ ok: false, code: 'quota' });
    const [forged] = client(ns, d.socket, [{ op: 'open', network: 'lan', as_uid: 0 }], me);
    expect(forged).toMatchObject({ ok: false, code: 'forbidden' });
    const [unknown] = client(ns, d.socket, [{ op: 'open', network: 'lan', as_uid: 4242 }], { uid: 0 });
    expect(unknown).toMatchObject({ ok: false, code: 'bad_request' });
  });

  it('isolates the TAP\'s bridge port on an isolated network', async () => {
    d = await startTapd(ns, 'network lan bridge br0 isolated\nnetwork open bridge bropen0 create\npermit @nogroup on any\n');
    const script = `
      import * as c from '${DIST}/client/client.js';
      const a = c.openTapSync(process.argv[1], {network: 'lan'});
      const b = c.openTapSync(process.argv[1], {network: 'open'});
      console.log(JSON.stringify([a.lease.ifname, b.lease.ifname]));
      process.stdin.once('data', () => process.exit(0));`;
    const holder = spawn('ip', ['netns', 'exec', ns.name, 'setpriv', '--reuid', String(NOBODY), '--regid', '65534', '--clear-groups', '--',
      'node', '--input-type=module', '-e', script, d.socket], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      const names = JSON.parse(await new Promise<string>((r) => holder.stdout!.once('data', (x: Buffer) => r(x.toString())))) as string[];
      const info = (n: string) => (ns.link(n)!.linkinfo as { info_slave_data?: { isolated?: boolean } }).info_slave_data?.isolated;
      expect(info(names[0]!)).toBe(true);
      expect(info(names[1]!)).toBe(false);
    } finally {
      holder.stdin!.end('\n');
      if (holder.exitCode === null) await new Promise((r) => holder.once('exit', r));
    }
    ns.exec('ip', ['link', 'del', 'bropen0']);
  });

  it('grants exactly one of 50 concurrent opens to a user one lease below quota', async () => {
    d = await startTapd(ns, 'network lan bridge br0\npermit @nogroup on lan leases 2\nlimits max-connections-per-user 64\n');
    const script = `
      import * as c from '${DIST}/client/client.js';
      const first = c.openTapSync(process.argv[1], {network: 'lan'});
      const rs = await Promise.allSettled(Array.from({length: 50}, () => c.openTap(process.argv[1], {network: 'lan'})));
      console.log(JSON.stringify(rs.map(r => r.status === 'fulfilled' ? 'ok' : r.reason.code)));`;
    const r = ns.exec('node', ['--input-type=module', '-e', script, d.socket], me);
    const results = JSON.parse(r.stdout) as string[];
    expect(results).toHaveLength(50);
    expect(results.filter((x) => x === 'ok')).toHaveLength(1);
    expect(results.filter((x) => x === 'quota')).toHaveLength(49);
  });

  it('judges groups by the kernel\'s credentials at connect(), not by /etc/group', async () => {
    d = await startTapd(ns, 'network lan bridge br0\npermit @nogroup on lan\n');
    // uid 4242 is in no group in /etc/group, but this process carries gid 65534 as a
    // supplementary group: the kernel says so (SO_PEERGROUPS), and that governs.
    const [viaSupplementary] = client(ns, d.socket, [{ op: 'check', network: 'lan' }], { uid: 4242, gid: 4242, groups: [65534] });
    expect(viaSupplementary).toMatchObject({ body: { allowed: true } });
    // nobody's primary group in /etc/passwd is nogroup, but this process runs with gid 4242 and
    // no supplementary groups: not permitted.
    const [viaPasswd] = client(ns, d.socket, [{ op: 'check', network: 'lan' }], { uid: NOBODY, gid: 4242 });
    expect(viaPasswd).toMatchObject({ body: { allowed: false } });
  });

  it('tapd --check-config: silent and 0 when fine, every problem as file:line:column and 1 when not', () => {
    const dir = tempDir('check');
    try {
      const good = path.join(dir, 'good.conf');
      const bad = path.join(dir, 'bad.conf');
      writeFileSync(good, 'network lan bridge br0\npermit root on lan\n', { mode: 0o644 });
      writeFileSync(bad, 'network lan bridge br0\npermit nosuchuser on lan\nfrobnicate\n', { mode: 0o644 });
      const ok = spawnSync('node', [path.join(DIST, 'cli/tapd.js'), '--check-config', '--config', good], { encoding: 'utf8' });
      expect([ok.status, ok.stdout, ok.stderr]).toEqual([0, '', '']);
      const no = spawnSync('node', [path.join(DIST, 'cli/tapd.js'), '--check-config', '--config', bad], { encoding: 'utf8' });
      expect(no.status).toBe(1);
      expect(no.stderr).toContain(`${bad}:2:8: unknown user "nosuchuser"`);
      expect(no.stderr).toMatch(new RegExp(`${bad}:3:1: .*frobnicate`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses to start with a config file others can write, naming the file', async () => {
    await expect(startTapd(ns, 'network lan bridge br0\npermit root on any\n', {}, { configMode: 0o666 })).rejects.toThrow(/tapd\.conf.*writable by group or others|group or others.*tapd\.conf/);
  });

  it('refuses to start beside a live daemon on the same socket, and takes over a dead one\'s', async () => {
    d = await startTapd(ns, 'network lan bridge br0\npermit root on any\n');
    const second = ns.exec('node', [path.join(DIST, 'cli/tapd.js'), '--config', d.config, '--socket', d.socket, '--state-dir', `${d.dir}/state2`]);
    expect(second.status).toBe(1);
    expect(second.stderr).toContain(`another tapd is already serving ${d.socket}`);
    expect((await raw(d.socket, [req({ op: 'status' })], { replies: 1 })).replies[0]).toMatchObject({ ok: true });
    await d.kill9(); // leaves its socket file behind
    await d.restart();
    expect((await raw(d.socket, [req({ op: 'status' })], { replies: 1 })).replies[0]).toMatchObject({ ok: true });
  });

  it('refuses a hook whose directory is a symlink into a directory others can write', async () => {
    const open = mkdtempSync(path.join(os.tmpdir(), 'tapd-writable-'));
    try {
      chmodSync(open, 0o777);
      writeFileSync(path.join(open, 'up'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
      d = await startTapd(ns, 'network lan bridge br0 up @DIR@/hooks/up\npermit @nogroup on lan\n');
      symlinkSync(open, path.join(d.dir, 'hooks'));
      const [r] = client(ns, d.socket, [{ op: 'open', network: 'lan' }], me);
      expect(r).toMatchObject({ ok: false, code: 'hook_failed' });
      expect(String((await d.waitFor('hook_refused')).reason)).toContain(`directory ${open} of hook ${d.dir}/hooks/up is writable by group or others`);
    } finally {
      rmSync(open, { recursive: true, force: true });
    }
  });

  it.each(['SIGTERM', 'SIGINT'] as const)('writes "tapd stopped" as its last record after %s', async (signal) => {
    d = await startTapd(ns, 'network lan bridge br0\npermit root on any\n');
    const proc = d.proc;
    const exited = new Promise<number | null>((r) => proc.once('close', (code) => r(code)));
    proc.kill(signal);
    expect(await exited).toBe(0);
    const lines = d.log().trim().split('\n');
    expect(JSON.parse(lines.at(-2)!)).toMatchObject({ event: 'signal', signal });
    expect(JSON.parse(lines.at(-1)!)).toMatchObject({ event: 'stopped', msg: 'tapd stopped', level: 'info', priority: 6, svc: 'tapd' });
    expect(d.events().every((e) => !('pid' in e))).toBe(true); // the daemon's pid is journald's _PID
  });

  it('prefixes each line with its journald priority when stdout is the stream JOURNAL_STREAM names', async () => {
    const dir = tempDir('journal');
    const conf = path.join(dir, 'tapd.conf');
    writeFileSync(conf, 'network lan bridge br0\npermit root on any\n', { mode: 0o644 });
    const outPath = path.join(dir, 'out');
    const fd = openSync(outPath, 'w');
    try {
      const st = fstatSync(fd, { bigint: true });
      const proc = spawn('ip', ['netns', 'exec', ns.name, 'node', path.join(DIST, 'cli/tapd.js'), '--config', conf, '--socket', path.join(dir, 's.sock'),
        '--state-dir', path.join(dir, 'state')], { stdio: ['ignore', fd, 'pipe'], env: { ...process.env, JOURNAL_STREAM: `${st.dev}:${st.ino}` } });
      const exited = new Promise<number | null>((r) => proc.once('close', (code) => r(code)));
      await until(() => readFileSync(outPath, 'utf8').includes('tapd ready') || proc.exitCode !== null, 15_000);
      proc.kill('SIGTERM');
      expect(await exited).toBe(0);
      const lines = readFileSync(outPath, 'utf8').trim().split('\n');
      expect(lines.map((l) => l.slice(0, 3))).toEqual(['<6>', '<6>', '<6>']); // started, signal, stopped
      expect(lines.map((l) => (JSON.parse(l.slice(3)) as { event: string }).event)).toEqual(['started', 'signal', 'stopped']);
    } finally {
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('binds its own socket with the configured mode from the start (umask before bind)', async () => {
    d = await startTapd(ns, 'network lan bridge br0\npermit root on any\n', {}, { extraArgs: ['--socket-mode', '0660'] });
    expect(statSync(d.socket).mode & 0o777).toBe(0o660);
  });

  it('check explains without creating anything', async () => {
    d = await startTapd(ns, 'network lan bridge br0\npermit @nogroup on lan\n');
    const [yes, no] = client(ns, d.socket, [{ op: 'check', network: 'lan' }, { op: 'check', network: 'lan', queues: 4 }], me);
    expect(yes).toMatchObject({ ok: true, body: { allowed: true } });
    expect(String((yes!.body as { reason: string }).reason)).toMatch(/permitted by .*tapd\.conf:2 \(permit @nogroup on lan\)/);
    expect(no).toMatchObject({ ok: true, body: { allowed: false, code: 'denied' } });
    expect(ns.links().filter((l) => l.linkinfo?.info_kind === 'tun')).toEqual([]);
  });

  /**
   * tapd under `systemd-socket-activate` in the namespace, in a fresh dir with `config`. The
   * socket is made 0666 (systemd-socket-activate makes it 0644; the socket unit gives its group
   * access). `stop()` ends whatever runs (the activator, or tapd it exec'd) and removes the dir.
   */
  async function activated(config: string) {
    const dir = tempDir('activate');
    const conf = path.join(dir, 'tapd.conf');
    writeFileSync(conf, config, { mode: 0o644 });
    const sock = path.join(dir, 'tapd.sock');
    const proc = spawn('ip', ['netns', 'exec', ns.name, 'systemd-socket-activate', '-l', sock,
      'node', path.join(DIST, 'cli/tapd.js'), '--config', conf, '--state-dir', `${dir}/state`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout!.on('data', (x: Buffer) => (out += x.toString()));
    proc.stderr!.on('data', (x: Buffer) => (out += x.toString()));
    // 'close', not 'exit': only then has the last of its stdout been read.
    const exited = new Promise<number | null>((r) => proc.once('close', (code) => r(code)));
    await until(() => out.includes('Listening on'), 10_000);
    chmodSync(sock, 0o666);
    return {
      sock, proc, exited, out: () => out,
      async stop() {
        if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
        await exited;
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }

  it('exits when idle under socket activation (no lease, no connection), not while a lease lives', async () => {
    const a = await activated('network lan bridge br0\npermit @nogroup on lan\nlimits idle-exit 1s\n');
    try {
      // A lease held for 2.5 s keeps it alive past the idle time; then it goes.
      const holder = spawn('ip', ['netns', 'exec', ns.name, 'setpriv', '--reuid', String(NOBODY), '--regid', '65534', '--clear-groups', '--',
        'node', path.join(ROOT, 'test/fixtures/client.mjs'), a.sock, JSON.stringify([{ op: 'open', network: 'lan' }, { hold: 2500 }])], { stdio: 'ignore' });
      const started = Date.now();
      await new Promise((r) => holder.once('exit', r));
      expect(a.proc.exitCode).toBeNull(); // a lease was live: no idle exit
      expect(await a.exited).toBe(0);
      expect(Date.now() - started).toBeGreaterThan(2500);
      expect(a.out()).toContain('"event":"idle_exit"');
      expect(JSON.parse(a.out().trim().split('\n').at(-1)!), a.out()).toMatchObject({ event: 'stopped', level: 'info', priority: 6 });
    } finally {
      await a.stop();
    }
  });

  it('starts on the first connection through systemd socket activation, for real', async () => {
    const a = await activated('network lan bridge br0\npermit @nogroup on lan\n');
    try {
      expect(a.out()).not.toContain('tapd ready'); // not started before the first connection
      const [r] = client(ns, a.sock, [{ op: 'open', network: 'lan' }], me);
      expect(r).toMatchObject({ ok: true, fds: 1 });
      await until(() => a.out().includes('"socket":"systemd"'), 5000);
      expect(a.out()).toContain('"socket":"systemd"');
    } finally {
      await a.stop();
    }
  });
});

