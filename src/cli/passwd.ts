// Just enough of /etc/passwd for tapctl: a uid's name and home, to show lease owners and to
// become the sudo user.
import { readFileSync } from 'node:fs';

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const f = line.split(':');
    if (f.length < 7 || !/^\d+$/.test(f[2]!) || !/^\d+$/.test(f[3]!)) continue;
    out.push({ name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5]! });
  }
  return out;
}

export function getpwuid(uid: number, path = '/etc/passwd'): PasswdEntry | undefined {
  try {
    return parsePasswd(readFileSync(path, 'utf8')).find((e) => e.uid === uid);
  } catch {
    return undefined;
  }
}
