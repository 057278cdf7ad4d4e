// Human-readable output of list and status (the --json forms print tapd's data as is).
import type { LeaseInfo } from '../protocol/messages.js';

const COLUMNS = ['ID', 'IFNAME', 'NETWORK', 'BRIDGE', 'MAC', 'OWNER', 'PID', 'AGE'] as const;

/** A network as `networks` shows it. */
export interface NetworkInfo {
  name: string;
  mode: string;
  bridge: string | null;
  uplink?: string;
  grants?: { queues?: number; mac?: boolean; mtu?: boolean; vhost?: boolean };
  leases_per_network: number | null;
  leases_total: number | null;
  polkit: boolean;
  held: number;
}

export function formatTable(rows: readonly (readonly string[])[]): string {
  const widths = rows.reduce<number[]>((w, r) => r.map((c, i) => Math.max(w[i] ?? 0, c.length)), []);
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

/**
 * The lease table; `owner` turns a uid into a name (or returns the uid as text). A lease whose
 * guest MAC tapd does not know (QEMU's bridge helper never tells it) shows "unknown".
 */
export function formatLeases(leases: readonly LeaseInfo[], owner: (uid: number) => string, now = Date.now()): string {
  if (leases.length === 0) return 'no leases\n';
  const rows = leases.map((l) => [
    l.id, l.ifname, l.network, l.bridge ?? '-', l.mac || 'unknown', owner(l.owner_uid), String(l.pid),
    formatAge((now - Date.parse(l.started)) / 1000),
  ]);
  return formatTable([[...COLUMNS], ...rows]);
}

/** A lease's age, compact: 42s, 3m12s, 2h05m, 1d03h. */
export function formatAge(seconds: number): string {
  const s = Number.isFinite(seconds) ? Math.max(0, Math.floor(seconds)) : 0;
  const two = (n: number) => String(n).padStart(2, '0');
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${two(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${two(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d${two(Math.floor((s % 86400) / 3600))}h`;
}

function grantsText(n: NetworkInfo): string {
  const g = n.grants ?? {};
  const parts = [`queues ${g.queues ?? 1}`];
  for (const k of ['mac', 'mtu', 'vhost'] as const) if (g[k]) parts.push(k);
  if (n.polkit) parts.push('polkit asked');
  return parts.join(',');
}

function quotaText(n: NetworkInfo): string {
  const parts: string[] = [];
  if (n.leases_per_network !== null) parts.push(`${n.leases_per_network} here`);
  if (n.leases_total !== null) parts.push(`${n.leases_total} in all`);
  return parts.length ? parts.join(',') : '-';
}

/** The `networks` table: only networks the caller may use (tapd leaves the others out). */
export function formatNetworks(networks: readonly NetworkInfo[]): string {
  if (networks.length === 0) return 'no networks you may use\n';
  const rows = networks.map((n) => [
    n.name, n.mode, n.bridge ?? '-', grantsText(n), quotaText(n), String(n.held),
  ]);
  return formatTable([['NAME', 'MODE', 'BRIDGE', 'GRANTS', 'QUOTA', 'HELD'], ...rows]);
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const parts: string[] = [];
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) parts.push(`${d}d`);
  if (h) parts.push(`${h}h`);
  if (m) parts.push(`${m}m`);
  parts.push(`${s % 60}s`);
  return parts.join(' ');
}

interface Memory { rss_kb: number; heap_used_kb: number; heap_total_kb: number; external_kb: number; array_buffers_kb: number }

function isMemory(v: unknown): v is Memory {
  return typeof v === 'object' && v !== null && ['rss_kb', 'heap_used_kb', 'heap_total_kb', 'external_kb', 'array_buffers_kb']
    .every((k) => typeof (v as Record<string, unknown>)[k] === 'number');
}

function mb(kb: number): string {
  return `${(kb / 1024).toFixed(1)} MB`;
}

/** The daemon's memory on one line: what the kernel charges it, and how much of that is V8's heap. */
function formatMemory(m: Memory): string {
  return `${mb(m.rss_kb)} resident; V8 heap ${mb(m.heap_used_kb)} used of ${mb(m.heap_total_kb)}; external ${mb(m.external_kb)} (buffers ${mb(m.array_buffers_kb)})`;
}

export function formatStatus(status: Record<string, unknown>): string {
  const rows: string[][] = [];
  for (const [key, value] of Object.entries(status)) {
    if (key === 'uptime_s' && typeof value === 'number') rows.push(['uptime', formatDuration(value)]);
    else if (key === 'hook_timeout_ms' && typeof value === 'number') rows.push(['hook timeout', value < 1000 ? `${value} ms` : formatDuration(value / 1000)]);
    else if (key === 'memory' && isMemory(value)) rows.push(['memory', formatMemory(value)]);
    else rows.push([key, typeof value === 'object' ? JSON.stringify(value) : String(value)]);
  }
  return formatTable(rows);
}
