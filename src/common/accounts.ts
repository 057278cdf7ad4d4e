// /etc/passwd and /etc/group, read directly (no NSS, no shell). The daemon uses them only to turn
// names in its config into numbers and, for root's sudo requests, a uid into its groups;
// identity itself always comes from the kernel. Accounts that exist only in LDAP/SSSD are not
// found here: name them by number.
import { readFileSync } from 'node:fs';

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

const MAX_ID = 0xfffffffe; // (uid_t)-1 means "no id"

function parseId(field: string | undefined): number | undefined {
  if (field === undefined || !/^[0-9]{1,10}$/.test(field)) return undefined;
  const n = Number(field);
  return n <= MAX_ID ? n : undefined;
}

/** Colon-separated lines; comments, NIS compat lines (+name, -name) and malformed ones skipped. */
function records(text: string): string[][] {
  return text.split('\n')
    .filter((line) => line !== '' && !line.startsWith('#') && !line.startsWith('+') && !line.startsWith('-'))
    .map((line) => line.split(':'))
    .filter((f) => f[0] !== undefined && f[0] !== '');
}

export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const f of records(text)) {
    const uid = parseId(f[2]);
    const gid = parseId(f[3]);
    if (uid !== undefined && gid !== undefined) out.push({ name: f[0]!, uid, gid, home: f[5] ?? '/' });
  }
  return out;
}

export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const f of records(text)) {
    const gid = parseId(f[2]);
    if (gid !== undefined) out.push({ name: f[0]!, gid, members: (f[3] ?? '').split(',').filter(Boolean) });
  }
  return out;
}

function read(file: string): string {
  return readFileSync(file, 'utf8');
}

/** The first entry with this uid, as getpwuid(3). */
export function getpwuid(uid: number, passwdFile = '/etc/passwd'): PasswdEntry | undefined {
  try {
    return parsePasswd(read(passwdFile)).find((e) => e.uid === uid);
  } catch {
    return undefined;
  }
}

/** A group's gid by name (or a numeric gid), as getgrnam(3); undefined when there is none. */
export function getgrnam(name: string, groupFile = '/etc/group'): number | undefined {
  const numeric = parseId(name);
  if (numeric !== undefined) return numeric;
  return parseGroup(read(groupFile)).find((g) => g.name === name)?.gid;
}

/** What initgroups(3) would give `user`: the primary gid plus every group listing the user. */
export function groupsOf(user: PasswdEntry, groupFile = '/etc/group'): number[] {
  const listed = parseGroup(read(groupFile)).filter((g) => g.members.includes(user.name)).map((g) => g.gid);
  return [...new Set([user.gid, ...listed])];
}
