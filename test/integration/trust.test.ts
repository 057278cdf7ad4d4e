// The trust rule (src/common/trust.ts), component by component, as root judging what others own.
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, closeSync, constants as fsc, linkSync, lchownSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe as group, expect, it } from 'vitest';
import { describe, ensureOwnDirectory, judge, MAX_SYMLINKS, openOwnFile, openTrusted, walk } from '../../src/common/trust.js';

const NOBODY = 65534;
let base: string;
let seq = 0;

beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), 'tapd-trust-'));
  chmodSync(base, 0o755); // root's, 0755, in sticky root-owned /tmp: trusted
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

/** A new root-owned 0755 directory under the base. */
function dir(mode = 0o755, uid = 0): string {
  const d = join(base, `d${++seq}`);
  mkdirSync(d);
  chmodSync(d, mode);
  chownSync(d, uid, uid);
  return d;
}

function file(d: string, name = 'f', mode = 0o644, uid = 0): string {
  const p = join(d, name);
  writeFileSync(p, 'x\n');
  chmodSync(p, mode);
  chownSync(p, uid, uid);
  return p;
}

const texts = (p: string, opts = {}) => walk(p, opts).findings.map((f) => describe(f));

group.skipIf(process.getuid?.() !== 0)('the trust rule', () => {
  it('root-owned, not group/other-writable, all the way from /: trusted, and the path is canonical', () => {
    const d = dir();
    const f = file(d);
    expect(walk(f)).toMatchObject({ path: f, findings: [], links: [] });
    expect(walk(`${d}/./../${d.split('/').pop()}//f`).path).toBe(f);
  });

  it('a directory another user owns is refused, and nothing below it is looked at', () => {
    const u = dir(0o755, NOBODY);
    const f = file(u, 'f', 0o666); // would be a finding too, if the walk went on
    expect(texts(f)).toEqual([`directory ${u} is owned by uid 65534, not root (fix: chown root ${u})`]);
  });

  it('group- or world-writable directories and files are refused', () => {
    const g = dir(0o775);
    expect(texts(file(g))).toEqual([`directory ${g} is writable by group or others (mode 0775; fix: chmod go-w ${g})`]);
    const f = file(dir(), 'f', 0o646);
    expect(texts(f)).toEqual([`file ${f} is writable by group or others (mode 0646; fix: chmod go-w ${f})`]);
    expect(texts(f, { checkTarget: false })).toEqual([]);
  });

  it('a root-owned sticky directory may be world-writable only for root-owned entries', () => {
    const s = dir(0o1777);
    expect(texts(file(s, 'root'))).toEqual([]);
    const theirs = file(s, 'theirs', 0o644, NOBODY);
    expect(texts(theirs)).toEqual([`file ${theirs} is owned by uid 65534, not root (fix: chown root ${theirs})`]);
    // A sticky directory someone else owns is theirs to change.
    const us = dir(0o1777, NOBODY);
    expect(texts(file(us))).toEqual([
      `directory ${us} is owned by uid 65534, not root (fix: chown root ${us})`,
      `directory ${us} is writable by group or others (mode 1777; fix: chmod go-w ${us})`,
    ]);
  });

  it('a symlink is followed only from a trusted directory, and its target is walked by the same rule', () => {
    const t = dir();
    const f = file(t);
    const l = dir();
    symlinkSync(t, join(l, 'abs'));
    symlinkSync(`../${t.split('/').pop()}/f`, join(l, 'rel'));
    expect(walk(join(l, 'abs/f'))).toMatchObject({ path: f, findings: [], links: [join(l, 'abs')] });
    expect(walk(join(l, 'rel'))).toMatchObject({ path: f, findings: [], links: [join(l, 'rel')] });
    // ".." after a link is the parent of where the link led (as the kernel resolves it).
    // (t has no "rel": a lexical ".." would find l/rel, the kernel and we find t's parent's.)
    expect(walk(`${l}/abs/../${t.split('/').pop()}/f`).path).toBe(f);
    expect(walk(`${l}/abs/../${l.split('/').pop()}/rel`).path).toBe(f);
    symlinkSync('f', join(t, 'self'));
    expect(walk(`${l}/abs/self/../${t.split('/').pop()}/f`).findings).toMatchObject([{ flaw: 'not_directory' }]);
    // The same link in a directory a user owns is refused, not followed.
    const u = dir(0o755, NOBODY);
    symlinkSync(t, join(u, 'abs'));
    expect(texts(join(u, 'abs/f'))).toEqual([`directory ${u} is owned by uid 65534, not root (fix: chown root ${u})`]);
    // A link a user owns in a sticky directory (they could replace it) is refused.
    const s = dir(0o1777);
    symlinkSync(t, join(s, 'theirs'));
    lchownSync(join(s, 'theirs'), NOBODY, NOBODY);
    expect(texts(join(s, 'theirs/f'))).toEqual([`symlink ${join(s, 'theirs')} is owned by uid 65534, not root (fix: chown root ${join(s, 'theirs')})`]);
    // A trusted link to an untrusted place: refused at the first bad directory of the target.
    const g = dir(0o777);
    file(g);
    symlinkSync(g, join(l, 'open'));
    expect(texts(join(l, 'open/f'))).toEqual([`directory ${g} is writable by group or others (mode 0777; fix: chmod go-w ${g})`]);
  });

  it('symlink loops end after MAX_SYMLINKS', () => {
    const l = dir();
    symlinkSync(join(l, 'b'), join(l, 'a'));
    symlinkSync(join(l, 'a'), join(l, 'b'));
    const w = walk(join(l, 'a'));
    expect(w.findings).toMatchObject([{ flaw: 'loop' }]);
    expect(w.links).toHaveLength(MAX_SYMLINKS + 1);
  });

  it('missing components are a finding, or (allowMissing) the end of the walk', () => {
    const d = dir();
    expect(walk(join(d, 'no/such'))).toMatchObject({ findings: [{ flaw: 'missing', path: join(d, 'no') }] });
    const w = walk(join(d, 'no/such'), { allowMissing: true });
    expect(w).toMatchObject({ findings: [], path: join(d, 'no/such') });
    expect(w.stat).toBeUndefined();
    expect(walk('relative/path').findings).toMatchObject([{ flaw: 'relative' }]);
    expect(walk(`${file(d)}/below`).findings).toMatchObject([{ flaw: 'not_directory' }]);
  });

  it('judge() alone: the owner list includes tapd\'s own uid when it is not root', () => {
    const d = dir(0o755, 4243);
    expect(judge(d, lstatSync(d), [0, 4243])).toEqual([]);
    expect(judge(d, lstatSync(d), [0])).toMatchObject([{ flaw: 'owner' }]);
  });

  it('openTrusted opens only regular files (O_NONBLOCK: a FIFO is refused, not waited on) and judges the fd', () => {
    const d = dir();
    const fifo = join(d, 'fifo');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    expect(openTrusted(fifo)).toEqual({ findings: [expect.objectContaining({ flaw: 'type', text: 'is not a regular file' })] });
    expect(openTrusted(d)).toEqual({ findings: [expect.objectContaining({ flaw: 'type' })] });
    const f = file(d);
    const o = openTrusted(f);
    expect('fd' in o && o.path).toBe(f);
    if ('fd' in o) closeSync(o.fd);
  });

  it('ensureOwnDirectory: creates 0700; refuses one made by someone else, a writable one, one under a user\'s directory', () => {
    const d = dir();
    const made = ensureOwnDirectory(join(d, 'state'));
    expect(made).toBe(join(d, 'state'));
    const theirs = dir(0o700, NOBODY);
    expect(() => ensureOwnDirectory(theirs)).toThrow(`${theirs} is owned by uid 65534, not by tapd's uid 0`);
    const open = dir(0o770);
    expect(() => ensureOwnDirectory(open)).toThrow('is writable by group or others (mode 0770');
    const u = dir(0o755, NOBODY);
    mkdirSync(join(u, 'state'), { mode: 0o700 });
    expect(() => ensureOwnDirectory(join(u, 'state'))).toThrow(`directory ${u} is owned by uid 65534`);
    expect(() => ensureOwnDirectory(join(u, 'state'))).toThrow(expect.objectContaining({ code: 'state_untrusted' }));
  });

  it('openOwnFile never follows a link and wants a file of its own with one link', () => {
    const d = dir(0o700);
    const secret = file(dir(0o700), 'secret', 0o600);
    symlinkSync(secret, join(d, 'link'));
    expect(() => openOwnFile(join(d, 'link'), fsc.O_RDONLY)).toThrow(/is a symbolic link; tapd never follows links/);
    expect(() => openOwnFile(join(d, 'link'), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL)).toThrow(/cannot be opened: EEXIST/);
    linkSync(secret, join(d, 'hard'));
    expect(() => openOwnFile(join(d, 'hard'), fsc.O_RDONLY)).toThrow(/has 2 hard links/);
    const other = file(d, 'other', 0o600, NOBODY);
    expect(() => openOwnFile(other, fsc.O_RDONLY)).toThrow(/is owned by uid 65534, not by tapd's uid 0/);
    expect(openOwnFile(join(d, 'none'), fsc.O_RDONLY)).toBeUndefined();
  });
});
