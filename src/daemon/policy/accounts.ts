import { readFileSync } from 'node:fs';
import { getgrnam, getpwnam, parseGroup, parsePasswd } from '../../common/accounts.js';

/**
 * Where user and group names in the config are looked up: through NSS (libc's getpwnam and
 * getgrnam: /etc/passwd, LDAP, SSSD, whatever nsswitch.conf says), or, when files are given
 * (tests), in those files only. Never through a shell or helper.
 */
export interface AccountFiles {
  passwdFile?: string;
  groupFile?: string;
}

export type Lookup = { id: number } | { id?: undefined; error: string };

export class Accounts {
  private users: Map<string, number> | string | undefined;
  private groups: Map<string, number> | string | undefined;

  constructor(private readonly files: AccountFiles) {}

  user(name: string): Lookup {
    const file = this.files.passwdFile;
    if (file === undefined) return nss(getpwnam(name)?.uid, name, 'user');
    this.users ??= load(file, (t) => parsePasswd(t).map((u) => ({ name: u.name, id: u.uid })));
    return lookup(this.users, name, 'user', file);
  }

  group(name: string): Lookup {
    const file = this.files.groupFile;
    if (file === undefined) return nss(getgrnam(name), name, 'group');
    this.groups ??= load(file, (t) => parseGroup(t).map((g) => ({ name: g.name, id: g.gid })));
    return lookup(this.groups, name, 'group', file);
  }
}

function nss(id: number | undefined, name: string, what: string): Lookup {
  return id === undefined ? { error: `unknown ${what} "${name}" (not known to the system's accounts, NSS; names are matched exactly)` } : { id };
}

/** name -> id; the first entry of a name wins, as getpwnam(3) and getgrnam(3). */
function load(file: string, parse: (text: string) => Array<{ name: string; id: number }>): Map<string, number> | string {
  try {
    const ids = new Map<string, number>();
    for (const e of parse(readFileSync(file, 'utf8'))) if (!ids.has(e.name)) ids.set(e.name, e.id);
    return ids;
  } catch (e) {
    return `cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? String(e)})`;
  }
}

function lookup(table: Map<string, number> | string, name: string, what: string, file: string): Lookup {
  if (typeof table === 'string') return { error: `cannot look up ${what} "${name}": ${table}` };
  const id = table.get(name);
  if (id === undefined) {
    return { error: `unknown ${what} "${name}" (not in ${file}; names are matched exactly; for accounts from LDAP/SSSD use the numeric id)` };
  }
  return { id };
}
