import { readFileSync } from 'node:fs';

/** A group's gid by name (or a numeric gid), from /etc/group. */
export function getgrnam(name: string): number {
  if (/^\d+$/.test(name)) return Number(name);
  for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f[2] !== undefined) return Number(f[2]);
  }
  throw new Error(`no group named ${name}`);
}
