import { readFileSync } from 'node:fs';

/**
 * User and group names, read from the passwd and group files (never through a shell or NSS
 * helper). Users that exist only in LDAP/SSSD are not found here: name them by number.
 */
export interface AccountFiles {
  passwdFile: string;
  groupFile: string;
}

export type Lookup = { id: number } | { id?: undefined; error: string };

/** name -> id from a colon-separated file whose field 3 is the id; the first entry of a name wins (as getpwnam). */
function parseIdFile(text: string): Map<string, number> {
  const ids = new Map<string, number>();
  for (const line of text.split('\n')) {
    // Skip comments, NIS compat lines (+name, -name) and anything malformed.
    if (line === '' || line.startsWith('#') || line.startsWith('+') || line.startsWith('-')) continue;
    const fields = line.split(':');
    const name = fields[0];
    const id = fields[2];
    if (name === undefined || name === '' || id === undefined || !/^[0-9]{1,10}$/.test(id)) continue;
    const n = Number(id);
    if (n > 0xfffffffe || ids.has(name)) continue;
    ids.set(name, n);
  }
  return ids;
}

export class Accounts {
  private users: Map<string, number> | string | undefined;
  private groups: Map<string, number> | string | undefined;

  constructor(private readonly files: AccountFiles) {}

  user(name: string): Lookup {
    this.users ??= load(this.files.passwdFile);
    return lookup(this.users, name, 'user', this.files.passwdFile);
  }

  group(name: string): Lookup {
    this.groups ??= load(this.files.groupFile);
    return lookup(this.groups, name, 'group', this.files.groupFile);
  }
}

function load(file: string): Map<string, number> | string {
  try {
    return parseIdFile(readFileSync(file, 'utf8'));
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
