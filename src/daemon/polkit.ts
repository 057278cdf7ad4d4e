// Asks polkit whether a peer process may do something, for rules with the `polkit` option.
import { execFile } from 'node:child_process';
import { stillConnectedProcess, type BoundProcess } from './peer.js';

/** Opening a TAP under a tapd.conf rule that has the `polkit` option. */
export const POLKIT_ACTION_OPEN = 'org.tapd.open';
/** Administrative requests: revoke, reload, another user's leases. */
export const POLKIT_ACTION_ADMIN = 'org.tapd.admin';

const PKCHECK = '/usr/bin/pkcheck';
const TIMEOUT_MS = 5000;

export { parseStartTime } from './peer.js';

export interface PolkitOptions {
  /** The pkcheck binary (default /usr/bin/pkcheck). */
  pkcheck?: string;
  /** Kill pkcheck and answer no after this many ms (default 5000). */
  timeoutMs?: number;
}

/** The process polkit is asked about: as identifyPeer bound it, and the peer's uid. */
export interface PolkitSubject extends BoundProcess {
  uid: number;
}

/**
 * Does polkit authorize `actionId` for the process that connected (`subject`, from identifyPeer)?
 *
 * The process is named to polkit as PID,START_TIME,UID with the start time identifyPeer captured,
 * never one read now: a pid can be reused by another process between connect() and the check
 * (CVE-2013-4288), and polkitd refuses a subject whose start time no longer matches. Before
 * asking, and again after polkit said yes, the pidfd must still show the same pid: then the pid
 * number was the connecting process's throughout polkit's look at it. A subject with no start
 * time (not bound: gone when identified), a process that is gone or a zombie: no.
 *
 * Never asks for interaction (no --allow-user-interaction): an "auth_*" answer is a no. pkcheck
 * runs from argv (no shell) with a clean environment and a timeout. Exit status 0 means yes;
 * anything else, including errors, means no.
 */
export async function polkitAllows(subject: PolkitSubject, actionId: string, opts: PolkitOptions = {}): Promise<boolean> {
  const { pid, uid, startTime } = subject;
  if (!Number.isSafeInteger(pid) || pid <= 0 || !Number.isSafeInteger(uid) || uid < 0 || uid > 0xfffffffe) return false;
  if (startTime === undefined || !/^[0-9]{1,20}$/.test(startTime)) return false;
  if (!/^[A-Za-z0-9][A-Za-z0-9.-]*$/.test(actionId)) return false;
  if (!stillConnectedProcess(subject)) return false;
  const yes = await new Promise<boolean>((resolve) => {
    execFile(
      opts.pkcheck ?? PKCHECK,
      ['--action-id', actionId, '--process', `${pid},${startTime},${uid}`],
      {
        env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
        timeout: opts.timeoutMs ?? TIMEOUT_MS,
        killSignal: 'SIGKILL',
        maxBuffer: 64 * 1024,
        windowsHide: true,
      },
      (err) => resolve(err === null),
    );
  });
  // polkitd looked the pid up while we waited: the answer is about our process only if it still is.
  return yes && stillConnectedProcess(subject);
}
