// The bench's results and table (test/bench/report.ts), from a fixture written by a real quick
// run (TAPD_BENCH_QUICK=1 npm run bench). Pure: no root, no daemon.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  fmt, leafPaths, missingFigures, OPEN_STEPS, openRatios, quantile, renderReport, summary, table, us, type BenchCounts, type BenchResults,
} from '../../test/bench/report.js';

const FIXTURE = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../fixtures/bench-results.json');
const load = (): BenchResults => JSON.parse(readFileSync(FIXTURE, 'utf8')) as BenchResults;
const COUNTS: BenchCounts = { open: 40, blocks: 1, cmd: 5, cold: 2, end: 3, settleMs: 30 };
/** The line of the report whose first column is `name` (columns are separated by two spaces). */
const rowOf = (report: string, name: string) => report.split('\n').find((l) => l.startsWith(`${name}  `) || l === name);

describe('statistics', () => {
  it('quantiles are nearest rank', () => {
    const xs = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1, unsorted on purpose
    expect(quantile(xs, 0.5)).toBe(50);
    expect(quantile(xs, 0.99)).toBe(99);
    expect(quantile([7], 0.99)).toBe(7);
    expect(summary([3, 1, 2])).toEqual({ p50: 2, p99: 3, min: 1, max: 3, n: 3 });
  });

  it('an empty sample has null figures, which the completeness check reports', () => {
    expect(summary([])).toEqual({ p50: null, p99: null, min: null, max: null, n: 0 });
    const r = load();
    r.lease_end_ms.fd_close_to_down_hook = summary([]);
    expect(missingFigures(r)).toEqual(['p50', 'p99', 'min', 'max'].map((q) => `lease_end_ms.fd_close_to_down_hook.${q} = null`));
  });

  it('ratios to the peers are this method ÷ the peer, from the same results', () => {
    const r = load();
    const ratios = openRatios(r.methods);
    expect(ratios).toEqual(r.open_ratios);
    const t = r.methods.tapd!.open_ms.p50!;
    const q = r.methods['qemu-bridge-helper']!.open_ms.p50!;
    expect(ratios.tapd!.p50['qemu-bridge-helper']).toBe(Math.round((t / q) * 100) / 100);
    expect(ratios.tapd!.p50.tapd).toBe(1);
  });
});

describe('the results JSON', () => {
  it('the fixture has every figure a run must fill, each a finite number', () => {
    expect(missingFigures(load())).toEqual([]);
  });

  it('a figure that is missing or not a number is named', () => {
    const r = load();
    delete (r.concurrency['64'] as Partial<BenchResults['concurrency'][string]>).errors;
    (r.scale as unknown as Record<string, unknown>).teardown_ms = 'slow';
    delete r.methods.iproute2!.teardown_ms;
    expect(missingFigures(r)).toEqual([
      ...['p50', 'p99', 'min', 'max', 'n'].map((q) => `methods.iproute2.teardown_ms.${q} = undefined`),
      'concurrency.64.errors = undefined',
      'scale.teardown_ms = "slow"',
    ]);
  });

  it('a step of the open breakdown or an idle-connection figure that is missing is named', () => {
    const r = load();
    delete r.open_breakdown_us.verify;
    r.idle_connections.growth_kb = null;
    delete (r.idle_connections as Partial<BenchResults['idle_connections']>).status_ms_while_held;
    expect(missingFigures(r)).toEqual([
      ...['p50', 'p99', 'min', 'max', 'n'].map((q) => `open_breakdown_us.verify.${q} = undefined`),
      ...['p50', 'p99', 'min', 'max', 'n'].map((q) => `idle_connections.status_ms_while_held.${q} = undefined`),
      'idle_connections.growth_kb = null',
    ]);
  });

  it('the breakdown has the steps of the open path in order; they and the client\'s part add up as measured', () => {
    const b = load().open_breakdown_us;
    expect(Object.keys(b)).toEqual([...OPEN_STEPS, 'daemon_total', 'client_total', 'client_minus_daemon']);
    for (const k of Object.keys(b)) expect(b[k]!.n, k).toBe(b.daemon_total!.n);
    // Per open, the steps add up to daemon_total and the daemon's time lies within the client's.
    expect(b.client_minus_daemon!.min).toBeGreaterThanOrEqual(0);
    expect(b.daemon_total!.max).toBeLessThanOrEqual(b.client_total!.max!);
  });

  it('keeps the key names of issue 13 and of the runs before it', () => {
    const keys = new Set(leafPaths(load()));
    for (const k of ['methods.tapd.open_ms.p50', 'methods.qemu-bridge-helper.open_ms.p99', 'e2e_command_ms.tapctl_run.p50',
      'e2e_command_ms.tapd-bridge-helper.p50', 'cold_start.first_open_ms.p50', 'concurrency.64.opens_per_s', 'concurrency.64.errors',
      'scale.daemon_rss_kb_at_n', 'scale.daemon_rss_kb_before', 'scale.daemon_rss_kb_after_teardown', 'daemon_rss_kb_at_start',
      'daemon_rss_kb_after_section.6_lease_end', 'scale.lease_journal_append_ms.ext4_ms_at_n.p50', 'notes',
      // Asked for by issue 13 after the first runs.
      'open_breakdown_us.create.p50', 'open_breakdown_us.send.p99', 'open_breakdown_us.client_minus_daemon.p50',
      'idle_connections.connections', 'idle_connections.daemon_rss_kb_before', 'idle_connections.daemon_rss_kb_with',
      'idle_connections.daemon_rss_kb_after', 'idle_connections.growth_kb', 'idle_connections.status_ms_while_held.p50', 'idle_connections.refused',
      // The V8 heap split of section 7.
      'idle_connections.heap_used_kb_with', 'idle_connections.heap_total_kb_with', 'idle_connections.external_kb_with',
      'idle_connections.heap_used_bytes_per_connection', 'idle_connections.outside_heap_bytes_per_connection', 'idle_connections.fds_per_connection']) {
      expect(keys, k).toContain(k);
    }
  });
});

describe('the table', () => {
  it('pads the first column left and the others right', () => {
    expect(table(['a', 'bb'], [['xyz', 1], ['q', 'long']])).toEqual(['a      bb', '---  ----', 'xyz     1', 'q    long']);
  });

  it('prints every section with the figures of the results', () => {
    const r = load();
    const report = renderReport(r, COUNTS);
    for (const h of ['1. Open latency', '1b. Where a tapd open\'s time goes', '2. Whole commands', '3. Cold start', '4. Concurrency', '5. Scale', '6. Lease end', '7. Idle connections']) {
      expect(report).toContain(h);
    }
    // tapctl run less the kernel's deletion of the TAP at exit (the C floor's close p50).
    const run = r.e2e_command_ms.tapctl_run as { p50: number };
    const close = r.methods['ioctl-floor-c']!.last_close_ms!.p50!;
    expect(report).toContain(`p50 in section 1: ${fmt(close)} ms); without it: ${fmt(run.p50 - close)} ms`);
    for (const m of Object.keys(r.methods)) {
      const row = rowOf(report, m);
      expect(row, m).toBeDefined();
      expect(row!.split(/\s{2,}/)[1]).toBe(fmt(r.methods[m]!.open_ms.p50));
    }
    const c64 = rowOf(report, '64')!.split(/\s{2,}/);
    expect(c64[2]).toBe(fmt(r.concurrency['64']!.opens_per_s, 1));
    expect(c64[c64.length - 1]).toBe(String(r.concurrency['64']!.errors));
    expect(report).toContain(`(${COUNTS.open} runs each, ${COUNTS.blocks} interleaved block(s)`);
    expect(report).toContain(`temp dir's disk: ${r.machine.temp_dir_fs}`);
    for (const step of OPEN_STEPS) {
      const cells = rowOf(report, step)!.split(/\s{2,}/);
      expect(cells.slice(1, 3), step).toEqual([us(r.open_breakdown_us[step]!.p50), us(r.open_breakdown_us[step]!.p99)]);
    }
    expect(rowOf(report, 'client + socket (client − daemon)')).toContain(us(r.open_breakdown_us.client_minus_daemon!.p50));
    const X = r.idle_connections;
    expect(report).toContain(`7. Idle connections: ${X.connections} connections that send nothing`);
    expect(rowOf(report, 'daemon RSS before / with them / after they closed')).toContain(
      `${X.daemon_rss_kb_before} kB / ${X.daemon_rss_kb_with} kB / ${X.daemon_rss_kb_after} kB  growth +${X.growth_kb} kB`);
    expect(rowOf(report, 'refused or dropped by tapd while held')!.split(/\s{2,}/)[1]).toBe(String(X.refused));
    // V8's heap apart from the rest, each with its bytes per connection.
    expect(rowOf(report, '  V8 heap used before / with / after')!.split(/\s{2,}/).slice(-2)).toEqual(
      [`${X.heap_used_kb_before} kB / ${X.heap_used_kb_with} kB / ${X.heap_used_kb_after} kB`, `${X.heap_used_bytes_per_connection} bytes/connection`]);
    expect(rowOf(report, '  V8 heap total before / with / after')).toContain(`${X.heap_total_bytes_per_connection} bytes/connection`);
    expect(rowOf(report, '  external before / with / after')).toContain(`${X.external_bytes_per_connection} bytes/connection`);
    expect(rowOf(report, '  RSS outside V8\'s heap (RSS − heap total)')).toContain(`${X.outside_heap_bytes_per_connection} bytes/connection`);
    expect(rowOf(report, 'daemon fds before / with / after')).toContain(`${fmt(X.fds_per_connection, 2)} per connection`);
  });

  it('says facts only: no claims about the machine, no notes section when there are none', () => {
    const report = renderReport(load(), COUNTS);
    expect(report).not.toMatch(/this machine|noisy|ext4/i);
    expect(report).not.toContain('notes');
  });

  it('a skipped command shows why; notes and a first error are printed', () => {
    const r = load();
    r.e2e_command_ms.tapctl_run = { skipped: 'not built (dist/cli/tapctl.js missing)' };
    r.notes = ['tapctl_run: not built (dist/cli/tapctl.js missing); row skipped'];
    r.concurrency['64'] = { ...r.concurrency['64']!, errors: 2, first_error: 'EPIPE send' };
    const report = renderReport(r, COUNTS);
    expect(rowOf(report, 'tapctl run -b lan -- /bin/true')).toContain('not built (dist/cli/tapctl.js missing)');
    expect(report).toContain('\nnotes\n- tapctl_run: not built');
    expect(report).toContain('64 clients, first error: EPIPE send');
  });
});
