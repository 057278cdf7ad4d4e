// The one rule for everything the privileged daemon reads or executes from the filesystem
// (tapd.conf, its includes, qemu-bridge-helper ACL files, hooks, bridge scripts, the state dir):
//
//   every component of the path, from / down, and every symbolic link met on the way (and then
//   the whole of its target, by the same rule) must be owned by root or by the daemon's own uid,
//   and not writable by group or others. A directory owned by root (or us) with the sticky bit,
//   such as /tmp, may be writable by all, because the next component in it is itself required to
//   be owned by root (or us): anyone may add entries there, nobody else can rename or remove ours.
//
// A path any of whose directories or links someone else can change is refused, never followed.
//
// Why walking paths with lstat is enough (no openat needed): the walk goes from / down and stops
// at the first component that fails. When it reaches /a/b/c, every component of /a/b is a
// directory only root (or we) can change, so the kernel resolves /a/b today exactly as we did, and
// will tomorrow: what we checked is what a later open() or execve() of the canonical path gets.
// Files are then opened with O_NOFOLLOW|O_NONBLOCK and their type, owner and mode checked with
// fstat on the opened fd (as OpenDoas does), so even a FIFO never blocks us.
import { closeSync, constants as fsc, fstatSync, lstatSync, mkdirSync, openSync, readlinkSync, type Stats } from 'node:fs';
import path from 'node:path';
import { TapdError } from '../errors/tapd-error.js';
import type { ErrorCode } from '../errors/codes.js';

/** As the kernel's MAXSYMLINKS: more links than this on one path is a loop (ELOOP). */
export const MAX_SYMLINKS = 40;

/** Who may own what the daemon trusts: root and the daemon's own effective uid. */
export function trustedOwners(): readonly number[] {
  const euid = process.geteuid?.() ?? 0;
  return euid === 0 ? [0] : [0, euid];
}

export type Flaw = 'owner' | 'writable' | 'missing' | 'not_directory' | 'type' | 'loop' | 'unreadable' | 'relative';

/** One reason a path is not trusted, about one component of it. */
export interface Finding {
  /** The component judged, as reached (symlink-free up to it). */
  path: string;
  what: 'file' | 'directory' | 'symlink' | 'path';
  flaw: Flaw;
  /** What is wrong and how to fix it, after `${what} ${path} `: e.g. "is owned by uid 1000, not root (fix: chown root /x)". */
  text: string;
  /** For 'missing' and 'unreadable': the system's reason, in words ("permission denied"). */
  errno?: string;
}

/** `directory /x is writable by group or others (...)`; `of` names what the path is for: `directory /x of hook /x/up ...`. */
export function describe(f: Finding, of?: string): string {
  return `${f.what} ${f.path}${of ? ` of ${of}` : ''} ${f.text}`;
}

export interface WalkOptions {
  /** Check ownership and modes (default true). false: resolve only (links, loops), for tests of the parser. */
  trust?: boolean;
  /** A missing component ends the walk without a finding (default: it is a finding). */
  allowMissing?: boolean;
  /** Judge the object the path names too, not only the directories and links leading to it (default true). */
  checkTarget?: boolean;
}

export interface Walk {
  /** The canonical, symlink-free absolute path (lexically completed after a missing component). */
  path: string;
  /** lstat of what the canonical path names (never a symlink); undefined when it does not exist. */
  stat?: Stats;
  /** Empty when the path is trusted. The walk stops at the first component with findings. */
  findings: Finding[];
  /** Symbolic links followed, in order (as reached). */
  links: string[];
}

function mode4(st: Stats): string {
  return (st.mode & 0o7777).toString(8).padStart(4, '0');
}

/** A failed fs call's errno in words, for messages about files. */
export function errnoText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ENOENT': return 'no such file or directory';
    case 'EACCES': return 'permission denied';
    case 'ENOTDIR': return 'a path component is not a directory';
    case 'ELOOP': return 'too many symbolic links';
    case 'EISDIR': return 'is a directory';
    default: return code ?? String(e);
  }
}

function ownerName(owners: readonly number[]): string {
  return owners.length === 1 ? 'root' : `root or uid ${owners[1]} (tapd's own)`;
}

/**
 * The rule for one object on its own: who owns it and who may write it. A sticky directory owned
 * by a trusted uid may be writable by all (what is in it is judged as the next component).
 */
export function judge(p: string, st: Stats, owners: readonly number[] = trustedOwners()): Finding[] {
  const what = st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'directory' : 'file';
  const out: Finding[] = [];
  const ownedOk = owners.includes(st.uid);
  if (!ownedOk) out.push({ path: p, what, flaw: 'owner', text: `is owned by uid ${st.uid}, not ${ownerName(owners)} (fix: chown root ${p})` });
  // A symlink's own mode means nothing (always 0777, never consulted).
  const stickyOk = what === 'directory' && ownedOk && (st.mode & 0o1000) !== 0;
  if (what !== 'symlink' && (st.mode & 0o022) !== 0 && !stickyOk) {
    out.push({ path: p, what, flaw: 'writable', text: `is writable by group or others (mode ${mode4(st)}; fix: chmod go-w ${p})` });
  }
  return out;
}

/**
 * Resolves `p` once, component by component (lstat, and readlink for links, at most MAX_SYMLINKS),
 * judging each component and each link under the rule above. The result's `path` is
 * symlink-free: open or execute that, not `p`.
 */
export function walk(p: string, opts: WalkOptions = {}): Walk {
  const trust = opts.trust ?? true;
  const checkTarget = opts.checkTarget ?? true;
  const owners = trustedOwners();
  const links: string[] = [];
  if (!path.isAbsolute(p)) {
    return { path: p, findings: [{ path: p, what: 'path', flaw: 'relative', text: 'is not an absolute path' }], links };
  }
  // What is left to resolve, first component first; a link's target is put in front of it.
  let todo = p.split('/').filter((c) => c !== '' && c !== '.');
  const done: string[] = []; // canonical components reached so far
  const here = () => `/${done.join('/')}`;
  const fail = (f: Finding): Walk => ({ path: here(), findings: [f], links });
  let st: Stats;
  try {
    st = lstatSync('/');
  } catch (e) {
    return fail({ path: '/', what: 'directory', flaw: 'unreadable', text: `cannot be read: ${errnoText(e)}`, errno: errnoText(e) });
  }
  if (trust) {
    const f = judge('/', st, owners);
    if (f.length > 0) return { path: '/', findings: f, links };
  }
  while (todo.length > 0) {
    const name = todo.shift()!;
    if (!st.isDirectory()) {
      return fail({ path: here(), what: 'path', flaw: 'not_directory', text: 'is not a directory' });
    }
    if (name === '..') {
      // The kernel resolves ".." physically: the parent of where the links took us. Every
      // directory on `done` was judged already, so going up needs no new check.
      done.pop();
      st = lstatSync(here());
      continue;
    }
    done.push(name);
    const cur = here();
    try {
      st = lstatSync(cur);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && opts.allowMissing) {
        return { path: path.posix.join(cur, ...todo), findings: [], links };
      }
      return fail({ path: cur, what: 'path', flaw: code === 'ENOENT' ? 'missing' : 'unreadable', text: `cannot be read: ${errnoText(e)}`, errno: errnoText(e) });
    }
    const last = todo.length === 0;
    if (trust && (!last || st.isSymbolicLink() || checkTarget)) {
      const f = judge(cur, st, owners);
      if (f.length > 0) return { path: cur, findings: f, links };
    }
    if (st.isSymbolicLink()) {
      links.push(cur);
      if (links.length > MAX_SYMLINKS) {
        return fail({ path: p, what: 'path', flaw: 'loop', text: `has more than ${MAX_SYMLINKS} symbolic links on the way (a loop?)` });
      }
      let target: string;
      try {
        target = readlinkSync(cur);
      } catch (e) {
        return fail({ path: cur, what: 'symlink', flaw: 'unreadable', text: `cannot be read: ${errnoText(e)}`, errno: errnoText(e) });
      }
      done.pop();
      if (target.startsWith('/')) done.length = 0;
      todo = [...target.split('/').filter((c) => c !== '' && c !== '.'), ...todo];
      st = lstatSync(here()); // judged already on the way here
    }
  }
  return { path: here(), stat: st, findings: [], links };
}

/** A file opened by `openTrusted`: the fd (close it), its canonical path and fstat. */
export interface Opened {
  fd: number;
  path: string;
  stat: Stats;
}

/**
 * Opens a regular file under the rule: walks it, opens the canonical path with
 * O_RDONLY|O_NOFOLLOW|O_NONBLOCK (a FIFO or device cannot block or act on open), and checks the
 * type, owner and mode of what was opened with fstat. Returns findings instead when refused.
 */
export function openTrusted(p: string, opts: { trust?: boolean } = {}): Opened | { findings: Finding[] } {
  const w = walk(p, { trust: opts.trust });
  if (w.findings.length > 0) return { findings: w.findings };
  const notRegular: Finding[] = [{ path: p, what: 'path', flaw: 'type', text: 'is not a regular file' }];
  // Never open what is not a regular file: opening a FIFO blocks, opening a device may act.
  if (!w.stat!.isFile()) return { findings: notRegular };
  let fd: number;
  try {
    fd = openSync(w.path, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch (e) {
    return { findings: [{ path: p, what: 'path', flaw: 'unreadable', text: `cannot be read: ${errnoText(e)}`, errno: errnoText(e) }] };
  }
  const st = fstatSync(fd);
  const findings = !st.isFile() ? notRegular
    : st.dev !== w.stat!.dev || st.ino !== w.stat!.ino
      ? [{ path: w.path, what: 'file' as const, flaw: 'unreadable' as const, text: 'changed while it was being checked; try again' }]
      : (opts.trust ?? true) ? judge(w.path, st) : [];
  if (findings.length > 0) {
    closeSync(fd);
    return { findings };
  }
  return { fd, path: w.path, stat: st };
}

/**
 * The daemon's own directory (the state dir): created 0700 if missing; then it must be a
 * directory owned by the daemon's effective uid exactly, writable by nobody else, with every
 * directory and link above it trusted by the rule. Someone else's directory, made first in a
 * sticky /tmp, is refused rather than used. Returns the canonical path; throws
 * TapdError('state_untrusted') saying why and what to do.
 */
export function ensureOwnDirectory(dir: string, what = 'state directory'): string {
  const abs = path.resolve(dir);
  const refuse = (why: string): never => {
    throw new TapdError('state_untrusted', `${what} ${abs}: ${why}; tapd keeps its state only where nobody else can change it (remove it or fix it, or choose another --state-dir, and start again)`);
  };
  try {
    mkdirSync(abs, { recursive: true, mode: 0o700 });
  } catch (e) {
    refuse(`cannot be created: ${errnoText(e)}`);
  }
  const w = walk(abs, { checkTarget: false });
  if (w.findings.length > 0) refuse(w.findings.map((f) => describe(f)).join('; '));
  const st = w.stat!;
  const euid = process.geteuid?.() ?? 0;
  if (!st.isDirectory()) refuse(`${w.path} is not a directory`);
  if (st.uid !== euid) refuse(`${w.path} is owned by uid ${st.uid}, not by tapd's uid ${euid} (did someone else create it first?)`);
  if ((st.mode & 0o022) !== 0) refuse(`${w.path} is writable by group or others (mode ${mode4(st)}; fix: chmod go-w ${w.path})`);
  return w.path;
}

/**
 * A file of the daemon's own, opened as is (O_NOFOLLOW: a symlink there is refused, never
 * followed) and checked on the fd: a regular file owned by the daemon's euid, writable by nobody
 * else, with one link (a hard link to someone's file is not ours). undefined when it does not exist.
 */
export function openOwnFile(p: string, flags: number, code: ErrorCode = 'state_invalid'): number | undefined {
  let fd: number;
  try {
    fd = openSync(p, flags | fsc.O_NOFOLLOW | fsc.O_NONBLOCK, 0o600);
  } catch (e) {
    const c = (e as NodeJS.ErrnoException).code;
    if (c === 'ENOENT') return undefined;
    if (c === 'ELOOP') throw new TapdError(code, `${p} is a symbolic link; tapd never follows links in its state dir (remove it and start again)`);
    throw new TapdError(code, `${p} cannot be opened: ${errnoText(e)}; fix it or move it aside and start again`);
  }
  const st = fstatSync(fd);
  const euid = process.geteuid?.() ?? 0;
  const why = !st.isFile() ? 'is not a regular file'
    : st.uid !== euid ? `is owned by uid ${st.uid}, not by tapd's uid ${euid}`
      : (st.mode & 0o022) !== 0 ? `is writable by group or others (mode ${mode4(st)})`
        : st.nlink !== 1 ? `has ${st.nlink} hard links` : undefined;
  if (why !== undefined) {
    closeSync(fd);
    throw new TapdError(code, `${p} ${why}; tapd uses only files of its own there (move it aside and start again)`);
  }
  return fd;
}
