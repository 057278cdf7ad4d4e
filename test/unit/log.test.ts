// The daemon's log (src/daemon/log.ts): one key per meaning, journald priorities, text for people.
import { closeSync, mkdtempSync, openSync, rmSync, fstatSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLogger, formatText, isJournalStream, type LogFormat } from '../../src/daemon/log.js';
import { refusalLevel } from '../../src/daemon/server.js';
import { duplicateKeys } from '../helpers/json-keys.js';

function capture(format: LogFormat, journal: boolean) {
  const lines: string[] = [];
  const log = createLogger('trace', { format, journal, out: { write: (s: string) => lines.push(s) } });
  return { log, lines };
}

describe('duplicate key scan', () => {
  it('finds a second key in one object, not keys of nested objects or string contents', () => {
    expect(duplicateKeys('{"pid":1,"a":{"pid":2},"b":[{"pid":3}],"c":"\\"pid\\":4","pid":5}')).toEqual(['pid']);
    expect(duplicateKeys('{"pid":1,"a":{"pid":2,"x":[1,"pid"]},"b":[{"pid":3},{"pid":4}]}')).toEqual([]);
  });
});

describe('JSON records', () => {
  it('carry the peer under peer_* and no key twice, even when a field is named like one of pino\'s', () => {
    const { log, lines } = capture('json', false);
    // The fields of the real calls (open.ts lease_start, server.ts request_refused), and the worst case.
    log.info({ event: 'lease_start', lease: 'ab', uid: 1000, peer_uid: 0, peer_pid: 4242, network: 'lan', ifname: 'tap0', ifindex: 7, mac: '52:54:00:00:00:01', result: 'granted', reason: 'permitted',
      steps_us: { accept: 310, read: 95, decode: 60, decide: 120, reserve: 40, bridge: 30, create: 400, configure: 350, verify: 90, journal: 50, send: 120 } }, 'lease started');
    log.info({ event: 'request_refused', op: 'open', peer_uid: 65534, peer_pid: 77, result: 'denied', reason: 'no rule' }, 'request refused');
    log.warn({ event: 'x', level: 'fake', priority: 0, time: 1, svc: 'other', msg: 'fake', pid: 9 }, 'real message');
    expect(lines).toHaveLength(3);
    for (const line of lines) expect(duplicateKeys(line), line).toEqual([]);
    const [start, , worst] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(start).toMatchObject({ level: 'info', priority: 6, svc: 'tapd', uid: 1000, peer_uid: 0, peer_pid: 4242, msg: 'lease started' });
    expect(start).not.toHaveProperty('pid');
    expect(start!.steps_us).toMatchObject({ accept: 310, send: 120 }); // one object, its own keys
    expect(worst).toMatchObject({ level: 'warn', priority: 4, msg: 'real message', field_level: 'fake', field_msg: 'fake', pid: 9 });
  });

  it('map each level to its journald priority, in the record and as the <N> prefix on the journal', () => {
    const plain = capture('json', false);
    const journal = capture('json', true);
    for (const { log } of [plain, journal]) {
      log.fatal('f');
      log.error('e');
      log.warn('w');
      log.info('i');
      log.debug('d');
      log.trace('t');
    }
    expect(plain.lines.map((l) => (JSON.parse(l) as { priority: number }).priority)).toEqual([2, 3, 4, 6, 7, 7]);
    expect(plain.lines.every((l) => l.startsWith('{'))).toBe(true);
    expect(journal.lines.map((l) => l.slice(0, 3))).toEqual(['<2>', '<3>', '<4>', '<6>', '<7>', '<7>']);
    const timeless = (l: string) => l.replace(/"time":"[^"]*"/, '');
    expect(journal.lines.map((l) => timeless(l.slice(3)))).toEqual(plain.lines.map(timeless)); // the same records otherwise
  });
});

describe('text records', () => {
  it('are one line: local time, level, event, message, then key=value', () => {
    const tz = process.env.TZ;
    process.env.TZ = 'UTC';
    try {
      expect(formatText({ level: 'info', priority: 6, time: '2026-12-02T05:07:18.026Z', svc: 'tapd', event: 'lease_start', lease: 'ab12', uid: 1000, ifname: 'tap0', ok: true, msg: 'lease started' }))
        .toBe('05:07:18.026 INFO  lease_start "lease started" lease=ab12 uid=1000 ifname=tap0 ok=true\n');
    } finally {
      if (tz === undefined) delete process.env.TZ;
      else process.env.TZ = tz;
    }
  });

  it('quote and escape what could break the line or the terminal', () => {
    const line = formatText({ level: 'error', time: '2026-12-02T05:07:18.026Z', event: 'hook', output: 'line1\nline2 \x1b[2J\u009b\u202e', reason: 'a "b"', args: ['tap0', 'x y'], empty: '' });
    expect(line.split('\n')).toHaveLength(2); // one line and its newline
    expect(line).toMatch(/^\d\d:\d\d:\d\d\.026 ERROR hook output="line1\\nline2 \\u001b\[2J\\u009b\\u202e" reason="a \\"b\\"" args=\["tap0","x y"\] empty=""\n$/);
    expect(line).not.toMatch(/[^\x20-\x7e\n]/);
  });

  it('come out of the logger in the text format, with the journal prefix when on the journal', () => {
    const { log, lines } = capture('text', true);
    log.error({ event: 'internal_error', op: 'open', peer_uid: 65534 }, 'internal error');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^<3>\d\d:\d\d:\d\d\.\d{3} ERROR internal_error "internal error" op=open peer_uid=65534\n$/);
  });
});

describe('which stream is the journal', () => {
  it('is the one whose device:inode JOURNAL_STREAM names, not any stdout while the variable is set', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tapd-logtest-'));
    const a = openSync(path.join(dir, 'a'), 'w');
    const b = openSync(path.join(dir, 'b'), 'w');
    try {
      const st = fstatSync(a, { bigint: true });
      const env = { JOURNAL_STREAM: `${st.dev}:${st.ino}` };
      expect(isJournalStream(a, env)).toBe(true);
      expect(isJournalStream(b, env)).toBe(false);
      expect(isJournalStream(a, {})).toBe(false);
    } finally {
      closeSync(a);
      closeSync(b);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('levels of refused requests, by whose fault', () => {
  it('puts our side (hooks, missing networks, broken config) at error and the peer\'s at info', () => {
    expect(refusalLevel('hook_failed')).toBe('error');
    expect(refusalLevel('network_unavailable')).toBe('error');
    expect(refusalLevel('config_invalid')).toBe('error');
    expect(refusalLevel('limit')).toBe('warn');
    for (const code of ['denied', 'forbidden', 'quota', 'bad_request', 'mac_in_use', 'not_found'] as const) expect(refusalLevel(code)).toBe('info');
  });
});
