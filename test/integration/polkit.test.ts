// polkitAllows against a real polkitd on the real system bus. Needs root, dbus-daemon, polkitd,
// pkcheck and setpriv. Starts what is not running, and removes everything it created after.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseStat } from '../../src/daemon/peer.js';
import { parseStartTime, polkitAllows, POLKIT_ACTION_ADMIN, POLKIT_ACTION_OPEN, type PolkitSubject } from '../../src/daemon/polkit.js';
import { client, Netns, startTapd, type DaemonHandle } from '../helpers/netns.js';

const ACTION_FILE = resolve(dirname(fileURLToPath(import.meta.url)), '../../systemd/org.tapd.policy');
const INSTALLED_ACTION = '/usr/share/polkit-1/actions/org.tapd.policy';
const RULES_FILE = `/etc/polkit-1/rules.d/49-tapd-test-${process.pid}.rules`;
const BUS_SOCKET = '/run/dbus/system_bus_socket';
const BUS_PIDFILE = '/run/dbus/pid';
const POLKITD = '/usr/lib/polkit-1/polkitd';
const TEST_USER = 'tapdtest';

const canRun = process.getuid?.() === 0 &&
  ['/usr/bin/pkcheck', POLKITD, '/usr/bin/dbus-daemon', '/usr/bin/dbus-send', '/usr/bin/setpriv', '/usr/sbin/useradd'].every((p) => existsSync(p));

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, ok: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Gone, or a zombie nobody has reaped yet. */
function processGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

function busListening(): Promise<boolean> {
  return new Promise((res) => {
    const s = createConnection({ path: BUS_SOCKET });
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

function polkitOnBus(): boolean {
  try {
    const out = execFileSync('dbus-send', ['--system', '--print-reply', '--dest=org.freedesktop.DBus', '/org/freedesktop/DBus',
      'org.freedesktop.DBus.NameHasOwner', 'string:org.freedesktop.PolicyKit1'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return /boolean true/.test(out);
  } catch {
    return false;
  }
}

function accountOf(name: string): { uid: number; gid: number } | undefined {
  for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f[2] !== undefined && f[3] !== undefined) return { uid: Number(f[2]), gid: Number(f[3]) };
  }
  return undefined;
}

function statusUid(pid: number): number | undefined {
  try {
    const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A process as identifyPeer's fallback binds it (pid + start time, taken now: the caller does this
 * right after the process started, which stands in for accept). No pidfd: these tests are about polkit.
 */
function bound(pid: number, uid: number): PolkitSubject {
  return { pid, uid, startTime: parseStartTime(readFileSync(`/proc/${pid}/stat`, 'utf8')) };
}

describe('parseStartTime', () => {
  const rest = 'S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 1234567 20 21 22';
  it('reads field 22', () => {
    expect(parseStartTime(`42 (sleep) ${rest}\n`)).toBe('1234567');
  });
  it('counts after the LAST ")" (comm may contain blanks and parentheses)', () => {
    expect(parseStartTime(`42 (a) b (c) ${rest}`)).toBe('1234567');
    expect(parseStartTime(`42 ()) ${rest}`)).toBe('1234567');
  });
  it('rejects what is not a stat line', () => {
    expect(parseStartTime('')).toBeUndefined();
    expect(parseStartTime('42 sleep S 1 2')).toBeUndefined();
    expect(parseStartTime('42 (sleep) S 1 2 3')).toBeUndefined();
    expect(parseStartTime(`42 (x) ${rest.replace('1234567', '12x')}`)).toBeUndefined();
  });
  it('parses this process', () => {
    expect(parseStartTime(readFileSync('/proc/self/stat', 'utf8'))).toMatch(/^[0-9]+$/);
  });
  // The command name is the attacker's choice (the basename it is exec'd as, or PR_SET_NAME):
  // it must not be able to pass off a start time of its choosing.
  it('hostile command names cannot forge the start time', () => {
    const fake = 'Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 666 20 21 22';
    expect(parseStartTime(`42 (x) ${fake}) ${rest}`)).toBe('1234567');
    expect(parseStartTime(`42 (x) ${fake}) ${rest}\n`)).toBe('1234567');
    expect(parseStartTime(`42 ((((() ${rest}`)).toBe('1234567');
    expect(parseStartTime(`42 () ${rest}`)).toBe('1234567');
    expect(parseStartTime(`42 (a\n) S 1 2\n) ${rest}`)).toBe('1234567');
    expect(parseStartTime(`42 (\t) \t) ${rest}`)).toBe('1234567');
    expect(parseStartTime(`42 (666 ${rest}`)).toBeUndefined(); // no ")": not a stat line
    expect(parseStartTime(`42 ) ${rest} (`)).toBeUndefined(); // ")" before "(": not a stat line
    expect(parseStartTime(`42 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 -5 20`)).toBeUndefined();
    expect(parseStartTime(`42 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 0x10 20`)).toBeUndefined();
  });
  it('a real process exec\'d under a hostile name (no root needed)', async () => {
    const d = mkdtempSync(join(tmpdir(), 'tapd-comm-'));
    const odd = join(d, ') Z 9 9 (');
    symlinkSync('/usr/bin/sleep', odd);
    const child = spawn(odd, ['30'], { stdio: 'ignore' });
    try {
      const pid = child.pid!;
      await waitFor('the oddly named sleep', () => {
        try {
          return readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z 9 9 ()');
        } catch {
          return false;
        }
      });
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const start = parseStartTime(stat);
      expect(start).toMatch(/^[0-9]+$/);
      expect(parseStat(stat)?.state).not.toBe('Z');
      // Field 22 counted from the real end of comm: the 20th blank-separated word after it.
      expect(start).toBe(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    } finally {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
      rmSync(d, { recursive: true, force: true });
    }
  });
});

describe('polkitAllows without polkit', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tapd-pk-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs pkcheck with argv (PID,START,UID), a clean environment and no user interaction', async () => {
    const out = join(dir, 'out');
    const fake = join(dir, 'pkcheck');
    writeFileSync(fake, `#!/bin/sh\nprintf '%s\\n' "$@" > ${out}\nenv | sort >> ${out}\nexit 0\n`, { mode: 0o755 });
    process.env.TAPD_TEST_SECRET = 'leak';
    try {
      expect(await polkitAllows(bound(process.pid, 1234), POLKIT_ACTION_OPEN, { pkcheck: fake })).toBe(true);
    } finally {
      delete process.env.TAPD_TEST_SECRET;
    }
    const start = parseStartTime(readFileSync(`/proc/${process.pid}/stat`, 'utf8'));
    const lines = readFileSync(out, 'utf8').trim().split('\n');
    expect(lines.slice(0, 4)).toEqual(['--action-id', 'org.tapd.open', '--process', `${process.pid},${start},1234`]);
    const env = lines.slice(4).filter((l) => !/^(PWD|SHLVL|_)=/.test(l)); // set by sh itself
    expect(env).toEqual(['LC_ALL=C', 'PATH=/usr/sbin:/usr/bin:/sbin:/bin']);
  });

  it('a non-zero exit, a missing pkcheck, a timeout, a gone process or bad input mean no', async () => {
    const no = join(dir, 'no');
    writeFileSync(no, '#!/bin/sh\nexit 1\n', { mode: 0o755 });
    const slow = join(dir, 'slow');
    writeFileSync(slow, '#!/bin/sh\nexec sleep 10\n', { mode: 0o755 });
    const yes = join(dir, 'yes');
    writeFileSync(yes, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    const me = bound(process.pid, 0);
    expect(await polkitAllows(me, POLKIT_ACTION_OPEN, { pkcheck: no })).toBe(false);
    expect(await polkitAllows(me, POLKIT_ACTION_OPEN, { pkcheck: join(dir, 'missing') })).toBe(false);
    const t0 = Date.now();
    expect(await polkitAllows(me, POLKIT_ACTION_OPEN, { pkcheck: slow, timeoutMs: 300 })).toBe(false);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(await polkitAllows({ ...me, pid: 0x3ffffff0 }, POLKIT_ACTION_OPEN, { pkcheck: yes })).toBe(false);
    // Not bound at accept (no start time), or bound to another start time: no, whatever pkcheck says.
    expect(await polkitAllows({ pid: process.pid, uid: 0 }, POLKIT_ACTION_OPEN, { pkcheck: yes })).toBe(false);
    expect(await polkitAllows({ ...me, startTime: '1' }, POLKIT_ACTION_OPEN, { pkcheck: yes })).toBe(false);
    expect(await polkitAllows({ ...me, startTime: '12 34' }, POLKIT_ACTION_OPEN, { pkcheck: yes })).toBe(false);
    expect(await polkitAllows({ ...me, pid: -1 }, POLKIT_ACTION_OPEN, { pkcheck: yes })).toBe(false);
    expect(await polkitAllows({ ...me, pid: 1.5 }, POLKIT_ACTION_OPEN, { pkcheck: yes })).toBe(false);
    expect(await polkitAllows(me, '--allow-user-interaction', { pkcheck: yes })).toBe(false);
    expect(await polkitAllows(me, 'org.tapd.open;rm', { pkcheck: yes })).toBe(false);
    expect(await polkitAllows(me, POLKIT_ACTION_OPEN, { pkcheck: yes })).toBe(true);
  });
});

describe.skipIf(!canRun)('polkitAllows against a real polkitd', () => {
  let dir: string;
  let busPid: number | undefined;
  let busFilesBefore: { socket: boolean; pidfile: boolean } = { socket: true, pidfile: true };
  let polkitd: ChildProcess | undefined;
  let wroteAction = false;
  let createdUser = false;
  let nobody = { uid: 65534, gid: 65534 };
  let tapdtest = { uid: -1, gid: -1 };
  const sleepers: ChildProcess[] = [];

  /** A process of `user` (running `cmd`, `sleep` by default) that polkit can be asked about. */
  async function processOf(user: { uid: number; gid: number }, cmd = 'sleep'): Promise<PolkitSubject> {
    const { uid, gid } = user;
    const child = spawn('setpriv', ['--reuid', String(uid), '--regid', String(gid), '--clear-groups', cmd, '30'], { stdio: 'ignore' });
    sleepers.push(child);
    const pid = child.pid;
    if (pid === undefined) throw new Error('setpriv did not start');
    await waitFor(`process ${pid} to run as uid ${uid}`, () => {
      if (child.exitCode !== null) throw new Error(`setpriv exited with ${child.exitCode}`);
      return statusUid(pid) === uid;
    });
    return bound(pid, uid);
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tapd-polkit-'));
    chmodSync(dir, 0o755); // setpriv runs a symlink in here as nobody

    // The system bus: use the running one, or start one and remember to stop it.
    if (!(await busListening())) {
      busFilesBefore = { socket: existsSync(BUS_SOCKET), pidfile: existsSync(BUS_PIDFILE) };
      const out = execFileSync('dbus-daemon', ['--system', '--fork', '--print-pid'], { encoding: 'utf8' });
      busPid = Number(out.trim().split('\n')[0]);
      expect(busPid).toBeGreaterThan(0);
      await waitFor('the system bus', () => existsSync(BUS_SOCKET));
    }

    if (!existsSync(INSTALLED_ACTION)) {
      copyFileSync(ACTION_FILE, INSTALLED_ACTION);
      wroteAction = true;
    }
    writeFileSync(RULES_FILE, `// tapd test (test/integration/polkit.test.ts); removed after the test
polkit.addRule(function(action, subject) {
    if (action.id == "org.tapd.open") {
        if (subject.user == "nobody") return polkit.Result.YES;
        if (subject.user == "${TEST_USER}") return polkit.Result.NO;
    }
});
`, { mode: 0o644 });

    nobody = accountOf('nobody') ?? nobody;
    if (accountOf(TEST_USER) === undefined) {
      execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', TEST_USER], { stdio: 'ignore' });
      createdUser = true;
    }
    tapdtest = accountOf(TEST_USER) ?? tapdtest;
    expect(tapdtest.uid).toBeGreaterThan(0);

    // polkitd: a running one picks up the new files by itself; else start ours.
    if (!polkitOnBus()) {
      polkitd = spawn(POLKITD, ['--no-debug'], { stdio: 'ignore' });
      await waitFor('polkitd on the system bus', polkitOnBus);
    } else {
      await sleep(1000);
    }
  });

  afterAll(async () => {
    for (const s of sleepers) if (s.exitCode === null && s.signalCode === null) s.kill('SIGKILL');
    if (polkitd?.pid !== undefined && polkitd.exitCode === null && polkitd.signalCode === null) {
      const exited = new Promise((r) => polkitd?.once('exit', r));
      polkitd.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
    }
    if (busPid !== undefined) {
      const pid = busPid;
      process.kill(pid, 'SIGTERM');
      await waitFor(`dbus-daemon ${pid} to exit`, () => processGone(pid), 5000);
      if (!busFilesBefore.socket) rmSync(BUS_SOCKET, { force: true });
      if (!busFilesBefore.pidfile) rmSync(BUS_PIDFILE, { force: true });
    }
    rmSync(RULES_FILE, { force: true });
    if (wroteAction) rmSync(INSTALLED_ACTION, { force: true });
    if (createdUser) {
      execFileSync('userdel', [TEST_USER], { stdio: 'ignore' });
      // useradd --system made a group of the same name unless USERGROUPS_ENAB is off; userdel removes it.
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('yes for a process of a user the rules allow (nobody)', async () => {
    expect(await polkitAllows(await processOf(nobody), POLKIT_ACTION_OPEN)).toBe(true);
  });

  it('no for a process of a user the rules deny', async () => {
    expect(await polkitAllows(await processOf(tapdtest), POLKIT_ACTION_OPEN)).toBe(false);
  });

  it('no when only authentication would do (org.tapd.admin is auth_admin_keep; tapd never asks interactively)', async () => {
    expect(await polkitAllows(await processOf(nobody), POLKIT_ACTION_ADMIN)).toBe(false);
  });

  it('a command name with blanks and parentheses does not confuse the start time', async () => {
    const odd = join(dir, 'a) 1 2 (b');
    symlinkSync('/usr/bin/sleep', odd);
    const p = await processOf(nobody, odd);
    expect(readFileSync(`/proc/${p.pid}/stat`, 'utf8')).toContain('(a) 1 2 (b)');
    expect(await polkitAllows(p, POLKIT_ACTION_OPEN)).toBe(true);
  });

  it('no once the process is gone (its pid may be somebody else\'s by now)', async () => {
    const p = await processOf(nobody);
    const child = sleepers[sleepers.length - 1];
    const exited = new Promise((r) => child?.once('exit', r));
    child?.kill('SIGKILL');
    await exited;
    expect(await polkitAllows(p, POLKIT_ACTION_OPEN)).toBe(false);
  });

  it('the daemon asks polkit for a rule marked polkit: allowed for nobody, denied for the other user', async () => {
    const ns = Netns.create('pk');
    let d: DaemonHandle | undefined;
    try {
      ns.run('ip', ['link', 'add', 'br0', 'type', 'bridge']);
      d = await startTapd(ns, 'network lan bridge br0\npermit everyone on lan polkit\n');
      const [yes] = client(ns, d.socket, [{ op: 'open', network: 'lan' }], { uid: nobody.uid, gid: nobody.gid });
      expect(yes).toMatchObject({ ok: true, fds: 1 });
      const [no] = client(ns, d.socket, [{ op: 'open', network: 'lan' }], { uid: tapdtest.uid, gid: tapdtest.gid });
      expect(no).toMatchObject({ ok: false, code: 'denied' });
      expect(String(no!.message)).toMatch(/polkit did not authorize org\.tapd\.open/);
    } finally {
      await d?.stop();
      ns.destroy();
    }
  });

  it('no for an unknown action', async () => {
    expect(await polkitAllows(await processOf(nobody), 'org.tapd.no-such-action')).toBe(false);
  });
});
