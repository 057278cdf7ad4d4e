// scripts/install.sh and scripts/uninstall.sh into throwaway DESTDIRs, and the systemd units they
// install: systemd-analyze verify and the offline security score. Needs root (install.sh makes
// root-owned files), npm (production node_modules, from the lockfile) and systemd-analyze.
// Uses the real build: runs `npm run build` only when dist/ does not exist yet.
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  appendFileSync, chmodSync, copyFileSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync,
  readFileSync, realpathSync, rmSync, symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const INSTALL = join(REPO, 'scripts/install.sh');
const UNINSTALL = join(REPO, 'scripts/uninstall.sh');
const UNITS = '/usr/lib/systemd/system';
const isRoot = process.getuid?.() === 0;

const temps: string[] = [];
function tempDir(tag: string): string {
  const d = mkdtempSync(join(tmpdir(), `tapd-${tag}-`));
  temps.push(d);
  return d;
}

interface Ran { status: number | null; stdout: string; stderr: string }

/**
 * Asynchronous: install.sh runs npm ci, which can take over a minute on a busy machine, and a
 * test worker blocked that long misses vitest's own RPC deadline ("Timeout calling onTaskUpdate").
 */
function run(script: string, args: string[]): Promise<Ran> {
  // No DESTDIR from the caller's environment: every run names its own.
  const env = { ...process.env };
  delete env.DESTDIR;
  return new Promise((resolve, reject) => {
    execFile('sh', [script, ...args], { encoding: 'utf8', env, timeout: 300_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : (err as { code?: unknown }).code;
      if (err !== null && typeof code !== 'number') return reject(err);
      resolve({ status: code as number, stdout, stderr });
    });
  });
}

function ok(r: Ran): string {
  if (r.status !== 0) throw new Error(`exit ${r.status}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

interface Entry { path: string; type: 'f' | 'd' | 'l' | '?'; mode: number; uid: number; gid: number; size: number; sha256?: string }

/** Every entry under root (root itself included): type, mode, owner, size and, for files, sha256. */
function listing(root: string): Entry[] {
  const out: Entry[] = [];
  const walk = (p: string) => {
    const st = lstatSync(p);
    const type = st.isFile() ? 'f' : st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : '?';
    const e: Entry = { path: '/' + relative(root, p), type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: type === 'f' ? st.size : 0 };
    if (type === 'f') e.sha256 = createHash('sha256').update(readFileSync(p)).digest('hex');
    out.push(e);
    if (type === 'd') for (const name of readdirSync(p).sort()) walk(join(p, name));
  };
  walk(root);
  return out;
}

const files = (root: string) => listing(root).filter((e) => e.type !== 'd').map((e) => e.path);

// What the other parts of the repo contribute, when they exist.
const shipsConf = existsSync(join(REPO, 'systemd/tapd.conf'));
const shipsPolkit = existsSync(join(REPO, 'systemd/org.tapd.policy'));
const shippedScripts = [['qemu-ifup', 'hooks/qemu-ifup'], ['qemu-ifdown', 'hooks/qemu-ifdown'], ['tapd-bridge-up', 'tapd-bridge-up']]
  .filter(([name]) => existsSync(join(REPO, 'scripts', name!)));
const shippedDocs = existsSync(join(REPO, 'docs')) ? readdirSync(join(REPO, 'docs')).filter((n) => n.endsWith('.md')) : [];

describe.skipIf(!isRoot)('install.sh / uninstall.sh (as root)', () => {
  let dest: string;
  let firstOutput: string;

  beforeAll(async () => {
    if (!existsSync(join(REPO, 'dist'))) execFileSync('npm', ['run', 'build'], { cwd: REPO, stdio: 'inherit' });
    dest = tempDir('destdir');
    firstOutput = ok(await run(INSTALL, ['--destdir', dest]));
  }, 600_000);

  afterAll(() => {
    for (const d of temps) rmSync(d, { recursive: true, force: true });
  });

  it('installs the expected files, all root:root, files 0644/0755, directories 0755', () => {
    const all = listing(dest);
    const byPath = new Map(all.map((e) => [e.path, e]));
    const expectFile = (p: string, mode: number) => {
      const e = byPath.get(p);
      expect(e, p).toBeDefined();
      expect(e!.type, p).toBe('f');
      expect(e!.mode.toString(8), p).toBe(mode.toString(8));
    };
    // The daemon's node flags come from its script's first line (the unit's MemoryDenyWriteExecute needs --jitless).
    const flags = { tapd: '--jitless --no-expose-wasm --v8-pool-size=1 --max-semi-space-size=1 ', tapctl: '' };
    for (const cmd of ['tapd', 'tapctl'] as const) {
      expectFile(`/usr/bin/${cmd}`, 0o755);
      expectFile(`/usr/lib/tapd/dist/cli/${cmd}.js`, 0o644);
      expect(readFileSync(join(dest, 'usr/bin', cmd), 'utf8')).toBe(
        `#!/bin/sh\n# Generated by tapd's install.sh.\nexec /usr/bin/node ${flags[cmd]}/usr/lib/tapd/dist/cli/${cmd}.js "$@"\n`);
    }
    // The bridge helper is the C program, compiled by install.sh: an ELF that runs, and no Node one.
    expectFile('/usr/bin/tapd-bridge-helper', 0o755);
    expect(readFileSync(join(dest, 'usr/bin/tapd-bridge-helper')).subarray(0, 4)).toEqual(Buffer.from('\x7fELF', 'latin1'));
    const help = spawnSync(join(dest, 'usr/bin/tapd-bridge-helper'), ['--help'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^Usage: tapd-bridge-helper /);
    expect(byPath.has('/usr/lib/tapd/dist/cli/tapd-bridge-helper.js')).toBe(false);
    expectFile('/usr/lib/tapd/package.json', 0o644);
    expectFile('/usr/lib/tapd/install-manifest', 0o644);
    expectFile(`${UNITS}/tapd.socket`, 0o644);
    expectFile(`${UNITS}/tapd.service`, 0o644);
    expectFile('/usr/share/doc/tapd/sudoers.sample', 0o644);
    if (shipsConf) expectFile('/etc/tapd/tapd.conf', 0o644);
    if (shipsPolkit) expectFile('/usr/share/polkit-1/actions/org.tapd.policy', 0o644);
    for (const [, at] of shippedScripts) expectFile(`/usr/lib/tapd/${at}`, 0o755);
    for (const doc of shippedDocs) expectFile(`/usr/share/doc/tapd/${doc}`, 0o644);

    // Production dependencies only, with ffi-rs's native binary (an optional dependency).
    const deps = Object.keys(JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).dependencies as object);
    for (const d of deps) expect(byPath.get(`/usr/lib/tapd/node_modules/${d}/package.json`), d).toBeDefined();
    expect(all.some((e) => e.path.startsWith('/usr/lib/tapd/node_modules/@yuuang/ffi-rs-linux-x64-gnu/') && e.path.endsWith('.node'))).toBe(true);
    for (const dev of ['typescript', 'vitest', 'eslint', '.bin']) expect(byPath.has(`/usr/lib/tapd/node_modules/${dev}`), dev).toBe(false);

    // Nothing writable by anyone but root, no symlinks or special files anywhere.
    for (const e of all) {
      if (e.path === '/') continue; // the mkdtemp DESTDIR itself
      expect([e.path, e.uid, e.gid]).toEqual([e.path, 0, 0]);
      expect([e.path, e.type]).not.toEqual([e.path, 'l']);
      expect([e.path, e.type]).not.toEqual([e.path, '?']);
      const want = e.type === 'd' ? ['755'] : ['644', '755'];
      expect(want, `${e.path} mode ${e.mode.toString(8)}`).toContain(e.mode.toString(8));
    }
    expect(firstOutput).toMatch(/installed {2}\/usr\/lib\/tapd\//);
  });

  it('installs a self-contained tree: the daemon starts from it and accepts the shipped config', () => {
    const tapd = join(dest, 'usr/lib/tapd/dist/cli/tapd.js');
    const version = spawnSync(process.execPath, [tapd, '--version'], { encoding: 'utf8', cwd: '/' });
    expect(version.status, version.stderr).toBe(0);
    if (shipsConf) {
      const check = spawnSync(process.execPath, [tapd, '--check-config', '--config', join(dest, 'etc/tapd/tapd.conf')], { encoding: 'utf8', cwd: '/' });
      expect(check.status, check.stdout + check.stderr).toBe(0);
    }
  });

  it('changes nothing when run again', async () => {
    const before = listing(dest);
    const out = ok(await run(INSTALL, ['--destdir', dest]));
    expect(out).toMatch(/nothing changed/);
    expect(listing(dest)).toEqual(before);
  });

  it.runIf(shipsConf)('keeps an edited config and puts the new default next to it', async () => {
    const conf = join(dest, 'etc/tapd/tapd.conf');
    const shipped = readFileSync(join(REPO, 'systemd/tapd.conf'), 'utf8');
    appendFileSync(conf, '\n# edited by the admin\n');
    const edited = readFileSync(conf, 'utf8');
    const out = ok(await run(INSTALL, ['--destdir', dest]));
    expect(readFileSync(conf, 'utf8')).toBe(edited);
    expect(readFileSync(`${conf}.dist-new`, 'utf8')).toBe(shipped);
    expect(out).toContain('/etc/tapd/tapd.conf.dist-new');
    const before = listing(dest);
    ok(await run(INSTALL, ['--destdir', dest]));
    expect(listing(dest)).toEqual(before);
  });

  it('installs units that systemd-analyze verify accepts', () => {
    // verify resolves units and executables inside --root: the installed tree, plus the
    // system's own targets and any host executable the units name (e.g. /bin/kill).
    const root = tempDir('verify');
    cpSync(dest, root, { recursive: true });
    for (const f of readdirSync(UNITS).filter((n) => n.endsWith('.target'))) copyFileSync(join(UNITS, f), join(root, UNITS, f));
    for (const unit of ['tapd.service', 'tapd.socket']) {
      for (const m of readFileSync(join(root, UNITS, unit), 'utf8').matchAll(/^Exec\w+=[-@:+!]*(\/\S+)/gm)) {
        const exe = m[1]!;
        if (existsSync(join(root, exe))) continue;
        mkdirSync(dirname(join(root, exe)), { recursive: true });
        copyFileSync(realpathSync(exe), join(root, exe));
        chmodSync(join(root, exe), 0o755);
      }
    }
    const r = spawnSync('systemd-analyze', ['verify', `--root=${root}`, 'tapd.socket', 'tapd.service'], { encoding: 'utf8', cwd: '/' });
    expect(r.error).toBeUndefined();
    // Warnings (unknown keys, bad values) go to stderr with exit 0: none allowed either.
    expect({ status: r.status, out: r.stdout + r.stderr }).toEqual({ status: 0, out: '' });

    // And it does catch a broken unit: a missing ExecStart binary.
    rmSync(join(root, 'usr/bin/tapd'));
    const broken = spawnSync('systemd-analyze', ['verify', `--root=${root}`, 'tapd.service'], { encoding: 'utf8', cwd: '/' });
    expect(broken.status).not.toBe(0);
  });

  it('installs a service whose offline security exposure is at most 2.0', () => {
    const service = join(dest, UNITS, 'tapd.service');
    const r = spawnSync('systemd-analyze', ['security', '--offline=true', '--no-pager', service], { encoding: 'utf8', cwd: '/' });
    expect(r.error).toBeUndefined();
    const m = /Overall exposure level for tapd\.service: (\d+\.\d+)/.exec(r.stdout);
    expect(m, r.stdout + r.stderr).not.toBeNull();
    expect(Number(m![1])).toBeLessThanOrEqual(2.0);

    // The points the score does not weigh the way this daemon needs.
    const text = readFileSync(service, 'utf8');
    const values = (key: string) => [...text.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((x) => x[1]);
    expect(values('CapabilityBoundingSet')).toEqual(['CAP_NET_ADMIN']);
    expect(values('AmbientCapabilities')).toEqual(['CAP_NET_ADMIN']);
    expect(values('User')).toEqual(['tapd']);
    expect(values('MemoryDenyWriteExecute')).toEqual(['yes']);
    // The service must not own /run/tapd: systemd would chown the socket in it to tapd.
    expect(values('RuntimeDirectory')).toEqual(['tapd/state']);
    expect(values('RuntimeDirectoryPreserve')).toEqual(['yes']);
    const socket = readFileSync(join(dest, UNITS, 'tapd.socket'), 'utf8');
    for (const line of ['ListenStream=/run/tapd/tapd.sock', 'SocketGroup=tapd', 'SocketMode=0660', 'DirectoryMode=0755']) {
      expect(socket.split('\n')).toContain(line);
    }
  });

  it('honours --prefix in the wrappers, the unit paths and ExecStart', async () => {
    const d = tempDir('prefix');
    ok(await run(INSTALL, ['--destdir', d, '--prefix', '/usr/local']));
    expect(readFileSync(join(d, 'usr/local/bin/tapctl'), 'utf8')).toContain('exec /usr/bin/node /usr/local/lib/tapd/dist/cli/tapctl.js "$@"');
    const service = readFileSync(join(d, 'usr/local/lib/systemd/system/tapd.service'), 'utf8');
    expect(service).toMatch(/^ExecStart=\/usr\/local\/bin\/tapd --config \/etc\/tapd\/tapd.conf /m);
    expect(existsSync(join(d, 'usr/lib/tapd'))).toBe(false);
    ok(await run(UNINSTALL, ['--destdir', d, '--prefix', '/usr/local']));
    expect(files(d)).toEqual([]);
  });

  it('refuses a path that someone other than root could write to', async () => {
    const d = tempDir('unsafe');
    mkdirSync(join(d, 'usr/lib'), { recursive: true, mode: 0o755 });
    chmodSync(join(d, 'usr'), 0o775);
    const r = await run(INSTALL, ['--destdir', d]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/refusing to install: .*\/usr is writable by group or others/);
    expect(files(d)).toEqual([]);

    const s = tempDir('symlink');
    mkdirSync(join(s, 'usr/lib'), { recursive: true });
    symlinkSync(tempDir('elsewhere'), join(s, 'usr/lib/tapd'));
    const r2 = await run(INSTALL, ['--destdir', s]);
    expect(r2.status).not.toBe(0);
    expect(r2.stderr).toMatch(/symlink/);
  });

  it('uninstall removes everything it installed; an edited config stays unless --purge', async () => {
    const d = tempDir('uninstall');
    ok(await run(INSTALL, ['--destdir', d]));
    ok(await run(UNINSTALL, ['--destdir', d]));
    expect(files(d)).toEqual([]);
    expect(existsSync(join(d, 'usr/lib/tapd'))).toBe(false);
    expect(existsSync(join(d, 'etc/tapd'))).toBe(false);

    if (!shipsConf) return;
    ok(await run(INSTALL, ['--destdir', d]));
    appendFileSync(join(d, 'etc/tapd/tapd.conf'), '\n# mine\n');
    ok(await run(INSTALL, ['--destdir', d])); // writes tapd.conf.dist-new
    const out = ok(await run(UNINSTALL, ['--destdir', d]));
    expect(out).toMatch(/kept {7}\/etc\/tapd\/tapd.conf/);
    expect(files(d)).toEqual(['/etc/tapd/tapd.conf']);

    rmSync(join(d, 'etc'), { recursive: true });
    ok(await run(INSTALL, ['--destdir', d]));
    appendFileSync(join(d, 'etc/tapd/tapd.conf'), '\n# mine\n');
    ok(await run(UNINSTALL, ['--destdir', d, '--purge']));
    expect(files(d)).toEqual([]);
  });
});
