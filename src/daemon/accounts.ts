// Users and groups from /etc/passwd and /etc/group, for the one case where a request names a
// user: root acting for SUDO_UID. Everyone else's identity comes from the kernel.
import { readFileSync } from 'node:fs';

export interface Account {
  uid: number;
  gid: number;
  name: string;
  groups: number[];
}

function lines(path: string): string[][] {
  return readFileSync(path, 'utf8').split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(':'));
}

export function lookupAccount(uid: number, passwd = '/etc/passwd', group = '/etc/group'): Account | undefined {
  const entry = lines(passwd).find((f) => Number(f[2]) === uid && f[2] === String(uid));
  if (!entry) return undefined;
  const name = entry[0]!;
  const gid = Number(entry[3]);
  const groups = lines(group)
    .filter((f) => (f[3] ?? '').split(',').includes(name))
    .map((f) => Number(f[2]));
  return { uid, gid, name, groups: [...new Set([gid, ...groups])] };
}
