// The bench's results: their shape (BenchResults, written as bench/results.json), the statistics
// that fill them, and the table printed from them. Pure: no I/O, so test/unit/bench-report.test.ts
// can check it against a fixture without root.

/** A sample's summary; p99 by nearest rank. null where the sample was empty. */
export interface Summary {
  p50: number | null;
  p99: number | null;
  min: number | null;
  max: number | null;
  n: number;
}

export type Described = Summary & { what: string };
export interface Skipped {
  skipped: string;
}

export interface MethodResult {
  open_ms: Summary;
  /** The holder's close() of the last fd (the kernel deletes the device). */
  last_close_ms?: Summary;
  /** tapd: the client's close(), the last reference only if tapd had closed its copy already. */
  client_close_ms?: Summary;
  /** iproute2: close + `ip link del`. */
  teardown_ms?: Summary;
  client_close_call_to_lease_end_logged_ms?: Summary;
  client_close_was_last_fraction?: number | null;
}

export interface ConcurrencyResult {
  clients: number;
  rounds: number;
  opens: number;
  opens_per_s: number | null;
  open_ms: Summary;
  /** Opens that failed (a number, 0 when all succeeded). */
  errors: number;
  first_error?: string;
}

export interface BenchResults {
  machine: {
    cpu: string;
    cores: number;
    kernel: string;
    node: string;
    qemu: string;
    date: string;
    /** `stat -f -c %T` of the bench's temp dir, where tapd-state-on-disk keeps its state. */
    temp_dir_fs: string;
  };
  methodology: { open: string; concurrency: string; open_breakdown: string; idle_connections: string; node_env?: string };
  methods: Record<string, MethodResult>;
  /** method → quantile → peer → this method's figure ÷ the peer's. */
  open_ratios: Record<string, Record<'p50' | 'p99', Record<string, number | null>>>;
  /**
   * Section 1's tapd opens, step by step as the daemon logged them (lease_start's steps_us), in µs:
   * one key per step in the order they ran, then daemon_total, client_total, client_minus_daemon.
   */
  open_breakdown_us: Record<string, Summary>;
  e2e_command_ms: {
    node_startup: Described;
    node_import_client: Described;
    tapctl_run: Described | Skipped;
    'tapd-bridge-helper': Described | Skipped;
    'qemu-bridge-helper': Described;
  };
  cold_start: {
    first_open_ms: Summary;
    tapd_ready_logged_after_ms: Summary;
    second_open_ms: Summary;
    runs: Array<{ first_open_ms: number | null; started_logged_after_ms: number | null; second_open_ms: number | null }>;
    what: string;
  };
  concurrency: Record<string, ConcurrencyResult>;
  teardown_interference: {
    other_client_leases_closed: number;
    other_client_close_all_ms: number | null;
    tapd_open_ms_quiet: Summary;
    tapd_open_ms_while_other_client_tears_down: Summary;
    status_ms_quiet: Summary;
    status_ms_while_other_client_tears_down: Summary;
    c_ioctl_floor_ms_quiet: Summary;
    c_ioctl_floor_ms_while_other_process_tears_down: Summary;
    other_process_close_all_ms: number | null;
    what: string;
  };
  scale: {
    leases: number;
    daemon_rss_kb_at_start: number | null;
    daemon_rss_kb_before: number | null;
    daemon_threads: number | null;
    client_process_rss_kb: number | null;
    status_ms_at_0: Summary;
    fill_wall_ms: number | null;
    open_ms_first_50: Summary;
    open_ms_last_50: Summary;
    daemon_rss_kb_at_n: number | null;
    state_file_bytes_at_n: number;
    tun_devices_at_n: number;
    ioctl_floor_ms_at_n: Summary;
    /** Keys say ext4 for compatibility with earlier results: the "ext4" figures are on the temp dir's disk (machine.temp_dir_fs). */
    lease_journal_append_ms: { leases: number; tmpfs_ms_at_n: Summary; tmpfs_ms_at_1: Summary; ext4_ms_at_n: Summary; ext4_ms_at_1: Summary };
    open_ms_at_n: Summary;
    status_ms_at_n: Summary;
    other_client_open_ms_at_n_quiet: Summary;
    other_client_open_ms_during_teardown: Summary;
    status_ms_at_n_quiet: Summary;
    status_ms_during_teardown: Summary;
    teardown_ms: number | null;
    holder_close_all_ms: number | null;
    last_lease_end_after_last_close_ms: number | null;
    daemon_rss_kb_after_teardown: number | null;
    after_teardown: { tun_devices_left: number; list_leases: number; fresh_open_ok: boolean };
  };
  lease_end_ms: {
    fd_close_to_down_hook: Summary;
    process_exit_to_down_hook: Summary;
    holder_last_close_ms: Summary;
    tapd_open_ms_with_up_hook: Summary;
    what: string;
  };
  idle_connections: {
    connections: number;
    /** 10,000 in a full run; `connections` is less when the daemon's fd limit could not be raised (notes say). */
    connections_goal: number;
    daemon_fd_limit: number;
    uids: number;
    /** tapd's request-timeout during the section: idle connections are dropped after it. */
    request_timeout_s: number;
    /** From the first connect to the release. */
    held_s: number | null;
    connect_failed: number;
    /** Connects the full backlog refused (EAGAIN) and that were tried again. */
    connect_retries: number;
    /** Connections tapd answered (busy, a timeout) or closed before the holders let go. */
    refused: number;
    all_accepted_after_ms: number | null;
    all_closed_after_ms: number | null;
    daemon_rss_kb_before: number | null;
    daemon_rss_kb_with: number | null;
    daemon_rss_kb_after: number | null;
    growth_kb: number | null;
    daemon_fds_before: number | null;
    daemon_fds_with: number | null;
    daemon_fds_after: number | null;
    daemon_threads_with: number | null;
    /** (fds with − before) ÷ connections: 1 with SO_PEERPIDFD (the socket), 2 without (and the pidfd). */
    fds_per_connection: number | null;
    /** status's memory (process.memoryUsage(), kB) before / with / after: V8's heap apart from the rest. */
    heap_used_kb_before: number;
    heap_used_kb_with: number;
    heap_used_kb_after: number;
    heap_total_kb_before: number;
    heap_total_kb_with: number;
    heap_total_kb_after: number;
    external_kb_before: number;
    external_kb_with: number;
    external_kb_after: number;
    /** Growth before → with, in bytes per held connection. */
    rss_bytes_per_connection: number | null;
    heap_used_bytes_per_connection: number | null;
    heap_total_bytes_per_connection: number | null;
    external_bytes_per_connection: number | null;
    /** RSS minus V8's heap total: libuv's handles, malloc'd buffers and its fragmentation, code. */
    outside_heap_bytes_per_connection: number | null;
    status_ms_before: Summary;
    status_ms_while_held: Summary;
    open_ms_while_held: Summary;
    first_refusal?: string;
    first_connect_error?: string;
  };
  /** Facts the run found (rows skipped, things left behind); no interpretation. */
  notes: string[];
  daemon_rss_kb_at_start: number | null;
  daemon_rss_kb_after_section: Record<string, number | null>;
  bench_seconds: number | null;
}

/** Sample counts the run used (they are in the table's headings). */
export interface BenchCounts {
  open: number;
  blocks: number;
  cmd: number;
  cold: number;
  end: number;
  settleMs: number;
}

// ---------------------------------------------------------------- statistics

export function round(x: number | null | undefined, d = 3): number | null {
  if (x === null || x === undefined || !Number.isFinite(x)) return null;
  const f = 10 ** d;
  return Math.round(x * f) / f;
}

export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  // Nearest rank: the smallest value with at least q of the samples at or below it.
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

export function summary(xs: readonly number[]): Summary {
  return {
    p50: round(quantile(xs, 0.5)), p99: round(quantile(xs, 0.99)),
    min: round(xs.length ? Math.min(...xs) : NaN), max: round(xs.length ? Math.max(...xs) : NaN), n: xs.length,
  };
}

export function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  return a && b ? round(a / b, 2) : null;
}

/** The four peers every open method is compared with, and their short names in the table. */
export const OPEN_PEERS = ['ioctl-floor', 'tapd', 'qemu-bridge-helper', 'iproute2'] as const;
const PEER_ABBR: Record<string, string> = { 'ioctl-floor': 'floor', tapd: 'tapd', 'qemu-bridge-helper': 'qbh', iproute2: 'ip' };
const METHOD_ORDER = ['ioctl-floor', 'ioctl-floor-c', 'tapd', 'tapd-sync', 'tapd-state-on-disk', 'qemu-bridge-helper', 'iproute2'];

export function openRatios(methods: Record<string, MethodResult>): BenchResults['open_ratios'] {
  const out: BenchResults['open_ratios'] = {};
  for (const [m, r] of Object.entries(methods)) {
    const per = (q: 'p50' | 'p99') => Object.fromEntries(OPEN_PEERS.map((p) => [p, ratio(r.open_ms[q], methods[p]?.open_ms[q])]));
    out[m] = { p50: per('p50'), p99: per('p99') };
  }
  return out;
}

// ---------------------------------------------------------------- the table

export function fmt(x: number | null | undefined, d = 2): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '—';
  return x >= 1000 ? x.toFixed(0) : x >= 100 ? x.toFixed(1) : x.toFixed(d);
}

export function fmtRatio(r: number | null): string {
  return r === null ? '—' : `${r >= 10 ? r.toFixed(0) : r.toFixed(2)}×`;
}

type Cell = string | number | null | undefined;

/** A plain-text table: first column left-aligned, the rest right-aligned. */
export function table(headers: string[], rows: Cell[][]): string[] {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i] ?? '').length)));
  const row = (r: Cell[]) => r.map((c, i) => (i === 0 ? String(c ?? '').padEnd(widths[i]!) : String(c ?? '').padStart(widths[i]!))).join('  ').trimEnd();
  return [row(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(row)];
}

/** Microseconds, whole. */
export function us(x: number | null | undefined): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '—' : String(Math.round(x));
}

function pct(a: number | null | undefined, b: number | null | undefined): string {
  return a === null || a === undefined || !b ? '—' : `${Math.round((a / b) * 100)} %`;
}

function isSkipped(x: Described | Skipped | undefined): x is Skipped {
  return x !== undefined && 'skipped' in x;
}

/** The report printed after a run: the tables of every section, then the notes. */
export function renderReport(R: BenchResults, N: BenchCounts): string {
  const out: string[] = [];
  const line = (s = '') => out.push(s);
  const add = (rows: string[]) => out.push(...rows);
  const M = R.methods;
  const m = R.machine;
  const tapd = M.tapd!.open_ms;
  const floor = M['ioctl-floor']!;
  line(`tapd bench — ${m.date}`);
  line(`machine: ${m.cpu}, ${m.cores} cores, Linux ${m.kernel}, Node ${m.node}${m.qemu ? `, ${m.qemu}` : ''}; temp dir's disk: ${m.temp_dir_fs}`);
  line('');

  line(`1. Open latency: request sent → bridged, up TAP fd in the client's hand (${N.open} runs each, ${N.blocks} interleaved block(s), one at a time,`);
  line(`   each TAP closed, its lease ended and ${N.settleMs} ms since its close() passed before the next open; ratios = this row ÷ the peer)`);
  add(table(['method', 'p50 ms', 'p50 vs peers', 'p99 ms', 'p99 vs peers', 'close p50 ms'], METHOD_ORDER.filter((k) => M[k]).map((k) => {
    const r = M[k]!;
    const vs = (q: 'p50' | 'p99') => OPEN_PEERS.filter((p) => p !== k).map((p) => `${fmtRatio(R.open_ratios[k]?.[q][p] ?? null)} ${PEER_ABBR[p]}`).join(', ');
    const close = r.last_close_ms ? fmt(r.last_close_ms.p50) : r.client_close_ms ? `${fmt(r.client_close_ms.p50)}†` : r.teardown_ms ? `${fmt(r.teardown_ms.p50)}*` : '—';
    return [k, fmt(r.open_ms.p50), vs('p50'), fmt(r.open_ms.p99), vs('p99'), close];
  })));
  line('   ioctl-floor = the daemon\'s kernel calls for an open, in-process via ffi-rs; ioctl-floor-c = the same in C; tapd = async openTap;');
  line(`   tapd-sync = openTapSync (what tapctl and tapd-bridge-helper use); tapd-state-on-disk = tapd with --state-dir on the temp dir's disk (${m.temp_dir_fs}), not tmpfs;`);
  line('   close = the holder\'s close() of the last fd (the kernel deletes the device); * iproute2: close + `ip link del`;');
  line('   † tapd: the client\'s close(), the last reference only if tapd had closed its copy already.');
  line('');

  const B = R.open_breakdown_us;
  const TOTALS = ['daemon_total', 'client_total', 'client_minus_daemon'];
  const dt = B.daemon_total?.p50 ?? null;
  line(`1b. Where a tapd open's time goes: the daemon's steps_us of the tapd rows above (${B.daemon_total?.n ?? 0} opens; µs)`);
  add(table(['step', 'p50 µs', 'p99 µs', 'p50 share of daemon total'], [
    ...Object.keys(B).filter((k) => !TOTALS.includes(k)).map((k) => [k, us(B[k]!.p50), us(B[k]!.p99), pct(B[k]!.p50, dt)]),
    ['daemon total (sum of the steps)', us(B.daemon_total?.p50), us(B.daemon_total?.p99), pct(dt, dt)],
    ['client total (its own clock)', us(B.client_total?.p50), us(B.client_total?.p99), pct(B.client_total?.p50, dt)],
    ['client + socket (client − daemon)', us(B.client_minus_daemon?.p50), us(B.client_minus_daemon?.p99), pct(B.client_minus_daemon?.p50, dt)],
  ]));
  line('   accept = connection event → the uid (SO_PEERCRED) and the connection caps; read = until the request frame is in;');
  line('   identify = credentials, groups, pidfd and start time of the process that connected; decode = parse + check it;');
  line('   decide = resolve, policy, quota and bridge checks; reserve = slot + MAC; bridge = bridge ready; create = TUNSETIFF + ifindex;');
  line('   configure = address, MTU, master (attach) and up in one RTM_SETLINK; verify = owner/queue check (RTM_GETLINK);');
  line('   journal = lease journal append; send = reply encoded and sendmsg with the fds. Each p50 is over its own samples:');
  line('   the p50s need not add up to the total\'s.');
  line('');

  const E = R.e2e_command_ms;
  line(`2. Whole commands (fork → exit; ${N.cmd} runs; Node start-up included where they are Node)`);
  if (R.methodology.node_env) line(`   ${R.methodology.node_env}`);
  const peers = (q: 'p50' | 'p99'): Array<[string, number | null]> => [
    ['qbh', E['qemu-bridge-helper'][q]], ['node -e 0', E.node_startup[q]], ['tapd in-process', tapd[q]],
  ];
  const row2 = (name: string, s: Described | Skipped): Cell[] => {
    if (isSkipped(s)) return [name, '—', s.skipped, '—', ''];
    const vs = (q: 'p50' | 'p99') => peers(q).filter(([, v]) => v !== s[q]).map(([n, v]) => `${fmtRatio(ratio(s[q], v))} ${n}`).join(', ');
    return [name, fmt(s.p50), vs('p50'), fmt(s.p99), vs('p99')];
  };
  add(table(['command', 'p50 ms', 'p50 vs', 'p99 ms', 'p99 vs'], [
    row2('tapctl run -b lan -- /bin/true', E.tapctl_run),
    row2('tapd-bridge-helper', E['tapd-bridge-helper']),
    row2('qemu-bridge-helper', E['qemu-bridge-helper']),
    row2('node + import dist/client (ffi-rs)', E.node_import_client),
    row2('node -e 0', E.node_startup),
  ]));
  // /bin/true exits holding the TAP's last fd, so the kernel deletes the device before the exit
  // completes (section 1's close column); QEMU pays that when it exits, the helpers' rows do not.
  const kernelClose = M['ioctl-floor-c']?.last_close_ms?.p50 ?? null;
  const tapctlRun = isSkipped(E.tapctl_run) ? null : E.tapctl_run.p50;
  if (tapctlRun !== null && kernelClose !== null) {
    const less = tapctlRun - kernelClose;
    line(`   tapctl run includes the TAP's deletion by the kernel when /bin/true exits holding its last fd (the C floor's close()`);
    line(`   p50 in section 1: ${fmt(kernelClose)} ms); without it: ${fmt(less)} ms = ${fmtRatio(ratio(less, E.node_startup.p50))} node -e 0, ${fmtRatio(ratio(less, E['qemu-bridge-helper'].p50))} qbh.`);
  }
  line('');

  const C = R.cold_start;
  line(`3. Cold start: first open through systemd-socket-activate, no daemon running before (${N.cold} runs)`);
  add(table(['figure', 'p50 ms', 'max ms', 'vs'], [
    ['first open (connect → fd)', fmt(C.first_open_ms.p50), fmt(C.first_open_ms.max),
      `${fmtRatio(ratio(C.first_open_ms.p50, tapd.p50))} warm tapd open, ${fmtRatio(ratio(C.first_open_ms.p50, E.node_startup.p50))} node -e 0`],
    ['tapd "started" logged after', fmt(C.tapd_ready_logged_after_ms.p50), fmt(C.tapd_ready_logged_after_ms.max),
      `${fmtRatio(ratio(C.tapd_ready_logged_after_ms.p50, C.first_open_ms.p50))} first open`],
    ['second open, same daemon', fmt(C.second_open_ms.p50), fmt(C.second_open_ms.max), `${fmtRatio(ratio(C.second_open_ms.p50, tapd.p50))} warm tapd open`],
  ]));
  line('');

  line('4. Concurrency: k clients open at once (async client, one process; all leases ended between rounds)');
  const c1 = R.concurrency['1'];
  add(table(['clients', 'opens', 'opens/s', 'vs 1 client', 'p50 ms', 'p99 ms', 'p99 vs 1 client', 'p99 vs ioctl-floor p99', 'errors'],
    Object.values(R.concurrency).map((c) => [
      c.clients, c.opens, fmt(c.opens_per_s, 1), fmtRatio(ratio(c.opens_per_s, c1?.opens_per_s)), fmt(c.open_ms.p50), fmt(c.open_ms.p99),
      fmtRatio(ratio(c.open_ms.p99, c1?.open_ms.p99)), fmtRatio(ratio(c.open_ms.p99, floor.open_ms.p99)), c.errors,
    ])));
  for (const c of Object.values(R.concurrency)) if (c.first_error) line(`   ${c.clients} clients, first error: ${c.first_error}`);
  const I = R.teardown_interference;
  line(`   While another client's ${I.other_client_leases_closed} TAPs are being torn down (it closes them all; ${fmt(I.other_client_close_all_ms)} ms):`);
  add(table(['figure', 'quiet p50', 'busy p50', 'busy/quiet', 'quiet p99', 'busy p99', 'busy/quiet'], ([
    ['tapd open (sync client)', I.tapd_open_ms_quiet, I.tapd_open_ms_while_other_client_tears_down],
    ['tapd status (no kernel work)', I.status_ms_quiet, I.status_ms_while_other_client_tears_down],
    ['C ioctl floor, no daemon', I.c_ioctl_floor_ms_quiet, I.c_ioctl_floor_ms_while_other_process_tears_down],
  ] as Array<[string, Summary, Summary]>).map(([n, q, b]) => [n, fmt(q.p50), fmt(b.p50), fmtRatio(ratio(b.p50, q.p50)), fmt(q.p99), fmt(b.p99), fmtRatio(ratio(b.p99, q.p99))])));
  line('');

  const S = R.scale;
  const J = S.lease_journal_append_ms;
  const sync0 = M['tapd-sync']!.open_ms;
  const kbPerLease = S.daemon_rss_kb_at_n !== null && S.daemon_rss_kb_before !== null ? (S.daemon_rss_kb_at_n - S.daemon_rss_kb_before) / S.leases : null;
  const diff = (a: number | null, b: number | null) => (a !== null && b !== null ? a - b : null);
  line(`5. Scale: ${S.leases} live leases on one bridge`);
  add(table(['figure', 'value', 'vs'], [
    ['daemon RSS just after start', `${S.daemon_rss_kb_at_start} kB`, `${fmtRatio(ratio(S.daemon_rss_kb_at_start, S.client_process_rss_kb))} the bench's client process`],
    ['daemon RSS before (after sections 1-4)', `${S.daemon_rss_kb_before} kB`,
      `${fmtRatio(ratio(S.daemon_rss_kb_before, S.client_process_rss_kb))} the bench's client process (${S.client_process_rss_kb} kB); ${S.daemon_threads} threads`],
    [`daemon RSS at ${S.leases}`, `${S.daemon_rss_kb_at_n} kB`,
      `${fmtRatio(ratio(S.daemon_rss_kb_at_n, S.daemon_rss_kb_before))} before (${kbPerLease !== null && kbPerLease >= 0 ? '+' : ''}${fmt(kbPerLease)} kB/lease)`],
    ['daemon RSS after teardown', `${S.daemon_rss_kb_after_teardown} kB`, `${fmtRatio(ratio(S.daemon_rss_kb_after_teardown, S.daemon_rss_kb_before))} before`],
    [`filling 0 → ${S.leases} (sequential)`, `${fmt(S.fill_wall_ms)} ms`, `${fmt(S.fill_wall_ms === null ? null : S.fill_wall_ms / S.leases)} ms/open`],
    ['open p50, first 50 / last 50 of the fill', `${fmt(S.open_ms_first_50.p50)} / ${fmt(S.open_ms_last_50.p50)} ms`, fmtRatio(ratio(S.open_ms_last_50.p50, S.open_ms_first_50.p50))],
    [`open at ${S.leases} live, p50 / p99`, `${fmt(S.open_ms_at_n.p50)} / ${fmt(S.open_ms_at_n.p99)} ms`,
      `${fmtRatio(ratio(S.open_ms_at_n.p50, sync0.p50))} / ${fmtRatio(ratio(S.open_ms_at_n.p99, sync0.p99))} tapd-sync at 0`],
    [`ioctl floor (no daemon) at 0 / at ${S.leases} ports, p50`, `${fmt(floor.open_ms.p50)} / ${fmt(S.ioctl_floor_ms_at_n.p50)} ms`,
      `${fmtRatio(ratio(S.ioctl_floor_ms_at_n.p50, floor.open_ms.p50))}; tapd minus floor: ${fmt(diff(S.open_ms_at_n.p50, S.ioctl_floor_ms_at_n.p50))} ms at ${S.leases}, ${fmt(diff(sync0.p50, floor.open_ms.p50))} ms at 0`],
    [`lease journal append at 1 / ${J.leases} lines, tmpfs`, `${fmt(J.tmpfs_ms_at_1.p50)} / ${fmt(J.tmpfs_ms_at_n.p50)} ms`, fmtRatio(ratio(J.tmpfs_ms_at_n.p50, J.tmpfs_ms_at_1.p50))],
    [`lease journal append at 1 / ${J.leases} lines, ${m.temp_dir_fs}`, `${fmt(J.ext4_ms_at_1.p50)} / ${fmt(J.ext4_ms_at_n.p50)} ms`,
      `${fmtRatio(ratio(J.ext4_ms_at_n.p50, J.tmpfs_ms_at_n.p50))} tmpfs at ${J.leases}`],
    [`status at 0 / at ${S.leases}, p50`, `${fmt(S.status_ms_at_0.p50)} / ${fmt(S.status_ms_at_n.p50)} ms`, fmtRatio(ratio(S.status_ms_at_n.p50, S.status_ms_at_0.p50))],
    [`lease journal at ${S.leases}`, `${S.state_file_bytes_at_n} bytes`, ''],
    ['teardown: close all → last lease_end', `${fmt(S.teardown_ms)} ms`,
      `${fmt(S.teardown_ms === null ? null : S.teardown_ms / S.leases)} ms/lease, ${fmtRatio(ratio(S.teardown_ms === null ? null : S.teardown_ms / S.leases, floor.last_close_ms?.p50))} the floor's close() p50`],
    ['  of which the holder\'s close() calls', `${fmt(S.holder_close_all_ms)} ms`, `${fmtRatio(ratio(S.holder_close_all_ms, S.teardown_ms))} of teardown`],
    ['  last lease_end minus last close() return', `${fmt(S.last_lease_end_after_last_close_ms)} ms`, 'negative: logged before close() returned'],
    ['another client\'s open during teardown, p50 / p99', `${fmt(S.other_client_open_ms_during_teardown.p50)} / ${fmt(S.other_client_open_ms_during_teardown.p99)} ms`,
      `${fmtRatio(ratio(S.other_client_open_ms_during_teardown.p50, S.other_client_open_ms_at_n_quiet.p50))} / ${fmtRatio(ratio(S.other_client_open_ms_during_teardown.p99, S.other_client_open_ms_at_n_quiet.p99))} the same probe before (${fmt(S.other_client_open_ms_at_n_quiet.p50)} / ${fmt(S.other_client_open_ms_at_n_quiet.p99)} ms)`],
    ['status during teardown, p50 / p99', `${fmt(S.status_ms_during_teardown.p50)} / ${fmt(S.status_ms_during_teardown.p99)} ms`,
      `${fmtRatio(ratio(S.status_ms_during_teardown.p50, S.status_ms_at_n_quiet.p50))} / ${fmtRatio(ratio(S.status_ms_during_teardown.p99, S.status_ms_at_n_quiet.p99))} the same probe before (${fmt(S.status_ms_at_n_quiet.p50)} / ${fmt(S.status_ms_at_n_quiet.p99)} ms)`],
    ['after: tun devices / list / fresh open', `${S.after_teardown.tun_devices_left} / ${S.after_teardown.list_leases} / ${S.after_teardown.fresh_open_ok ? 'ok' : 'FAILED'}`, ''],
  ]));
  line('');
  line(`   daemon RSS after each section (kB): ${Object.entries(R.daemon_rss_kb_after_section).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  line('');

  const L = R.lease_end_ms;
  line(`6. Lease end: holder gone → down hook has run (${N.end} runs each)`);
  add(table(['figure', 'p50 ms', 'p99 ms', 'p50 vs'], [
    ['close() of last fd → down hook wrote', fmt(L.fd_close_to_down_hook.p50), fmt(L.fd_close_to_down_hook.p99),
      `${fmtRatio(ratio(L.fd_close_to_down_hook.p50, L.holder_last_close_ms.p50))} the close() itself`],
    ['process.exit with fd open → down hook wrote', fmt(L.process_exit_to_down_hook.p50), fmt(L.process_exit_to_down_hook.p99),
      `${fmtRatio(ratio(L.process_exit_to_down_hook.p50, L.fd_close_to_down_hook.p50))} by close()`],
    ['the holder\'s close() of the last fd', fmt(L.holder_last_close_ms.p50), fmt(L.holder_last_close_ms.p99),
      `${fmtRatio(ratio(L.holder_last_close_ms.p50, floor.last_close_ms?.p50))} the floor's close()`],
    ['tapd open with an up hook (network "hooked")', fmt(L.tapd_open_ms_with_up_hook.p50), fmt(L.tapd_open_ms_with_up_hook.p99),
      `${fmtRatio(ratio(L.tapd_open_ms_with_up_hook.p50, tapd.p50))} tapd without hooks`],
  ]));
  const X = R.idle_connections;
  line('');
  line(`7. Idle connections: ${X.connections} connections that send nothing (goal ${X.connections_goal}; tapd's fd limit ${X.daemon_fd_limit}), from ${X.uids} uids,`);
  line(`   held ${fmt(X.held_s, 1)} s, within tapd's request-timeout (${X.request_timeout_s} s for this section)`);
  const kb = (v: number | null) => (v === null ? '—' : `${v} kB`);
  const int = (v: number | null) => (v === null ? '—' : String(v));
  add(table(['figure', 'value', 'vs'], [
    ['daemon RSS before / with them / after they closed', `${kb(X.daemon_rss_kb_before)} / ${kb(X.daemon_rss_kb_with)} / ${kb(X.daemon_rss_kb_after)}`,
      `growth ${X.growth_kb === null ? '—' : `${X.growth_kb >= 0 ? '+' : ''}${X.growth_kb} kB`} (${fmt(X.growth_kb === null ? null : (X.growth_kb * 1024) / X.connections, 0)} bytes/connection; ×${X.connections_goal}: ${fmt(X.growth_kb === null ? null : (X.growth_kb * X.connections_goal) / X.connections / 1024, 1)} MB)`],
    ['  V8 heap used before / with / after', `${kb(X.heap_used_kb_before)} / ${kb(X.heap_used_kb_with)} / ${kb(X.heap_used_kb_after)}`, `${int(X.heap_used_bytes_per_connection)} bytes/connection`],
    ['  V8 heap total before / with / after', `${kb(X.heap_total_kb_before)} / ${kb(X.heap_total_kb_with)} / ${kb(X.heap_total_kb_after)}`, `${int(X.heap_total_bytes_per_connection)} bytes/connection`],
    ['  external before / with / after', `${kb(X.external_kb_before)} / ${kb(X.external_kb_with)} / ${kb(X.external_kb_after)}`, `${int(X.external_bytes_per_connection)} bytes/connection`],
    ['  RSS outside V8\'s heap (RSS − heap total)', `${int(X.outside_heap_bytes_per_connection)} bytes/connection`, `of ${int(X.rss_bytes_per_connection)} bytes/connection RSS`],
    ['daemon fds before / with / after', `${X.daemon_fds_before} / ${X.daemon_fds_with} / ${X.daemon_fds_after}`, `${fmt(X.fds_per_connection, 2)} per connection; ${X.daemon_threads_with} threads with them`],
    ['all accepted (tapd counts them) after', `${fmt(X.all_accepted_after_ms)} ms`, `${X.connect_retries} connects retried (backlog full), ${X.connect_failed} failed`],
    ['all gone (tapd counts none) after release', `${fmt(X.all_closed_after_ms)} ms`, ''],
    ['refused or dropped by tapd while held', String(X.refused), X.first_refusal ?? ''],
    ['status while held, p50 / p99', `${fmt(X.status_ms_while_held.p50)} / ${fmt(X.status_ms_while_held.p99)} ms`,
      `${fmtRatio(ratio(X.status_ms_while_held.p50, X.status_ms_before.p50))} / ${fmtRatio(ratio(X.status_ms_while_held.p99, X.status_ms_before.p99))} before (${fmt(X.status_ms_before.p50)} / ${fmt(X.status_ms_before.p99)} ms)`],
    ['open while held (sync client), p50 / max', `${fmt(X.open_ms_while_held.p50)} / ${fmt(X.open_ms_while_held.max)} ms`,
      `${fmtRatio(ratio(X.open_ms_while_held.p50, M['tapd-sync']!.open_ms.p50))} tapd-sync in section 1`],
  ]));
  if (R.notes.length) {
    line('');
    line('notes');
    for (const n of R.notes) line(`- ${n}`);
  }
  return out.join('\n');
}

// ---------------------------------------------------------------- the keys a run must fill

/**
 * Every figure a complete run has, as dotted paths into BenchResults (a Summary stands for its
 * p50, p99, min, max and n). Checked by the integration test on a real run and by the unit test
 * on the fixture, so a figure that stops being measured fails both.
 */
/** The steps_us keys of an open on a bridged network with no hook and no ovs port, in order. */
export const OPEN_STEPS = ['accept', 'read', 'identify', 'decode', 'decide', 'reserve', 'bridge', 'create', 'configure', 'verify', 'journal', 'send'] as const;

export const SUMMARY_PATHS: readonly string[] = [
  ...['tapd', 'tapd-sync', 'tapd-state-on-disk', 'qemu-bridge-helper', 'iproute2', 'ioctl-floor', 'ioctl-floor-c'].map((m) => `methods.${m}.open_ms`),
  'methods.tapd.client_close_ms', 'methods.tapd.client_close_call_to_lease_end_logged_ms',
  'methods.tapd-sync.client_close_ms', 'methods.tapd-sync.client_close_call_to_lease_end_logged_ms',
  'methods.ioctl-floor.last_close_ms', 'methods.ioctl-floor-c.last_close_ms', 'methods.qemu-bridge-helper.last_close_ms', 'methods.iproute2.teardown_ms',
  ...['node_startup', 'node_import_client', 'tapctl_run', 'tapd-bridge-helper', 'qemu-bridge-helper'].map((c) => `e2e_command_ms.${c}`),
  'cold_start.first_open_ms', 'cold_start.tapd_ready_logged_after_ms', 'cold_start.second_open_ms',
  'concurrency.1.open_ms', 'concurrency.8.open_ms', 'concurrency.64.open_ms',
  ...['tapd_open_ms_quiet', 'tapd_open_ms_while_other_client_tears_down', 'status_ms_quiet', 'status_ms_while_other_client_tears_down',
    'c_ioctl_floor_ms_quiet', 'c_ioctl_floor_ms_while_other_process_tears_down'].map((k) => `teardown_interference.${k}`),
  ...['status_ms_at_0', 'open_ms_first_50', 'open_ms_last_50', 'ioctl_floor_ms_at_n', 'open_ms_at_n', 'status_ms_at_n',
    'other_client_open_ms_at_n_quiet', 'other_client_open_ms_during_teardown', 'status_ms_at_n_quiet', 'status_ms_during_teardown'].map((k) => `scale.${k}`),
  ...['tmpfs_ms_at_n', 'tmpfs_ms_at_1', 'ext4_ms_at_n', 'ext4_ms_at_1'].map((k) => `scale.lease_journal_append_ms.${k}`),
  ...['fd_close_to_down_hook', 'process_exit_to_down_hook', 'holder_last_close_ms', 'tapd_open_ms_with_up_hook'].map((k) => `lease_end_ms.${k}`),
  // The steps every bridged open without hooks has (open.ts, server.ts), and the totals.
  ...[...OPEN_STEPS, 'daemon_total', 'client_total', 'client_minus_daemon'].map((k) => `open_breakdown_us.${k}`),
  ...['status_ms_before', 'status_ms_while_held', 'open_ms_while_held'].map((k) => `idle_connections.${k}`),
];

export const NUMBER_PATHS: readonly string[] = [
  'machine.cores',
  'methods.tapd.client_close_was_last_fraction', 'methods.tapd-sync.client_close_was_last_fraction',
  ...['1', '8', '64'].flatMap((k) => ['clients', 'rounds', 'opens', 'opens_per_s', 'errors'].map((f) => `concurrency.${k}.${f}`)),
  'teardown_interference.other_client_leases_closed', 'teardown_interference.other_client_close_all_ms', 'teardown_interference.other_process_close_all_ms',
  ...['leases', 'daemon_rss_kb_at_start', 'daemon_rss_kb_before', 'daemon_threads', 'client_process_rss_kb', 'fill_wall_ms', 'daemon_rss_kb_at_n',
    'state_file_bytes_at_n', 'tun_devices_at_n', 'lease_journal_append_ms.leases', 'teardown_ms', 'holder_close_all_ms',
    'last_lease_end_after_last_close_ms', 'daemon_rss_kb_after_teardown', 'after_teardown.tun_devices_left', 'after_teardown.list_leases'].map((k) => `scale.${k}`),
  'daemon_rss_kb_at_start', 'bench_seconds',
  ...['start', '1_open', '2_commands', '4_concurrency', '4b_interference', '5_scale', '6_lease_end', '7_idle_connections'].map((k) => `daemon_rss_kb_after_section.${k}`),
  ...['connections', 'connections_goal', 'daemon_fd_limit', 'uids', 'request_timeout_s', 'held_s', 'connect_failed', 'connect_retries', 'refused', 'all_accepted_after_ms', 'all_closed_after_ms',
    'daemon_rss_kb_before', 'daemon_rss_kb_with', 'daemon_rss_kb_after', 'growth_kb', 'daemon_fds_before', 'daemon_fds_with', 'daemon_fds_after',
    'daemon_threads_with', 'fds_per_connection',
    ...['heap_used', 'heap_total', 'external'].flatMap((m) => ['before', 'with', 'after'].map((w) => `${m}_kb_${w}`)),
    ...['rss', 'heap_used', 'heap_total', 'external', 'outside_heap'].map((m) => `${m}_bytes_per_connection`)].map((k) => `idle_connections.${k}`),
];

function at(obj: unknown, dotted: string): unknown {
  // No key of BenchResults contains a dot, so a dotted path is unambiguous.
  return dotted.split('.').reduce<unknown>((o, k) => (o !== null && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined), obj);
}

/** What a results object lacks: each path that is missing or not a finite number. Empty = complete. */
export function missingFigures(results: unknown): string[] {
  const bad: string[] = [];
  const num = (p: string) => {
    const v = at(results, p);
    if (typeof v !== 'number' || !Number.isFinite(v)) bad.push(`${p} = ${JSON.stringify(v)}`);
  };
  for (const p of SUMMARY_PATHS) for (const q of ['p50', 'p99', 'min', 'max', 'n']) num(`${p}.${q}`);
  for (const p of NUMBER_PATHS) num(p);
  return bad;
}

/** Every leaf path of a JSON value (arrays count as leaves): for comparing two runs' key sets. */
export function leafPaths(x: unknown, prefix = ''): string[] {
  if (x === null || typeof x !== 'object' || Array.isArray(x)) return [prefix];
  return Object.entries(x as Record<string, unknown>).flatMap(([k, v]) => leafPaths(v, prefix ? `${prefix}.${k}` : k));
}
