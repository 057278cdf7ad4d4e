// The policy files' ownership and mode checks: they need root to chown fixtures to another uid
// and to be the "root" that owns the rest, so they live here, not in test/unit/policy.test.ts.
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkConfig, loadPolicy, PolicyError, type LoadOptions } from '../../src/daemon/policy/index.js';

const FIXTURES = resolve(dirname(fileURLToPath(import.meta.url)), '../fixtures/policy');
const ACCOUNTS = { passwdFile: join(FIXTURES, 'passwd'), groupFile: join(FIXTURES, 'group') };
const NETS = 'network lan bridge br0\nnetwork wan uplink eth1 bridge br-eth1\nnetwork host hostonly\n';

let dir: string;
let seq = 0;

beforeAll(() => {
  // Not silently green when run unprivileged: these checks mean nothing unless we are root.
  if (process.getuid?.() !== 0) throw new Error('the ownership tests need root (they chown files to uid 65534)');
  dir = mkdtempSync(join(tmpdir(), 'tapd-policy-own-'));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function write(content: string, name?: string): string {
  const path = join(dir, name ?? `t${++seq}.conf`);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content, { mode: 0o644 });
  chmodSync(path, 0o644);
  return path;
}

describe('ownership (as root)', () => {
  const O: LoadOptions = { ...ACCOUNTS }; // checkOwnership defaults to true

  it('a root-owned 0644 file in a root-owned 0700 dir under sticky /tmp is fine', () => {
    expect(checkConfig(write(NETS), O)).toEqual({ ok: true, problems: [] });
  });

  it('a file owned by someone else is an error naming it', () => {
    const path = write(NETS);
    chownSync(path, 65534, 65534);
    expect(checkConfig(path, O).problems).toEqual([
      `${path}: file ${path} is owned by uid 65534, not root (fix: chown root ${path}); tapd reads only configuration that only root can change`,
    ]);
    expect(() => loadPolicy(path, O)).toThrow(PolicyError);
    expect(loadPolicy(path, { ...O, checkOwnership: false }).networks.size).toBe(3);
  });

  it('a group/world-writable file is an error naming it', () => {
    const path = write(NETS);
    chmodSync(path, 0o666);
    expect(checkConfig(path, O).problems).toEqual([
      `${path}: file ${path} is writable by group or others (mode 0666; fix: chmod go-w ${path}); tapd reads only configuration that only root can change`,
    ]);
  });

  it('a writable directory on the way is an error naming the directory; a sticky root one is not', () => {
    const d = join(dir, `open${++seq}`);
    const path = write(NETS, `open${seq}/tapd.conf`);
    chmodSync(d, 0o777);
    expect(checkConfig(path, O).problems).toEqual([
      `${path}: directory ${d} is writable by group or others (mode 0777; fix: chmod go-w ${d}); tapd reads only configuration that only root can change`,
    ]);
    chmodSync(d, 0o1777);
    expect(checkConfig(path, O)).toEqual({ ok: true, problems: [] });
    // The sticky exception is for root's directories only.
    chownSync(d, 65534, 65534);
    expect(checkConfig(path, O).problems).toEqual([
      expect.stringContaining(`directory ${d} is owned by uid 65534, not root`),
      expect.stringContaining(`directory ${d} is writable by group or others (mode 1777`),
    ]);
  });

  it('an unsafe included file is an error at the include line', () => {
    const inc = write('permit alice on lan\n');
    chownSync(inc, 65534, 65534);
    const main = write(`${NETS}include ${inc}\n`);
    expect(checkConfig(main, O).problems).toEqual([expect.stringContaining(`${main}:4:9: file ${inc} is owned by uid 65534, not root`)]);
  });

  it('an unsafe file in an include directory, and an unsafe include directory', () => {
    const d = join(dir, `incdir${++seq}`);
    const f = write('permit alice on lan\n', `incdir${seq}/a.conf`);
    chmodSync(f, 0o664);
    const main = write(`${NETS}include ${d}\n`);
    expect(checkConfig(main, O).problems).toEqual([expect.stringContaining(`${main}:4:9: file ${f} is writable by group or others (mode 0664`)]);
    chmodSync(f, 0o644);
    chmodSync(d, 0o775);
    expect(checkConfig(main, O).problems).toEqual([expect.stringContaining(`${main}:4:9: directory ${d} is writable by group or others (mode 0775`)]);
  });

  it('a qemu-bridge-conf ACL file is checked too', () => {
    const acl = write('allow br0\n');
    chmodSync(acl, 0o646);
    expect(checkConfig(write(`qemu-bridge-conf ${acl}\n`), O).problems).toEqual([expect.stringContaining(`1:18: file ${acl} is writable by group or others (mode 0646`)]);
  });

  it('hook scripts are not checked here', () => {
    expect(checkConfig(write(`network lan bridge br0 up ${join(dir, 'nonexistent-hook')}\n`), O)).toEqual({ ok: true, problems: [] });
  });
});
