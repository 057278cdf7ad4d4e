import { errnoText } from '../../common/trust.js';
import { closeSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, openTrusted, walk, type Finding } from '../../common/trust.js';
import { hookProblems } from '../hooks.js';
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


/**
 * Reads the files a policy is made of, under the trust rule of src/common/trust.ts: nobody but
 * root (or tapd's own uid) can have written them, or changed which file their path names.
 * Problems are appended to `problems`; a component found unsafe is reported once.
 */
export class ConfigFiles {
  /** Every file read, in the order read (for Policy.files). */
  readonly read: string[] = [];
  private readonly judged = new Set<string>();

  constructor(private readonly problems: Problem[], private readonly checkOwnership: boolean,
    private readonly hookScope: 'chain' | 'full' = 'chain') {}

  report(site: Site, message: string): void {
    this.problems.push({ ...site, message });
  }

  /** Reports why `given` was refused (each unsafe component once). */
  private refuse(given: string, findings: Finding[], site: Site): void {
    for (const f of findings) {
      switch (f.flaw) {
        case 'owner':
        case 'writable': {
          const key = `${f.path}\0${f.flaw}`;
          if (this.judged.has(key)) break;
          this.judged.add(key);
          this.report(site, `${describe(f)}; tapd reads only configuration that only root can change`);
          break;
        }
        case 'missing':
        case 'unreadable': this.report(site, `cannot read ${given}: ${f.errno ?? f.text}`); break;
        case 'type': this.report(site, `${given} is not a regular file`); break;
        default: this.report(site, `cannot read ${given}: ${describe(f)}`);
      }
    }
  }

  /**
   * A hook or bridge script named in the config (`up`, `down`, `bridge-script`): at load, a path
   * whose directories or links someone other than root could change is refused (the script
   * itself may be missing or not yet fixed: it is checked fully whenever it runs);
   * `tapd --check-config` wants the script itself to be right too.
   */
  hook(path: string, site: Site): boolean {
    if (!this.checkOwnership) return true;
    const { problems } = hookProblems(path, this.hookScope);
    for (const message of problems) this.report(site, message);
    return problems.length === 0;
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
    const w = walk(dir, { trust: this.checkOwnership });
    if (w.findings.length > 0) {
      this.refuse(dir, w.findings, site);
      return undefined;
    }
    let names: string[];
    try {
      names = readdirSync(w.path);
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
    // Walked, opened O_NOFOLLOW|O_NONBLOCK and judged on the fd: a FIFO cannot block us.
    const o = openTrusted(path, { trust: this.checkOwnership });
    if ('findings' in o) {
      this.refuse(path, o.findings, site);
      return undefined;
    }
    let bytes: Buffer;
    try {
      if (o.stat.size > MAX_FILE_BYTES) {
        this.report(site, `${path} is larger than ${MAX_FILE_BYTES} bytes`);
        return undefined;
      }
      bytes = readFileSync(o.fd);
    } catch (e) {
      this.report(site, `cannot read ${path}: ${errnoText(e)}`);
      return undefined;
    } finally {
      closeSync(o.fd);
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
