import { closeSync, fstatSync, openSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Problem, Site } from './problem.js';

/** Lines longer than this many bytes (without the newline) are an error; they are never split or truncated. */
export const MAX_LINE_BYTES = 1024;
/** A configuration file larger than this is an error. */
export const MAX_FILE_BYTES = 1024 * 1024;
/** At most this many files (includes and ACL files together) make up one policy. */
export const MAX_FILES = 256;

export interface Token {
  text: string;
  /** 1-based byte column. */
  column: number;
}

export interface Line {
  file: string;
  line: number;
  /** Bytes of the line after the checks below, as text (comments not removed); '' when `error` is set. */
  text: string;
  /** The line failed a byte-level check (too long, NUL, control character, bad UTF-8); report it in order. */
  error?: { column: number; message: string };
}

function errnoText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ENOENT': return 'no such file or directory';
    case 'EACCES': return 'permission denied';
    case 'ENOTDIR': return 'a path component is not a directory';
    case 'ELOOP': return 'too many symbolic links';
    default: return code ?? String(e);
  }
}

/** Every directory above `p`, nearest first, ending with "/". */
function ancestors(p: string): string[] {
  const out: string[] = [];
  let d = dirname(p);
  for (;;) {
    out.push(d);
    const up = dirname(d);
    if (up === d) return out;
    d = up;
  }
}

/**
 * Reads the files a policy is made of, and checks that nobody but root could have written them.
 * Problems are appended to `problems`; a path found unsafe is reported once.
 */
export class ConfigFiles {
  /** Every file read, in the order read (for Policy.files). */
  readonly read: string[] = [];
  private readonly judged = new Set<string>();

  constructor(private readonly problems: Problem[], private readonly checkOwnership: boolean) {}

  report(site: Site, message: string): void {
    this.problems.push({ ...site, message });
  }

  /**
   * Ownership rule: the file, and every directory up to "/" on both the path as written and
   * the path after symbolic links, must be owned by root and not writable by group or others.
   * A root-owned directory with the sticky bit (like /tmp) may be writable by all: nobody else can
   * rename or remove what root put there. Returns false when something is unsafe.
   */
  private safe(path: string, site: Site): boolean {
    if (!this.checkOwnership) return true;
    let real: string;
    try {
      real = realpathSync(path);
    } catch (e) {
      this.report(site, `cannot read ${path}: ${errnoText(e)}`);
      return false;
    }
    let ok = true;
    for (const p of new Set([real, ...ancestors(path), ...ancestors(real)])) {
      let st;
      try {
        st = statSync(p);
      } catch (e) {
        this.report(site, `cannot check ${p}: ${errnoText(e)}`);
        ok = false;
        continue;
      }
      const what = st.isDirectory() ? 'directory' : 'file';
      const stickyRootDir = st.isDirectory() && st.uid === 0 && (st.mode & 0o1000) !== 0;
      const bad: string[] = [];
      if (st.uid !== 0) bad.push(`${what} ${p} is owned by uid ${st.uid}, not root (fix: chown root ${p})`);
      if ((st.mode & 0o022) !== 0 && !stickyRootDir) {
        const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
        bad.push(`${what} ${p} is writable by group or others (mode ${mode}; fix: chmod go-w ${p})`);
      }
      if (bad.length > 0) {
        ok = false;
        if (!this.judged.has(p)) {
          this.judged.add(p);
          for (const message of bad) this.report(site, `${message}; tapd reads only configuration that only root can change`);
        }
      }
    }
    return ok;
  }

  /** Is `path` a directory? undefined (reported) when it cannot be examined. */
  isDirectory(path: string, site: Site): boolean | undefined {
    try {
      return statSync(path).isDirectory();
    } catch (e) {
      this.report(site, `cannot read ${path}: ${errnoText(e)}`);
      return undefined;
    }
  }

  /** The `*.conf` files of an include directory, in C-locale (byte) order; names starting with "." are skipped. */
  listDirectory(dir: string, site: Site): string[] | undefined {
    if (!this.safe(dir, site)) return undefined;
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (e) {
      this.report(site, `cannot read directory ${dir}: ${errnoText(e)}`);
      return undefined;
    }
    return names
      .filter((n) => n.endsWith('.conf') && !n.startsWith('.'))
      .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
      .map((n) => resolve(dir, n));
  }

  /** The lines of a configuration file, checked for NUL bytes, control characters, bad UTF-8 and overlong lines. */
  lines(path: string, site: Site): Line[] | undefined {
    if (this.read.length >= MAX_FILES) {
      this.report(site, `too many configuration files (more than ${MAX_FILES})`);
      return undefined;
    }
    if (!this.safe(path, site)) return undefined;
    let bytes: Buffer;
    let fd: number | undefined;
    try {
      fd = openSync(path, 'r');
      const st = fstatSync(fd);
      if (!st.isFile()) {
        this.report(site, `${path} is not a regular file`);
        return undefined;
      }
      if (st.size > MAX_FILE_BYTES) {
        this.report(site, `${path} is larger than ${MAX_FILE_BYTES} bytes`);
        return undefined;
      }
      bytes = readFileSync(fd);
    } catch (e) {
      this.report(site, `cannot read ${path}: ${errnoText(e)}`);
      return undefined;
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
    if (!this.read.includes(path)) this.read.push(path);
    return this.split(path, bytes);
  }

  private split(file: string, bytes: Buffer): Line[] {
    const out: Line[] = [];
    const decoder = new TextDecoder('utf-8', { fatal: true });
    let start = 0;
    for (let n = 1; start < bytes.length; n++) {
      let end = bytes.indexOf(0x0a, start);
      if (end < 0) end = bytes.length;
      const raw = bytes.subarray(start, end);
      start = end + 1;
      const bad = (column: number, message: string): void => {
        out.push({ file, line: n, text: '', error: { column, message } });
      };
      if (raw.length > MAX_LINE_BYTES) {
        bad(MAX_LINE_BYTES + 1, `line is ${raw.length} bytes long; the limit is ${MAX_LINE_BYTES} (long lines are never split or truncated)`);
        continue;
      }
      const nul = raw.indexOf(0);
      if (nul >= 0) {
        bad(nul + 1, 'NUL byte in line');
        continue;
      }
      const ctl = raw.findIndex((b) => (b < 0x20 && b !== 0x09) || b === 0x7f);
      if (ctl >= 0) {
        const b = raw[ctl] ?? 0;
        const hint = b === 0x0d ? ' (DOS line ending? convert the file with dos2unix)' : '';
        bad(ctl + 1, `control character 0x${b.toString(16).padStart(2, '0')} in line${hint}`);
        continue;
      }
      let text: string;
      try {
        text = decoder.decode(raw);
      } catch {
        bad(1, 'line is not valid UTF-8');
        continue;
      }
      out.push({ file, line: n, text });
    }
    return out;
  }
}

/** Splits on blanks (space, tab); columns count bytes from 1. */
export function tokenize(text: string): Token[] {
  const out: Token[] = [];
  for (const m of text.matchAll(/[^ \t]+/g)) {
    out.push({ text: m[0], column: Buffer.byteLength(text.slice(0, m.index)) + 1 });
  }
  return out;
}
