// Human-readable output of list and status (the --json forms print tapd's data as is).
import type { LeaseInfo } from '../protocol/messages.js';

const COLUMNS = ['ID', 'IFNAME', 'NETWORK', 'BRIDGE', 'MAC', 'OWNER', 'PID', 'STARTED'] as const;

export function formatTable(rows: readonly (readonly string[])[]): string {
  const widths = rows.reduce<number[]>((w, r) => r.map((c, i) => Math.max(w[i] ?? 0, c.length)), []);
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

/** The lease table; `owner` turns a uid into a name (or returns the uid as text). */
export function formatLeases(leases: readonly LeaseInfo[], owner: (uid: number) => string): string {
  if (leases.length === 0) return 'no leases\n';
  const rows = leases.map((l) => [
    l.id, l.ifname, l.network, l.bridge ?? '-', l.mac, owner(l.owner_uid), String(l.pid), l.started,
  ]);
  return formatTable([[...COLUMNS], ...rows]);
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

export function formatStatus(status: Record<string, unknown>): string {
  const rows: string[][] = [];
  for (const [key, value] of Object.entries(status)) {
    if (key === 'uptime_s' && typeof value === 'number') rows.push(['uptime', formatDuration(value)]);
    else rows.push([key, typeof value === 'object' ? JSON.stringify(value) : String(value)]);
  }
  return formatTable(rows);
}
