// sudo support: `sudo tapctl qemu ...` asks tapd on behalf of SUDO_UID and runs the emulator as
// that user (with that user's groups), never as root.
import { LaunchError } from './launch-error.js';
import { getpwuid } from '../common/accounts.js';

export interface SudoUser {
  uid: number;
  gid: number;
  name: string;
  home: string;
}

/** The user sudo ran us for, when we are root with SUDO_UID/SUDO_GID set (and not root's own). */
export function sudoUser(env: NodeJS.ProcessEnv = process.env, euid = process.geteuid?.() ?? -1): SudoUser | undefined {
  if (euid !== 0) return undefined;
  const rawUid = env.SUDO_UID;
  if (rawUid === undefined || rawUid === '') return undefined;
  if (!/^\d+$/.test(rawUid)) throw new LaunchError(125, `SUDO_UID="${rawUid}" is not a uid`);
  const uid = Number(rawUid);
  if (uid === 0) return undefined;
  const rawGid = env.SUDO_GID;
  const entry = getpwuid(uid);
  if (rawGid !== undefined && rawGid !== '' && !/^\d+$/.test(rawGid)) throw new LaunchError(125, `SUDO_GID="${rawGid}" is not a gid`);
  const gid = rawGid !== undefined && rawGid !== '' ? Number(rawGid) : entry?.gid;
  if (gid === undefined) throw new LaunchError(125, `SUDO_UID=${uid} has no entry in /etc/passwd and SUDO_GID is not set`);
  return { uid, gid, name: entry?.name ?? String(uid), home: entry?.home ?? '/' };
}

/**
 * Becomes `user` for good: supplementary groups from /etc/group (initgroups), then gid, then
 * uid (the order matters: after setuid we could no longer change groups). Verified afterwards.
 */
export function becomeUser(user: SudoUser): void {
  try {
    // process.initgroups exists on POSIX Node but is missing from @types/node.
    const proc = process as typeof process & { initgroups: (user: string | number, extraGroup: number) => void };
    proc.initgroups(user.name === String(user.uid) ? user.uid : user.name, user.gid);
    process.setgid!(user.gid);
    process.setuid!(user.uid);
  } catch (err) {
    throw new LaunchError(125, `cannot switch to user ${user.name} (uid ${user.uid}): ${(err as Error).message}`, { cause: err });
  }
  if (process.getuid!() !== user.uid || process.geteuid!() !== user.uid || process.getegid!() !== user.gid) {
    throw new LaunchError(125, `switching to uid ${user.uid} did not take effect; not starting anything as root`);
  }
  process.env.HOME = user.home;
  process.env.USER = user.name;
  process.env.LOGNAME = user.name;
}
