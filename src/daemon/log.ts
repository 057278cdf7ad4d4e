// The daemon's log: pino records, as JSON for journald and programs or as one text line for people.
import { fstatSync } from 'node:fs';
import { isatty } from 'node:tty';
import pino, { type DestinationStream, type Logger } from 'pino';

export type { Logger };
export type LogFormat = 'json' | 'text' | 'auto';

/**
 * Keys pino writes itself. A log call's field of the same name would be a second key in the same
 * record (pino does not merge; JSON.parse and jq keep only one), so such a field is renamed.
 */
const OWN_KEYS = new Set(['level', 'priority', 'time', 'svc', 'msg']);

/** sd-daemon(3) priority of a pino level: fatal SD_CRIT, error SD_ERR, warn SD_WARNING, info SD_INFO, debug/trace SD_DEBUG. */
export function priorityOf(level: number): number {
  if (level >= 60) return 2;
  if (level >= 50) return 3;
  if (level >= 40) return 4;
  if (level >= 30) return 6;
  return 7;
}

/**
 * Whether fd is the journal's stream: systemd sets JOURNAL_STREAM to its device:inode
 * (systemd.exec(5)); a child whose output was redirected elsewhere inherits the variable only.
 */
export function isJournalStream(fd: number, env: NodeJS.ProcessEnv = process.env): boolean {
  if (!env.JOURNAL_STREAM) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return env.JOURNAL_STREAM === `${st.dev}:${st.ino}`;
  } catch {
    return false;
  }
}

/** A value as a person reads it in one terminal line: bare when plain, else JSON with every non-ASCII character escaped. */
function textValue(v: unknown): string {
  if (typeof v === 'string' && /^[\w.,:/@+%-]+$/.test(v)) return v;
  if (typeof v !== 'object' && typeof v !== 'string') return String(v);
  // Escaped so that no value (hook output, a path) can move the cursor or start a line of its own.
  return JSON.stringify(v).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

const two = (n: number, w = 2) => String(n).padStart(w, '0');

/** One record (as pino wrote it) as `HH:MM:SS.mmm LEVEL event "message" key=value ...`, local time. */
export function formatText(rec: Record<string, unknown>): string {
  const t = new Date(String(rec.time));
  const time = `${two(t.getHours())}:${two(t.getMinutes())}:${two(t.getSeconds())}.${two(t.getMilliseconds(), 3)}`;
  const parts = [time, String(rec.level).toUpperCase().padEnd(5), textValue(rec.event ?? '-')];
  if (rec.msg !== undefined) parts.push(textValue(String(rec.msg)));
  for (const [k, v] of Object.entries(rec)) {
    if (!OWN_KEYS.has(k) && k !== 'event') parts.push(`${k}=${textValue(v)}`);
  }
  return `${parts.join(' ')}\n`;
}

interface Sink {
  write(s: string): unknown;
  flushSync?(): void;
}

/**
 * pino's stream: each record in the chosen format, with the `<N>` priority prefix journald reads
 * (SyslogLevelPrefix=, on by default) when writing to the journal. pino tells the stream each
 * record's level (needsMetadataGsym), so nothing is parsed for JSON.
 */
function destination(format: 'json' | 'text', journal: boolean, out: Sink): DestinationStream {
  const stream = {
    [pino.symbols.needsMetadataGsym]: true,
    lastLevel: 30,
    write(line: string) {
      const text = format === 'text' ? formatText(JSON.parse(line) as Record<string, unknown>) : line;
      out.write(journal ? `<${priorityOf(stream.lastLevel)}>${text}` : text);
    },
    // Waits for the reader: only used before exit, when the last records matter more than time.
    flush(cb: (err?: Error) => void) {
      // sonic-boom's flushSync writes its buffer even while an asynchronous write is still in
      // flight, which puts later records before earlier ones: wait for that write first (1 s at most).
      const deadline = Date.now() + 1000;
      const finish = () => {
        if ((out as { _writing?: boolean })._writing === true && Date.now() < deadline) {
          setTimeout(finish, 1);
          return;
        }
        try {
          out.flushSync?.();
          cb();
        } catch (err) {
          cb(err as Error);
        }
      };
      finish();
    },
  };
  return stream;
}

export interface LogOptions {
  format?: LogFormat;
  /** Where records go (tests); by default fd 1. */
  out?: Sink;
  /** Whether `out` is the journal; by default, whether fd 1 is (JOURNAL_STREAM). */
  journal?: boolean;
}

/**
 * Records on stdout. Written asynchronously: a journald or pipe reader that falls behind must not
 * stop the daemon (a synchronous write blocks on a full pipe); `flushLog` before a clean exit, and
 * pino's own exit handler, write out what is buffered, so the last record is not lost. `auto` is text on a terminal and JSON otherwise (journald, pipes, files).
 * Fields are our own keys; a peer's are named peer_* (peer_uid, peer_pid), the lease owner's
 * `uid`. A peer's raw message is never logged.
 */
export function createLogger(level: string, opts: LogOptions = {}): Logger {
  const journal = opts.journal ?? isJournalStream(1);
  const format = opts.format === undefined || opts.format === 'auto' ? (isatty(1) && !journal ? 'text' : 'json') : opts.format;
  const out = opts.out ?? pino.destination({ dest: 1, sync: false, minLength: 0 });
  return pino({
    level,
    base: { svc: 'tapd' }, // journald records the daemon's pid itself (_PID)
    timestamp: pino.stdTimeFunctions.isoTime,
    messageKey: 'msg',
    formatters: {
      // `priority` is what journald makes of the prefix (PRIORITY=), for readers of plain JSON.
      level: (label, number) => ({ level: label, priority: priorityOf(number) }),
      log: (obj) => {
        if (!Object.keys(obj).some((k) => OWN_KEYS.has(k))) return obj;
        return Object.fromEntries(Object.entries(obj).map(([k, v]) => [OWN_KEYS.has(k) ? `field_${k}` : k, v]));
      },
    },
  }, destination(format, journal, out));
}

/** Resolves once every record so far is written (before process.exit, which would drop the rest). */
export function flushLog(log: Logger): Promise<void> {
  return new Promise((resolve) => log.flush(() => resolve()));
}
