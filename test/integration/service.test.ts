// The daemon as tapd.service runs it: socket-activated on /run/tapd/tapd.sock, as an unprivileged
// user holding CAP_NET_ADMIN only (ambient), no new privileges. /run and /dev/net are private
// tmpfs mounts inside the test's own mount namespace, so the host's are never touched.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIST, NOBODY, Netns, ROOT, tapdNodeArgs, tempDir, until } from '../helpers/netns.js';

const SERVICE_UID = 4243; // stands in for the `tapd` system user
const CAP_NET_ADMIN = 1n << 12n;

describe('tapd as the systemd unit runs it', () => {
  let ns: Netns;
  let dir: string;
  let launcher: ChildProcess;
  let out = '';
  /** Whether this kernel has PR_SET_MDWE (Linux 6.3+): the daemon runs under it where it does. */
  let mdwe = false;

  // One shell inside the namespace and a private mount namespace: it sets up /run/tapd and a
  // 0666 /dev/net/tun (this machine's is 0600 without udev), then socket-activates the daemon
  // with setpriv standing in for User=, AmbientCapabilities=, CapabilityBoundingSet= and
  // NoNewPrivileges=, and mdwe-exec (prctl PR_SET_MDWE) for MemoryDenyWriteExecute=. Clients are started inside the same mount namespace through nsenter.
  beforeAll(async () => {
    ns = Netns.create('svc');
    ns.addBridge('br0');
    dir = tempDir('svc');
    const cc = spawnSync('gcc', ['-O2', '-o', path.join(dir, 'mdwe-exec'), path.join(ROOT, 'test/fixtures/mdwe-exec.c')], { encoding: 'utf8' });
    if (cc.status !== 0) throw new Error(`gcc mdwe-exec.c: ${cc.stderr}`);
    const probe = spawnSync(path.join(dir, 'mdwe-exec'), ['true'], { encoding: 'utf8' });
    if (probe.status !== 0 && probe.status !== 3) throw new Error(`mdwe-exec true: ${probe.stderr}`);
    mdwe = probe.status === 0;
    writeFileSync(path.join(dir, 'tapd.conf'), `network lan bridge br0 up ${dir}/up\npermit @nogroup on lan\n`, { mode: 0o644 });
    // The up hook needs CAP_NET_ADMIN too: it inherits the daemon's ambient capability.
    writeFileSync(path.join(dir, 'up'), '#!/bin/sh\nip link set dev "$1" alias tapd-hooked\n', { mode: 0o755 });
    chmodSync(path.join(dir, 'up'), 0o755);
    const script = `
      set -e
      mount -t tmpfs -o mode=0755 tmpfs /run
      mkdir -p /run/tapd/state && chown ${SERVICE_UID}:${SERVICE_UID} /run/tapd/state && chmod 700 /run/tapd/state
      mount -t tmpfs -o mode=0755 tmpfs /dev/net && mknod -m 0666 /dev/net/tun c 10 200
      echo "mntns $$"
      umask 0
      exec systemd-socket-activate -l /run/tapd/tapd.sock \\
        setpriv --reuid ${SERVICE_UID} --regid ${SERVICE_UID} --clear-groups \\
          --inh-caps=-all,+net_admin --ambient-caps=-all,+net_admin --bounding-set=-all,+net_admin --no-new-privs -- \\
        ${mdwe ? `${dir}/mdwe-exec ` : ''}node ${tapdNodeArgs().join(' ')} --config ${dir}/tapd.conf --state-dir /run/tapd/state`;
    launcher = spawn('ip', ['netns', 'exec', ns.name, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    launcher.stdout!.on('data', (x: Buffer) => (out += x.toString()));
    launcher.stderr!.on('data', (x: Buffer) => (out += x.toString()));
    await until(() => out.includes('Listening on'), 10_000);
    if (!out.includes('Listening on')) throw new Error(out);
    // systemd-socket-activate makes the socket 0644; tapd.socket gives group tapd 0660.
    ns.run('nsenter', ['--mount', '-t', String(launcherPid()), '--', 'chmod', '666', '/run/tapd/tapd.sock']);
  });

  afterAll(async () => {
    launcher?.kill('SIGTERM');
    if (launcher && launcher.exitCode === null) await new Promise((r) => launcher.once('exit', r));
    ns?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const launcherPid = () => Number(/mntns (\d+)/.exec(out)![1]);

  /** Runs the test client as uid 65534 inside the daemon's mount namespace (for /run/tapd). */
  function clientInMntns(steps: unknown[]) {
    const r = ns.exec('nsenter', ['--mount', '-t', String(launcherPid()), '--',
      'setpriv', '--reuid', String(NOBODY), '--regid', '65534', '--clear-groups', '--',
      'node', path.join(ROOT, 'test/fixtures/client.mjs'), '/run/tapd/tapd.sock', JSON.stringify(steps)]);
    if (r.status !== 0) throw new Error(r.stderr);
    return r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  it('serves an unprivileged client a working bridged TAP, and runs the hook with CAP_NET_ADMIN', async () => {
    const [open] = clientInMntns([{ op: 'open', network: 'lan' }, { hold: 300 }]);
    expect(open).toMatchObject({ ok: true, fds: 1, body: { lease: { bridge: 'br0' } } });
    await until(() => /"event":"hook".*"exit":0/.test(out), 5000);
    expect(out).toContain('"event":"lease_start"');
    expect(out).toMatch(/"event":"hook".*"exit":0/);
  });

  it('runs with exactly CAP_NET_ADMIN, NoNewPrivs and a non-root uid', () => {
    const pid = Number(ns.run('pgrep', ['-f', `${path.join(DIST, 'cli/tapd.js')} --config ${dir}/tapd.conf`]).trim().split('\n')[0]);
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const field = (name: string) => /^(\S+):\s+(.*)$/m.exec(status.split('\n').find((l) => l.startsWith(`${name}:`))!)![2]!.trim();
    for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) expect(BigInt(`0x${field(set)}`), set).toBe(CAP_NET_ADMIN);
    expect(field('NoNewPrivs')).toBe('1');
    expect(field('Uid').split(/\s+/).map(Number)).toEqual([SERVICE_UID, SERVICE_UID, SERVICE_UID, SERVICE_UID]);
    expect(field('Gid').split(/\s+/).map(Number)).toEqual([SERVICE_UID, SERVICE_UID, SERVICE_UID, SERVICE_UID]);
  });

  it('the hook really changed the device (it ran with the capability, not just exit 0)', async () => {
    const script = `
      import * as c from '${DIST}/client/client.js';
      import { execFileSync } from 'node:child_process';
      const t = c.openTapSync('/run/tapd/tapd.sock', {network: 'lan'});
      console.log(execFileSync('ip', ['-j', 'link', 'show', t.lease.ifname], {encoding: 'utf8'}));`;
    const r = ns.exec('nsenter', ['--mount', '-t', String(launcherPid()), '--',
      'setpriv', '--reuid', String(NOBODY), '--regid', '65534', '--clear-groups', '--', 'node', '--input-type=module', '-e', script]);
    expect(r.status, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as Array<{ ifalias?: string }>)[0]!.ifalias).toBe('tapd-hooked');
  });
  it('MemoryDenyWriteExecute holds for real: the same stand-in kills a node that JIT-compiles, and the daemon above served under it', (t) => {
    if (!mdwe) t.skip('this kernel has no PR_SET_MDWE (Linux 6.3 and later): the daemon above ran without it');
    const loop = 'let s = 0; for (let i = 0; i < 1e7; i++) s += i; console.log(s)';
    const jit = spawnSync(path.join(dir, 'mdwe-exec'), ['node', '-e', loop], { encoding: 'utf8' });
    expect(jit.status).toBeNull();
    expect(jit.signal).toBe('SIGTRAP');
    const jitless = spawnSync(path.join(dir, 'mdwe-exec'), ['node', ...tapdNodeArgs().slice(0, -1), '-e', loop], { encoding: 'utf8' });
    expect(jitless.status, jitless.stderr).toBe(0);
    expect(jitless.stderr).toBe('');
    // And tapd said nothing on stderr about its flags (no "disabling flag" warnings).
    expect(out).not.toContain('disabling flag');
  });
});
