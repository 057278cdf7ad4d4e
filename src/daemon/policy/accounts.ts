import { readFileSync } from 'node:fs';
import { parseGroup, parsePasswd } from '../../common/accounts.js';

/**
 * User and group names, read from the passwd and group files (never through a shell or NSS
 * helper). Users that exist only in LDAP/SSSD are not found here: name them by number.
 */
export interface AccountFiles {
  passwdFile: string;
  groupFile: string;
}

export type Lookup = { id: number } | { id?: undefined; error: string };

export class Accounts {
  private users: Map<string, number> | string | undefined;
  private groups: Map<string, number> | string | undefined;

  constructor(private readonly files: AccountFiles) {}

  user(name: string): Lookup {
    this.users ??= load(this.files.passwdFile, (t) => parsePasswd(t).map((u) => ({ name: u.name, id: u.uid })));
    return lookup(this.users, name, 'user', this.files.passwdFile);
  }

  group(name: string): Lookup {
    this.groups ??= load(this.files.groupFile, (t) => parseGroup(t).map((g) => ({ name: g.name, id: g.gid })));
    return lookup(this.groups, name, 'group', this.files.groupFile);
  }
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
