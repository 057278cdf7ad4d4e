// The pid-reuse attack on polkit (CVE-2013-4288 class), for real, with a real polkitd: in a private
// pid namespace an unprivileged client connects, hands its connection to a child and exits; its
// pid is given (via ns_last_pid) to a process the polkit rules authorize; the child then asks.
// tapd must say no: the subject is the process that connected, not whoever has its pid now.
// Needs root, unshare, dbus-daemon, polkitd, pkcheck, setpriv, perl, and a build (dist/).
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIST, ROOT, tapdNodeArgs, tempDir } from '../helpers/netns.js';

const NEEDS = ['/usr/bin/unshare', '/usr/bin/pkcheck', '/usr/lib/polkit-1/polkitd', '/usr/bin/dbus-daemon', '/usr/bin/dbus-send', '/usr/bin/setpriv', '/usr/bin/perl'];
const canRun = process.getuid?.() === 0 && NEEDS.every((p) => existsSync(p));

// The rules trust a process by what it is (here its name, read from /proc by pid the way polkit
// finds a process's logind session), not by its uid: attacker and victim are both uid 65534.
const RULES = `// tapd test (test/pid-reuse.test.ts), inside a private mount namespace only
polkit.addRule(function(action, subject) {
    if (action.id != "org.tapd.open") return polkit.Result.NOT_HANDLED;
    try {
        var comm = polkit.spawn(["/bin/cat", "/proc/" + subject.pid + "/comm"]);
        if (comm.trim() == "tapd-trusted") return polkit.Result.YES;
    } catch (e) {}
    return polkit.Result.NO;
});
`;

describe.skipIf(!canRun)('pid reuse after a hand-off (real polkitd in a private pid namespace)', () => {
  let dir: string;
  let results: Array<Record<string, unknown>> = [];
  let stderr = '';

  beforeAll(() => {
    expect(existsSync(path.join(DIST, 'daemon/peer.js')), 'run `npm run build` first').toBe(true);
    dir = tempDir('pidreuse');
    for (const d of ['rules.d', 'actions', 'empty']) mkdirSync(path.join(dir, d), { mode: 0o755 });
    writeFileSync(path.join(dir, 'rules.d/49-tapd-reuse.rules'), RULES, { mode: 0o644 });
    copyFileSync(path.join(ROOT, 'systemd/org.tapd.policy'), path.join(dir, 'actions/org.tapd.policy'));
    copyFileSync(path.join(ROOT, 'test/fixtures/peer-client.pl'), path.join(dir, 'peer-client.pl'));
    symlinkSync('/usr/bin/perl', path.join(dir, 'tapd-trusted'));
    // --kill-child: should vitest die, the namespace (and everything in it) dies too.
    const r = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', '--kill-child', 'node', path.join(ROOT, 'test/fixtures/pid-reuse.mjs'), dir, JSON.stringify(tapdNodeArgs())],
      { encoding: 'utf8', timeout: 120_000, killSignal: 'SIGKILL' });
    stderr = r.stderr;
    results = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  }, 150_000);

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const find = (scenario: string, binding?: string) => {
    const r = results.find((x) => x.scenario === scenario && (binding === undefined || x.binding === binding));
    if (!r) throw new Error(`no result for ${scenario} ${binding ?? ''}: ${stderr}`);
    return r;
  };

  it('ran to the end', () => {
    expect(results.at(-1), stderr).toEqual({ done: true });
  });

  it('controls: polkit authorizes the trusted process and refuses the attacker itself', () => {
    expect(find('trusted-asks').reply).toBe('yes');
    expect(find('attacker-asks').reply).toBe('no');
  });

  it('the attack works against a start time read at request time (what tapd did): the scenario is real', () => {
    const r = find('handoff', 'legacy');
    expect(r.reuser).toBe(r.attacker);
    expect(r.reuserComm).toBe('tapd-trusted');
    expect(r.reply).toBe('yes');
  });

  it('denied with the process bound through SO_PEERPIDFD at accept', () => {
    const r = find('handoff', 'pidfd');
    expect(r.reuser).toBe(r.attacker);
    expect(r.reuserComm).toBe('tapd-trusted');
    expect(r.reply).toBe('no');
  });

  it('denied with the fallback (pid + start time at accept): polkitd refuses the reuser\'s other start time', () => {
    const r = find('handoff', 'pid-start');
    expect(r.reuser).toBe(r.attacker);
    expect(r.reply).toBe('no');
    expect(r.reuserStart).not.toBe(r.boundStart);
    expect(r.pkcheckWithBoundStart).not.toBe(0); // polkitd itself: "process has been replaced"
  });

  it('the real daemon: polkit authorizes the trusted process and refuses the attacker (controls)', () => {
    expect(find('daemon-trusted-asks').reply).toMatchObject({ ok: true, allowed: true });
    expect(find('daemon-attacker-asks').reply).toMatchObject({ ok: true, allowed: false, code: 'denied' });
  });

  it('the real daemon, which identifies the peer only once the request is in: an attacker that connected, sent nothing, handed off and exited is not taken for the process that got its pid', () => {
    const r = find('daemon-handoff');
    expect(r.reuser).toBe(r.attacker);
    expect(r.reuserComm).toBe('tapd-trusted');
    expect(r.reply).toMatchObject({ ok: true, allowed: false, code: 'denied' });
  });

  it('polkitd refuses the start time bound at accept in every mode (a second line of defence)', () => {
    for (const mode of ['pidfd', 'pid-start', 'legacy']) {
      const r = find('handoff', mode);
      expect(r.reuserStart).not.toBe(r.boundStart);
      expect(r.pkcheckWithBoundStart).not.toBe(0);
      expect(r.pkcheckSays).toMatch(/replaced|does not exist|start time/i);
    }
  });
});
