// The Debian package from scripts/build-deb.sh: lintian, and dpkg -i / dpkg --purge in a
// throwaway root (dpkg --root with --force-script-chrootless: the maintainer scripts run on this
// host with DPKG_ROOT set, as Debian's bootstrap tools run them), and the installed files
// running the daemon. Needs root, dpkg-dev, lintian, npm (production node_modules).
//
// The root's dpkg database starts with equivs-style stubs (installed, no files) for what the
// package depends on: `nodejs` at the running node's version (that node may not come from a
// package at all), the others at this host's installed versions, whose files the scripts use.
// That keeps dpkg's dependency check on, where --force-depends would let anything through. The
// root's /usr/bin/node is a hard link to this machine's node, so the postinst's version check
// runs the real thing.
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import {
  chmodSync, copyFileSync, existsSync, linkSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync,
  realpathSync, rmSync, statSync, writeFileSync,
} from 'node:fs';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NOBODY, Netns, ROOT, tempDir, until } from '../helpers/netns.js';

const isRoot = process.getuid?.() === 0;
const temps: string[] = [];
function temp(tag: string): string {
  const d = tempDir(tag);
  temps.push(d);
  return d;
}

function run(cmd: string, args: string[], env: Record<string, string> = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', timeout: 300_000, env: { ...process.env, ...env }, cwd: '/' });
}
function ok(r: SpawnSyncReturns<string>): string {
  if (r.status !== 0) throw new Error(`exit ${r.status}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** type, mode, owner, link target and (for files) size of everything under root, except dpkg's own database. */
function listing(root: string): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    const rel = '/' + relative(root, p);
    if (rel === '/var/lib/dpkg' || rel.startsWith('/var/lib/dpkg/')) return;
    const st = lstatSync(p);
    const extra = st.isSymbolicLink() ? `-> ${readlinkSync(p)}` : st.isFile() ? String(st.size) : '';
    out.push(`${rel} ${(st.mode & 0o177777).toString(8)} ${st.uid}:${st.gid} ${extra}`);
    if (st.isDirectory()) for (const n of readdirSync(p).sort()) walk(join(p, n));
  };
  walk(root);
  return out;
}

/** A directory dpkg --root can install into: an empty database, this host's accounts, a node. */
function makeRoot(node: 'real' | string, stubs: string): string {
  const r = temp('debroot');
  for (const d of ['var/lib/dpkg/info', 'var/lib/dpkg/updates', 'var/lib/dpkg/triggers', 'etc', 'usr/bin']) {
    mkdirSync(join(r, d), { recursive: true, mode: 0o755 });
  }
  writeFileSync(join(r, 'var/lib/dpkg/status'), stubs);
  writeFileSync(join(r, 'var/lib/dpkg/available'), '');
  for (const f of ['passwd', 'group', 'shadow', 'gshadow', 'login.defs']) {
    if (existsSync(`/etc/${f}`)) copyFileSync(`/etc/${f}`, join(r, 'etc', f));
  }
  const target = join(r, 'usr/bin/node');
  if (node === 'real') {
    try {
      linkSync(realpathSync(process.execPath), target);
    } catch {
      copyFileSync(realpathSync(process.execPath), target);
    }
  } else {
    writeFileSync(target, node);
  }
  chmodSync(target, 0o755);
  return r;
}

function dpkg(root: string, args: string[]): SpawnSyncReturns<string> {
  return run('dpkg', [`--root=${root}`, '--force-script-chrootless', '--log=/dev/null', ...args]);
}

describe.skipIf(!isRoot)('the Debian package', () => {
  let deb: string;
  let stubs: string;

  beforeAll(() => {
    const out = temp('deb');
    ok(run('sh', [join(ROOT, 'scripts/build-deb.sh'), '--out', out]));
    deb = join(out, readdirSync(out).find((n) => /^tapd_.*\.deb$/.test(n))!);
    // One stub per dependency: nodejs at this node's version, the rest at the host's.
    const depends = ok(run('dpkg-deb', ['-f', deb, 'Depends'])).trim().split(/,\s*/).map((d) => d.split(' ')[0]!);
    stubs = depends.map((name) => {
      const version = name === 'nodejs' ? `${process.versions.node}-stub` : ok(run('dpkg-query', ['-W', '-f=${Version}', name])).trim();
      return [`Package: ${name}`, 'Status: install ok installed', 'Priority: optional', `Version: ${version}`, 'Architecture: all',
        'Maintainer: tapd tests <tapd@users.noreply.github.com>', `Description: stand-in for this host's ${name}`, '', ''].join('\n');
    }).join('');
  }, 600_000);

  afterAll(() => {
    for (const d of temps) rmSync(d, { recursive: true, force: true });
  });

  it('is named after the version and architecture, and declares what it needs', () => {
    const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string;
    const arch = ok(run('dpkg', ['--print-architecture'])).trim();
    expect(deb.endsWith(`/tapd_${version}_${arch}.deb`)).toBe(true);
    const field = (f: string) => ok(run('dpkg-deb', ['-f', deb, f])).trim();
    expect(field('Depends')).toMatch(/^nodejs \(>= 20\), passwd, libc6 \(>= [\d.]+\)/);
    expect(ok(run('dpkg-deb', ['-I', deb, 'conffiles'])).trim()).toBe('/etc/tapd/tapd.conf');
    const files = ok(run('dpkg-deb', ['-c', deb]));
    for (const p of ['./usr/bin/tapd', './usr/bin/tapctl', './usr/bin/tapd-bridge-helper', './lib/systemd/system/tapd.socket',
      './lib/systemd/system/tapd.service', './usr/share/polkit-1/actions/org.tapd.policy', './usr/share/doc/tapd/sudoers.sample',
      './usr/share/doc/tapd/copyright', './usr/lib/tapd/tapd-run', './usr/share/man/man8/tapd.8.gz', './usr/share/man/man5/tapd.conf.5.gz',
      './usr/share/man/man1/tapctl.1.gz', './usr/share/man/man8/tapd-bridge-helper.8.gz', './usr/share/bash-completion/completions/tapctl']) {
      expect(files, p).toMatch(new RegExp(`^\\S+ root/root .* ${p.replaceAll('.', '\\.')}$`, 'm'));
    }
    expect(files).not.toMatch(/install-manifest|node_modules\/\S*\/\.github|\.eslintrc/);
  });

  it('has no lintian errors', () => {
    // lintian leaves a temp file behind (an mldbm-elf-* cache it does not remove): its own TMPDIR,
    // removed here, keeps /tmp as it was.
    const tmp = tempDir('lintian');
    let r: SpawnSyncReturns<string>;
    try {
      r = run('lintian', ['--pedantic', deb], { TMPDIR: tmp });
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    const tags = r.stdout.split('\n').filter((l) => /^[EWIPX]: /.test(l));
    expect(tags.filter((l) => l.startsWith('E: ')), r.stdout + r.stderr).toEqual([]);
    // lintian exits 0 only without errors (it exits 2 on tags at error level).
    expect(r.status, r.stdout + r.stderr).toBe(0);
  }, 300_000);

  it('dpkg -i runs the daemon from its files; dpkg --purge leaves the root as it was', async () => {
    const r = makeRoot('real', stubs);
    const before = listing(r);
    const passwdBefore = readFileSync(join(r, 'etc/passwd'), 'utf8');
    const install = ok(dpkg(r, ['-i', deb]));
    expect(install).toMatch(/Setting up tapd/);

    // What the maintainer scripts made: the system user and group, the enabled socket.
    const pw = readFileSync(join(r, 'etc/passwd'), 'utf8').split('\n').find((l) => l.startsWith('tapd:'));
    expect(pw).toMatch(/^tapd:x:(\d+):(\d+):tapd daemon:\/nonexistent:\/usr\/sbin\/nologin$/);
    const [uid, gid] = pw!.split(':').slice(2, 4).map(Number) as [number, number];
    expect(uid).toBeLessThan(1000);
    expect(readFileSync(join(r, 'etc/group'), 'utf8')).toMatch(new RegExp(`^tapd:x:${gid}:$`, 'm'));
    expect(readlinkSync(join(r, 'etc/systemd/system/sockets.target.wants/tapd.socket'))).toBe('/lib/systemd/system/tapd.socket');
    expect(ok(run('dpkg-query', [`--root=${r}`, '-W', '-f=${Status} ${Conffiles}', 'tapd']))).toMatch(/^install ok installed\s+\/etc\/tapd\/tapd\.conf [0-9a-f]{32}\s*$/);
    for (const e of listing(r).filter((l) => !before.includes(l))) {
      if (/^\/etc\/(passwd|group|shadow|gshadow)-? /.test(e)) continue;
      expect(e, e).toMatch(/ 0:0 /);
    }

    // The installed tree runs: in a namespace of its own, /usr shows the package's files over the
    // host's (overlayfs), /etc/passwd and /etc/group are the root's (with the tapd user), and
    // /run and /dev/net are private. tapd-run starts tapd as the unit would.
    const ns = Netns.create('deb');
    const dir = temp('debconf');
    let out = '';
    let daemon: ReturnType<typeof spawn> | undefined;
    try {
      ns.addBridge('br0');
      writeFileSync(join(dir, 'tapd.conf'), 'network lan bridge br0\npermit @tapd on lan\n', { mode: 0o644 });
      const script = `
        set -e
        mount -t overlay overlay -o lowerdir=${r}/usr:/usr /usr
        mount --bind ${r}/etc/passwd /etc/passwd
        mount --bind ${r}/etc/group /etc/group
        mount -t tmpfs -o mode=0755 tmpfs /run
        mount -t tmpfs -o mode=0755 tmpfs /dev/net && mknod -m 0666 /dev/net/tun c 10 200
        echo "mntns $$"
        exec /usr/lib/tapd/tapd-run --config ${dir}/tapd.conf`;
      daemon = spawn('ip', ['netns', 'exec', ns.name, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
      daemon.stdout!.on('data', (x: Buffer) => (out += x.toString()));
      daemon.stderr!.on('data', (x: Buffer) => (out += x.toString()));
      await until(() => out.includes('"event":"started"') || daemon!.exitCode !== null, 20_000);
      expect(out).toContain('"event":"started"');
      const pid = /mntns (\d+)/.exec(out)![1]!;
      const inside = (args: string[], user?: { groups: number[] }) => run('nsenter', ['--mount', '--net', '-t', pid, '--',
        ...(user ? ['setpriv', '--reuid', String(NOBODY), '--regid', String(NOBODY), ...(user.groups.length ? ['--groups', user.groups.join(',')] : ['--clear-groups']), '--'] : []),
        ...args]);

      // The daemon: user tapd, CAP_NET_ADMIN in every set and nothing else, no new privileges.
      const status = readFileSync(`/proc/${daemon.pid}/status`, 'utf8');
      expect(status).toMatch(new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, 'm'));
      expect(status).toMatch(new RegExp(`^Gid:\\s+${gid}\\s+${gid}\\s+${gid}\\s+${gid}$`, 'm'));
      for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) expect(status).toMatch(new RegExp(`^${set}:\\s+0000000000001000$`, 'm'));
      expect(status).toMatch(/^NoNewPrivs:\s+1$/m);
      // The socket tapd bound itself: user and group tapd, 0660, in a directory only tapd writes.
      expect(ok(inside(['stat', '-c', '%u:%g %a %F', '/run/tapd', '/run/tapd/tapd.sock', '/run/tapd/state'])).trim().split('\n')).toEqual([
        `${uid}:${gid} 755 directory`, `${uid}:${gid} 660 socket`, `${uid}:${gid} 700 directory`]);

      // An unprivileged user in group tapd, through the installed wrapper and the default socket.
      const st = inside(['/usr/bin/tapctl', 'status'], { groups: [gid] });
      expect(st.status, st.stdout + st.stderr).toBe(0);
      expect(st.stdout).toContain(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version);
      const check = inside(['/usr/bin/tapctl', 'check', '-b', 'lan'], { groups: [gid] });
      expect(check.stdout + check.stderr).toMatch(/^allowed: permitted by .*tapd\.conf:2 \(permit @tapd on lan\)/);
      // The same user outside group tapd is stopped by the socket's mode.
      const outsider = inside(['/usr/bin/tapctl', 'status'], { groups: [] });
      expect(outsider.status).not.toBe(0);
      expect(outsider.stderr).toMatch(/permission denied|EACCES/i);
    } finally {
      if (daemon && daemon.exitCode === null) {
        daemon.kill('SIGTERM');
        await new Promise((res) => daemon!.once('exit', res));
      }
      ns.destroy();
    }

    const purge = ok(dpkg(r, ['--purge', 'tapd']));
    expect(purge).toMatch(/Purging configuration files for tapd/);
    expect(readFileSync(join(r, 'etc/passwd'), 'utf8')).toBe(passwdBefore);
    const after = listing(r).filter((l) => !/^\/etc\/(passwd|group|shadow|gshadow)- /.test(l));
    // The account files are rewritten in place by useradd/userdel: same names, same content.
    const norm = (xs: string[]) => xs.map((l) => (/^\/etc\/(passwd|group|shadow|gshadow) /.test(l) ? l.replace(/ \d+$/, '') : l));
    expect(norm(after)).toEqual(norm(before));
    for (const f of ['group', 'shadow', 'gshadow']) {
      if (existsSync(`/etc/${f}`)) expect(readFileSync(join(r, 'etc', f), 'utf8'), f).toBe(readFileSync(`/etc/${f}`, 'utf8'));
    }
    expect(statSync(join(r, 'var/lib/dpkg/status')).size).toBeGreaterThan(0);
  }, 180_000);

  it('refuses to configure with a node older than 20, saying what to do', () => {
    const r = makeRoot('#!/bin/sh\necho 18.20.4\n', stubs);
    const before = listing(r);
    const res = dpkg(r, ['-i', deb]);
    expect(res.status).not.toBe(0);
    expect(res.stderr).toMatch(/tapd: \/usr\/bin\/node is Node\.js 18\.20\.4; tapd needs 20 or later/);
    expect(res.stderr).toMatch(/install nodejs >= 20 from Debian trixie or NodeSource, then: dpkg --configure tapd/);
    expect(readFileSync(join(r, 'etc/passwd'), 'utf8')).not.toMatch(/^tapd:/m);
    ok(dpkg(r, ['--purge', 'tapd']));
    expect(listing(r)).toEqual(before);
  }, 120_000);
});
