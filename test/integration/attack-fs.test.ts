// Attacks through the filesystem (issue 10, classes 3, 8 and 10), each by a real unprivileged
// user (uid 65534 through setpriv) against a real tapd started as root inside a namespace.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LeaseTable } from '../../src/daemon/leases.js';
import { asUser, client, DIST, NOBODY, Netns, startTapd, tempDir, until, type DaemonHandle } from '../helpers/netns.js';

const TAPD = path.join(DIST, 'cli/tapd.js');
const me = { uid: NOBODY, gid: NOBODY };
const isRoot = process.getuid?.() === 0;

/** Runs a shell command as uid 65534 (no namespace needed: these are filesystem moves). */
function asNobody(script: string): void {
  const r = spawnSync(asUser(me)[0]!, [...asUser(me).slice(1), 'sh', '-c', script], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`as uid ${NOBODY}: ${script}: ${r.stderr}`);
}

/** A root-owned file with this content and mode. */
function put(p: string, content: string, mode: number): string {
  mkdirSync(path.dirname(p), { recursive: true, mode: 0o755 });
  writeFileSync(p, content);
  chmodSync(p, mode);
  chownSync(p, 0, 0);
  return p;
}

/** `tapd --check-config`, bounded: a hang is a failure (status null), not a stuck test run. */
function checkConfig(config: string) {
  return spawnSync('node', [TAPD, '--check-config', '--config', config], { encoding: 'utf8', timeout: 30_000 });
}

const LEASE = {
  id: '0123456789abcdef', ownerUid: 1000, pid: 4321, network: 'lan', bridge: 'br0', mac: '52:54:00:00:00:01',
  mtu: 1500, queues: 1, vnetHdr: false, ifname: 'tapgone0', ifindex: 99999, started: '2024-01-01T00:00:00.000Z', upRan: true,
};
const startLine = (lease: Record<string, unknown> = LEASE) => JSON.stringify({ start: lease });

describe.skipIf(!isRoot)('filesystem attacks', () => {
  let ns: Netns;
  let t: string;
  const cleanup: string[] = [];
  beforeAll(() => {
    ns = Netns.create('afs');
    ns.addBridge('br0');
  });
  afterAll(() => ns?.destroy());
  afterEach(() => {
    for (const d of cleanup.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const scratch = (tag: string) => {
    t = tempDir(tag); // root's, 0755, in /tmp: trusted under the rule
    cleanup.push(t);
    return t;
  };
  /** tapd as root in the namespace; returns when it exits (these starts are refused). */
  const start = (config: string, stateDir: string) =>
    ns.exec('node', [TAPD, '--config', config, '--socket', path.join(path.dirname(config), 'tapd.sock'), '--state-dir', stateDir]);

  describe('class 3: a hook path through a directory a user owns', () => {
    it('is refused at load and by --check-config (file:line:column), though its symlink leads to a trusted hook', () => {
      scratch('hook');
      put(path.join(t, 'hooks/up'), `#!/bin/sh\necho "ran $1" >> ${t}/ran\n`, 0o755);
      mkdirSync(path.join(t, 'user'));
      chownSync(path.join(t, 'user'), NOBODY, NOBODY);
      asNobody(`ln -s ${t}/hooks ${t}/user/link`);
      const config = put(path.join(t, 'tapd.conf'), `network lan bridge br0 up ${t}/user/link/up\npermit @nogroup on lan\n`, 0o644);
      const problem = `${config}:1:27: directory ${t}/user of hook ${t}/user/link/up is owned by uid 65534, not root (fix: chown root ${t}/user)`;
      const check = checkConfig(config);
      expect(check.stderr).toBe(`${problem}\n`);
      expect(check.status).toBe(1);
      const r = start(config, path.join(t, 'state'));
      expect(r.status).toBe(1);
      expect(r.stderr).toContain(problem);
      expect(r.stderr).toContain('tapd: not starting');
      expect(existsSync(path.join(t, 'ran'))).toBe(false);
    });

    it('--check-config also refuses a missing hook, an untrusted one and one not executable; load checks only the way there', () => {
      scratch('hookfile');
      put(path.join(t, 'hooks/open'), '#!/bin/sh\n', 0o777);
      put(path.join(t, 'hooks/noexec'), '#!/bin/sh\n', 0o644);
      const config = put(path.join(t, 'tapd.conf'),
        `network a bridge bra up ${t}/hooks/missing\nnetwork b bridge brb down ${t}/hooks/open\nnetwork c hostonly up ${t}/hooks/noexec\n`, 0o644);
      const r = checkConfig(config);
      expect(r.status).toBe(1);
      expect(r.stderr.trim().split('\n')).toEqual([
        `${config}:1:25: hook ${t}/hooks/missing does not exist (no ${t}/hooks/missing)`,
        `${config}:2:27: hook ${t}/hooks/open is writable by group or others; chmod go-w ${t}/hooks/open`,
        `${config}:3:23: hook ${t}/hooks/noexec is not executable; chmod +x ${t}/hooks/noexec`,
      ]);
    });

    describe('at run time, while the user swaps the symlink in a loop', () => {
      let d: DaemonHandle;
      let swapper: ChildProcess | undefined;
      afterAll(async () => {
        swapper?.kill('SIGKILL');
        await d?.stop();
      });

      it('never runs the user\'s script: every run re-checks the path and refuses it, and so does a reload', async () => {
        d = await startTapd(ns, 'network lan bridge br0 up @DIR@/u/link/up\npermit @nogroup on lan\n', {
          'good/up': ['#!/bin/sh\necho "good $1" >> @DIR@/ran\n', 0o755],
        });
        const u = path.join(d.dir, 'u');
        const ran = () => (existsSync(path.join(d.dir, 'ran')) ? readFileSync(path.join(d.dir, 'ran'), 'utf8') : '');
        mkdirSync(u, { mode: 0o755 });
        symlinkSync(path.join(d.dir, 'good'), path.join(u, 'link'));
        // Control: while only root can change the way there, the hook runs.
        const [ok] = client(ns, d.socket, [{ op: 'open', network: 'lan' }], me);
        expect(ok).toMatchObject({ ok: true });
        await until(() => ran().includes('good'), 5000);
        expect(ran()).toMatch(/^good tap[0-9a-f]{8}\n$/);
        // The admin's mistake: the directory is handed to a user, who races the daemon.
        chownSync(u, NOBODY, NOBODY);
        asNobody(`mkdir ${u}/evil && printf '#!/bin/sh\\necho "evil $1 uid $(id -u)" >> ${d.dir}/ran\\n' > ${u}/evil/up && chmod 755 ${u}/evil/up`);
        swapper = spawn(asUser(me)[0]!, [...asUser(me).slice(1), 'sh', '-c',
          `while :; do ln -sfn ${d.dir}/good ${u}/l2 && mv -T ${u}/l2 ${u}/link; ln -sfn ${u}/evil ${u}/l2 && mv -T ${u}/l2 ${u}/link; done`], { stdio: 'ignore' });
        for (let i = 0; i < 20; i++) {
          const [r] = client(ns, d.socket, [{ op: 'open', network: 'lan' }], me);
          expect(r).toMatchObject({ ok: false, code: 'hook_failed' });
        }
        const refusals = () => d.events().filter((e) => e.event === 'hook_refused');
        await until(() => refusals().length >= 20, 10_000);
        const refused = refusals();
        expect(refused, d.log()).toHaveLength(20);
        for (const e of refused) expect(String(e.reason)).toContain(`directory ${u} of hook ${u}/link/up is owned by uid 65534, not root`);
        d.proc.kill('SIGHUP');
        expect(String((await d.waitFor('policy_reload_failed')).problems)).toContain(`directory ${u} of hook ${u}/link/up is owned by uid 65534`);
        swapper.kill('SIGKILL');
        await new Promise((r) => (swapper!.exitCode !== null || swapper!.signalCode !== null ? r(null) : swapper!.once('exit', r)));
        expect(ran()).not.toContain('evil');
        expect(ran().split('\n').filter(Boolean)).toHaveLength(1);
      });
    });
  });

  describe('class 8: a state directory someone else made or can change', () => {
    let sticky: string;
    let secret: string;
    let config: string;
    const journal = startLine();
    const prepare = () => {
      scratch('plant');
      sticky = path.join(t, 'sticky');
      mkdirSync(sticky);
      chmodSync(sticky, 0o1777); // as /tmp
      secret = put(path.join(t, 'secret'), 'root only\n', 0o600);
      put(path.join(t, 'down'), `#!/bin/sh\necho "down $1" >> ${t}/down.ran\n`, 0o755);
      config = put(path.join(t, 'tapd.conf'), `network lan bridge br0 down ${t}/down\npermit @nogroup on lan\n`, 0o644);
    };

    it('a user pre-creates it in a sticky dir with a planted lease and a link at leases.journal.tmp: tapd refuses to start, touches nothing', () => {
      prepare();
      const state = path.join(sticky, 'state');
      asNobody(`mkdir -m 0755 ${state} && ln -s ${secret} ${state}/leases.journal.tmp && printf '%s\\n' '${journal}' > ${state}/leases.journal`);
      const r = start(config, state);
      expect(r.status).toBe(1);
      expect(r.stderr).toContain(`tapd: cannot start: state directory ${state}: ${state} is owned by uid 65534, not by tapd's uid 0 (did someone else create it first?)`);
      expect(readFileSync(secret, 'utf8')).toBe('root only\n');
      expect(existsSync(path.join(t, 'down.ran'))).toBe(false);
      expect(readFileSync(path.join(state, 'leases.journal'), 'utf8')).toBe(`${journal}\n`);
      expect(lstatSync(path.join(state, 'leases.journal.tmp')).isSymbolicLink()).toBe(true);
    });

    it('root\'s state dir inside a directory the user owns (they could swap it) is refused too', () => {
      prepare();
      asNobody(`mkdir -m 0755 ${sticky}/u`);
      mkdirSync(path.join(sticky, 'u/state'), { mode: 0o700 });
      const r = start(config, path.join(sticky, 'u/state'));
      expect(r.status).toBe(1);
      expect(r.stderr).toContain(`directory ${sticky}/u is owned by uid 65534, not root`);
    });

    it('a symlink at leases.journal is refused, never followed; one at leases.journal.tmp is removed, never written through', () => {
      prepare();
      const state = path.join(t, 'state');
      mkdirSync(state, { mode: 0o700 });
      symlinkSync(secret, path.join(state, 'leases.journal'));
      const r = start(config, state);
      expect(r.status).toBe(1);
      expect(r.stderr).toContain(`${state}/leases.journal is a symbolic link; tapd never follows links in its state dir`);
      expect(readFileSync(secret, 'utf8')).toBe('root only\n');
      rmSync(path.join(state, 'leases.journal'));
      symlinkSync(secret, path.join(state, 'leases.journal.tmp'));
      new LeaseTable(state).persist();
      expect(readFileSync(secret, 'utf8')).toBe('root only\n');
      expect(existsSync(path.join(state, 'leases.journal.tmp'))).toBe(false);
      expect(lstatSync(path.join(state, 'leases.journal')).isFile()).toBe(true);
    });

    it('tapd --help no longer suggests /tmp in its examples', () => {
      const help = spawnSync('node', [TAPD, '--help'], { encoding: 'utf8' }).stdout;
      const examples = help.slice(help.indexOf('Examples:'), help.indexOf('\n\n', help.indexOf('Examples:')));
      expect(examples).toContain('--state-dir /run/tapd');
      expect(examples).not.toContain('/tmp');
    });
  });

  describe('class 10: damaged input that is not the peer\'s', () => {
    let dir: string;
    const journalFile = () => path.join(dir, 'leases.journal');
    const load = () => new LeaseTable(dir).loadRecorded();
    const withLines = (...lines: string[]) => writeFileSync(journalFile(), lines.join('\n'), { mode: 0o600 });
    const refused = (line: number, what: string | RegExp) => {
      let err: unknown;
      try {
        load();
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ name: 'TapdError', code: 'state_invalid' });
      expect((err as Error).message).toContain(`${journalFile()}:${line} `);
      expect((err as Error).message).toMatch(what);
      expect((err as Error).message).toContain('move the file aside');
    };

    it.each([
      ['null', 'null', 'found null'],
      ['{"start":null}', '{"start":null}', '"start" must be a lease object, found null'],
      ['an array', '[]', 'found an array'],
      ['a number', '5', 'found number'],
      ['an empty object', '{}', 'expected exactly one of "start" or "end"'],
      ['both start and end', `{"start":${JSON.stringify(LEASE)},"end":"0123456789abcdef"}`, 'expected exactly one'],
      ['an ill-typed end', '{"end":5}', '"end" must be 16 lowercase hex digits'],
      ['a missing field', startLine({ ...LEASE, mtu: undefined }), 'the lease has no "mtu"'],
      ['a string uid', startLine({ ...LEASE, ownerUid: '0' }), 'the lease\'s "ownerUid" must be an integer uid'],
      ['a negative uid', startLine({ ...LEASE, ownerUid: -1 }), '"ownerUid" must be an integer uid from 0'],
      ['a fractional ifindex', startLine({ ...LEASE, ifindex: 1.5 }), '"ifindex" must be an interface index'],
      ['an ifname with a slash', startLine({ ...LEASE, ifname: '../x' }), '"ifname" "../x" may contain only'],
      ['an overlong ifname', startLine({ ...LEASE, ifname: 'tap' + 'x'.repeat(13) }), '"ifname" "tapxxxxxxxxxxxxx" is longer than 15 bytes'],
      ['a numeric bridge', startLine({ ...LEASE, bridge: 7 }), '"bridge" must be an interface name'],
      ['a bad MAC', startLine({ ...LEASE, mac: '52:54:00:00:00' }), '"mac" must be a MAC address'],
      ['queues 0', startLine({ ...LEASE, queues: 0 }), '"queues" must be an integer from 1 to 16'],
      ['MTU 70000', startLine({ ...LEASE, mtu: 70000 }), '"mtu" must be an integer from 68 to 65521'],
      ['a string upRan', startLine({ ...LEASE, upRan: 'yes' }), '"upRan" must be true or false'],
      ['an unknown field', startLine({ ...LEASE, script: '/tmp/x' }), 'unknown field "script"'],
    ])('a journal line of %s is refused naming file and line', (_name, bad, what) => {
      dir = scratch('journal');
      withLines(startLine(), bad, '{"end":"0123456789abcdef"}', '');
      refused(2, what);
    });

    it('only a last line cut short is skipped; a whole bad last line, or an empty line, is refused', () => {
      dir = scratch('journal');
      withLines(startLine(), '{"end":"01234'); // crash mid-append: no newline, not JSON
      expect(load().map((l) => l.id)).toEqual([LEASE.id]);
      withLines(startLine(), 'null'); // valid JSON, so not cut short
      refused(2, 'found null');
      withLines(startLine(), '', startLine(), '');
      refused(2, 'is empty');
    });

    it('a journal that cannot be read is never taken as "no leases"', () => {
      dir = scratch('journal');
      mkdirSync(journalFile()); // EISDIR for read()
      expect(load).toThrow(`${journalFile()} is not a regular file`);
      rmSync(journalFile(), { recursive: true });
      // EACCES, for real: tapd as uid 65534 with a state dir of its own and root's journal in it.
      const state = path.join(dir, 'state');
      mkdirSync(state, { mode: 0o700 });
      chownSync(state, NOBODY, NOBODY);
      put(path.join(state, 'leases.journal'), `${startLine()}\n`, 0o600);
      const script = `import('${path.join(DIST, 'daemon/leases.js')}').then((m) => {
        try { console.log('loaded ' + new m.LeaseTable('${state}').loadRecorded().length); } catch (e) { console.log(e.code + ': ' + e.message); }
      })`;
      const r = spawnSync(asUser(me)[0]!, [...asUser(me).slice(1), 'node', '-e', script], { encoding: 'utf8', timeout: 30_000 });
      expect(r.stdout).toContain(`state_invalid: ${state}/leases.journal cannot be opened: permission denied`);
      // Readable but someone else's: not ours to trust either.
      chmodSync(path.join(state, 'leases.journal'), 0o644);
      const r2 = spawnSync(asUser(me)[0]!, [...asUser(me).slice(1), 'node', '-e', script], { encoding: 'utf8', timeout: 30_000 });
      expect(r2.stdout).toContain(`state_invalid: ${state}/leases.journal is owned by uid 0, not by tapd's uid 65534`);
    });

    it('the daemon refuses to start on a damaged journal with the file and line, not a TypeError', () => {
      scratch('journald');
      const config = put(path.join(t, 'tapd.conf'), 'network lan bridge br0\npermit @nogroup on lan\n', 0o644);
      const state = path.join(t, 'state');
      mkdirSync(state, { mode: 0o700 });
      writeFileSync(path.join(state, 'leases.journal'), `${startLine()}\n{"start":null}\n`, { mode: 0o600 });
      const r = start(config, state);
      expect(r.status).toBe(1);
      expect(r.stderr).toContain(`tapd: cannot start: ${state}/leases.journal:2 is not a journal entry tapd writes: "start" must be a lease object, found null`);
      expect(r.stderr).not.toContain('TypeError');
    });

    it.each([
      ['an include', (fifo: string) => `include ${fifo}\n`, 9],
      ['a file in an include directory', (fifo: string) => `include ${path.dirname(fifo)}\n`, 9],
      ['a qemu-bridge-helper ACL file', (fifo: string) => `qemu-bridge-conf ${fifo}\n`, 18],
    ])('%s that is a FIFO is a problem at once, not a hang', (_name, line, column) => {
      scratch('fifo');
      const fifo = path.join(t, 'inc/x.conf');
      mkdirSync(path.dirname(fifo));
      expect(spawnSync('mkfifo', ['-m', '0644', fifo]).status).toBe(0);
      const config = put(path.join(t, 'tapd.conf'), line(fifo), 0o644);
      const r = checkConfig(config);
      expect(r.status).toBe(1); // null would mean killed at the timeout: it blocked
      expect(r.stderr).toContain(`${config}:1:${column}: ${fifo} is not a regular file`);
    });

    it('a config file that is a FIFO is a problem at once too', () => {
      scratch('fifo');
      const fifo = path.join(t, 'tapd.conf');
      expect(spawnSync('mkfifo', ['-m', '0644', fifo]).status).toBe(0);
      const r = checkConfig(fifo);
      expect(r.status).toBe(1);
      expect(r.stderr).toBe(`${fifo}: ${fifo} is not a regular file\n`);
    });
  });
});
