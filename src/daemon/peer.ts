// Who connected: the kernel's credentials for the peer, and the connecting PROCESS bound to them.
//
// A pid alone names whoever holds that number now. A client can connect, hand the socket to a
// child and exit; once its pid is reaped the number can go to another process (CVE-2013-4288
// class). So we take a pidfd for the process that called connect() (SO_PEERPIDFD: the kernel
// keeps its struct pid from connect() on, so this can wait until the request is in), read its
// start time, and confirm through the pidfd that the pid was still the connecting process's when
// we read it. Later checks (polkit) ask about pid+start time and recheck the pidfd.
import { readFileSync } from 'node:fs';
import * as sys from '../sys/index.js';
import type { Subject } from './policy/types.js';

/** The fields of /proc/PID/stat tapd uses. */
export interface ProcStat {
  /** Field 3: R, S, D, Z (zombie), X (dead), ... */
  state: string;
  /** Field 22: start time in clock ticks since boot, as a decimal string (it may exceed 2^53). */
  startTime: string;
}

/**
 * Parses a /proc/PID/stat line. Field 2, the command name, is chosen by the process (it is the
 * basename it was exec'd as, or prctl(PR_SET_NAME)) and may contain blanks, parentheses, digits
 * and newlines, so fields are counted after the LAST ")". Returns undefined if the line does not
 * look like /proc/PID/stat.
 */
export function parseStat(stat: string): ProcStat | undefined {
  const close = stat.lastIndexOf(')');
  if (close < 0 || stat.indexOf('(') < 0 || stat.indexOf('(') > close) return undefined;
  const fields = stat.slice(close + 1).trim().split(/\s+/);
  const state = fields[0]; // field 3
  const start = fields[22 - 3];
  if (state === undefined || !/^[A-Za-z]$/.test(state)) return undefined;
  if (start === undefined || !/^[0-9]+$/.test(start)) return undefined;
  return { state, startTime: start };
}

/** Field 22 of /proc/PID/stat (see parseStat). */
export function parseStartTime(stat: string): string | undefined {
  return parseStat(stat)?.startTime;
}

/** /proc/PID/stat of a live (not zombie, not dead) process, or undefined. */
function liveStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const st = parseStat(text);
  // A zombie can no longer act: whoever sends on its socket now is somebody else.
  return st === undefined || st.state === 'Z' || st.state === 'X' ? undefined : st;
}

/** The connecting process as identifyPeer bound it. */
export interface BoundProcess {
  pid: number;
  /** Start time captured by identifyPeer; undefined: the connecting process could not be bound (gone). */
  startTime?: string;
  /** pidfd of the connecting process (SO_PEERPIDFD); undefined on kernels without it. */
  pidfd?: number;
}

/** A peer from identifyPeer: a Subject that owns a pidfd until close(). */
export interface IdentifiedPeer extends Subject {
  readonly startTime: string | undefined;
  readonly pidfd: number | undefined;
  /** How the process was bound: through a pidfd, by pid + start time (at accept), or not at all (it was gone). */
  readonly binding: 'pidfd' | 'pid-start' | 'none';
  /** Closes the pidfd (startTime and pidfd read undefined from then on). Call when the connection closes; idempotent. */
  close(): void;
}

export interface IdentifyOptions {
  /** Use SO_PEERPIDFD when the kernel has it (default true; false tests the fallback). */
  pidfd?: boolean;
}

/**
 * Identifies the peer of a connected Unix stream socket. With SO_PEERPIDFD, any time before the
 * first check that needs the process (the server calls it once the request is in); without it,
 * right at accept (the fallback reads /proc/PID/stat now).
 *
 * uid/gid/pid are SO_PEERCRED and groups SO_PEERGROUPS (all recorded by the kernel at connect()).
 * With SO_PEERPIDFD (Linux 6.5+): pid is confirmed through the pidfd, and startTime is read from
 * /proc/PID/stat between two pidfd checks, so it is the connecting process's own start time even
 * if the pid is being reused. Without it (ENOPROTOOPT) startTime is read from /proc/PID/stat now,
 * which is only as good as the gap between connect() and accept. If the connecting process is
 * already gone (exited, zombie), startTime is undefined and polkitAllows will say no; uid-based
 * policy still works from the credentials. Throws SystemError when the credentials cannot be read.
 */
export function identifyPeer(sockFd: number, opts: IdentifyOptions = {}): IdentifiedPeer {
  const cred = sys.peerCred(sockFd);
  const groups = sys.peerGroups(sockFd);
  let pidfd: number | undefined;
  let startTime: string | undefined;
  let binding: IdentifiedPeer['binding'] = 'none';
  const got: sys.PeerPidfd = opts.pidfd === false ? { kind: 'unsupported' } : sys.peerPidfd(sockFd);
  if (got.kind === 'pidfd') {
    const before = sys.pidfdPid(got.fd);
    const st = before === cred.pid ? liveStat(cred.pid) : undefined;
    // Still attached after the read: the pid number was never freed, so the stat was ours.
    if (st !== undefined && sys.pidfdPid(got.fd) === cred.pid) {
      pidfd = got.fd;
      startTime = st.startTime;
      binding = 'pidfd';
    } else {
      sys.closeFd(got.fd);
    }
  } else if (got.kind === 'unsupported' && cred.pid > 0) {
    const st = liveStat(cred.pid);
    if (st !== undefined) {
      startTime = st.startTime;
      binding = 'pid-start';
    }
  }
  let closed = false;
  return {
    uid: cred.uid,
    gid: cred.gid,
    groups,
    pid: cred.pid,
    // After close() the fd number may belong to something else: the binding is gone with it.
    get startTime() {
      return closed ? undefined : startTime;
    },
    get pidfd() {
      return closed ? undefined : pidfd;
    },
    binding,
    close(): void {
      if (closed) return;
      closed = true;
      if (pidfd !== undefined) sys.closeFd(pidfd);
    },
  };
}

/**
 * Is the process identifyPeer bound still there, and still the holder of its pid? With a pidfd:
 * the pidfd still shows the same pid before and after reading /proc/PID/stat (so the number has
 * not been freed, let alone reused), the process is not a zombie, and its start time is the one
 * identifyPeer read. Without a pidfd: the start time matches (a reuser started later, so it differs
 * unless it started within the same clock tick). No start time: no.
 */
export function stillConnectedProcess(p: BoundProcess): boolean {
  if (p.startTime === undefined || !Number.isSafeInteger(p.pid) || p.pid <= 0) return false;
  if (p.pidfd !== undefined && sys.pidfdPid(p.pidfd) !== p.pid) return false;
  const st = liveStat(p.pid);
  if (st === undefined || st.startTime !== p.startTime) return false;
  return p.pidfd === undefined || sys.pidfdPid(p.pidfd) === p.pid;
}

/**
 * The parent of the process that connected (QEMU, when the peer is its bridge helper), read while
 * the peer is provably still that process; undefined when it cannot be told.
 */
export function parentOf(p: BoundProcess): number | undefined {
  if (!stillConnectedProcess(p)) return undefined;
  let status: string;
  try {
    status = readFileSync(`/proc/${p.pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const ppid = /^PPid:\s+(\d+)$/m.exec(status)?.[1];
  // Read between two checks, as the start time is: the status was the connecting process's.
  return ppid !== undefined && stillConnectedProcess(p) ? Number(ppid) : undefined;
}
