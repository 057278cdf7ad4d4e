// Asks polkit whether a peer process may do something, for rules with the `polkit` option.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';

/** Opening a TAP under a tapd.conf rule that has the `polkit` option. */
export const POLKIT_ACTION_OPEN = 'org.tapd.open';
/** Administrative requests (list all leases, release any lease, reload). */
export const POLKIT_ACTION_ADMIN = 'org.tapd.admin';

const PKCHECK = '/usr/bin/pkcheck';
const TIMEOUT_MS = 5000;

/**
 * The start time (field 22 of /proc/PID/stat, in clock ticks since boot) from a stat line.
 * Field 2, the command name, may contain blanks and parentheses, so fields are counted after
 * the LAST ")". Returns undefined if the line does not look like /proc/PID/stat.
 */
export function parseStartTime(stat: string): string | undefined {
  const close = stat.lastIndexOf(')');
  if (close < 0) return undefined;
  const fields = stat.slice(close + 1).trim().split(/\s+/);
  const start = fields[22 - 3]; // fields[0] is field 3 (state)
  return start !== undefined && /^[0-9]+$/.test(start) ? start : undefined;
}

export interface PolkitOptions {
  /** The pkcheck binary (default /usr/bin/pkcheck). */
  pkcheck?: string;
  /** Kill pkcheck and answer no after this many ms (default 5000). */
  timeoutMs?: number;
}

/**
 * Does polkit authorize `actionId` for the process `subject.pid` of user `subject.uid`?
 *
 * Identifies the process as PID,START_TIME,UID, never by bare pid: a pid can be reused by another
 * process between the check and the question (CVE-2013-4288). Never asks for interaction (no
 * --allow-user-interaction): an "auth_*" answer is a no. pkcheck runs from argv (no shell) with
 * a clean environment and a timeout. Exit status 0 means yes; anything else, including errors
 * and a process that has gone away, means no.
 */
export async function polkitAllows(subject: { pid: number; uid: number }, actionId: string, opts: PolkitOptions = {}): Promise<boolean> {
  const { pid, uid } = subject;
  if (!Number.isSafeInteger(pid) || pid <= 0 || !Number.isSafeInteger(uid) || uid < 0 || uid > 0xfffffffe) return false;
  if (!/^[A-Za-z0-9][A-Za-z0-9.-]*$/.test(actionId)) return false;
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  const start = parseStartTime(stat);
  if (start === undefined) return false;
  return new Promise<boolean>((resolve) => {
    execFile(
      opts.pkcheck ?? PKCHECK,
      ['--action-id', actionId, '--process', `${pid},${start},${uid}`],
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
}
