// Users and groups. Without a file argument, through NSS (libc's getpwuid_r and friends, so
// LDAP, SSSD and extrausers accounts are found as login and sudo find them); with one, read
// from that passwd/group file directly (the policy tests' fixtures). The daemon uses them only
// to turn names into numbers and, for root's sudo requests, a uid into its groups; identity
// itself always comes from the kernel.
import { readFileSync } from 'node:fs';
import { nssGetgrnam, nssGetpwnam, nssGetpwuid, nssGrouplist } from '../sys/nss.js';

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

/** The entry with this uid, as getpwuid(3) (from `passwdFile` when given: its first match). */
export function getpwuid(uid: number, passwdFile?: string): PasswdEntry | undefined {
  if (passwdFile === undefined) return nssGetpwuid(uid);
  try {
    return parsePasswd(read(passwdFile)).find((e) => e.uid === uid);
  } catch {
    return undefined;
  }
}

/** The entry with this name, as getpwnam(3) (from `passwdFile` when given). */
export function getpwnam(name: string, passwdFile?: string): PasswdEntry | undefined {
  if (passwdFile === undefined) return nssGetpwnam(name);
  try {
    return parsePasswd(read(passwdFile)).find((e) => e.name === name);
  } catch {
    return undefined;
  }
}

/** A user by name or number: a name first (a user may be called "1000"), then a uid. */
export function lookupUser(nameOrUid: string, passwdFile?: string): PasswdEntry | undefined {
  const byName = getpwnam(nameOrUid, passwdFile);
  if (byName) return byName;
  const uid = parseId(nameOrUid);
  return uid === undefined ? undefined : getpwuid(uid, passwdFile);
}

/** A group's gid by name (or a numeric gid), as getgrnam(3); undefined when there is none. */
export function getgrnam(name: string, groupFile?: string): number | undefined {
  const numeric = parseId(name);
  if (numeric !== undefined) return numeric;
  if (groupFile === undefined) return nssGetgrnam(name);
  return parseGroup(read(groupFile)).find((g) => g.name === name)?.gid;
}

/** What initgroups(3) would give `user`: the primary gid plus every group listing the user. */
export function groupsOf(user: PasswdEntry, groupFile?: string): number[] {
  if (groupFile === undefined) return nssGrouplist(user.name, user.gid);
  const listed = parseGroup(read(groupFile)).filter((g) => g.members.includes(user.name)).map((g) => g.gid);
  return [...new Set([user.gid, ...listed])];
}
