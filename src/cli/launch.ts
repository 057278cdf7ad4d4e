// tapctl becomes the emulator: execve in place, with its TAP fds at 3, 4, ... and nothing else
// beyond stdio. No resident parent: the lease's pid (the process that connected to tapd) is the
// emulator's, signals reach it directly, its exit status is the shell's, and no Node process
// stays around per VM.
import { accessSync, constants as fsConstants, statSync, writeSync } from 'node:fs';
import path from 'node:path';
import { constants } from 'node:os';
import { SystemError } from '../errors/system-error.js';
import { closeAll } from '../sys/fdpass.js';
import { closeOnExecAll } from '../sys/fds.js';
import { C } from '../sys/constants.js';
import { LIBC_C, sysDup2, sysExecve, sysExit, sysFcntl as fcntl, sysResetSignalsForExec } from '../sys/libc.js';
import { LaunchError } from './launch-error.js';
import { FIRST_CHILD_FD } from './qemu-args.js';

export interface LaunchOptions {
  file: string;
  args: string[];
  /** Our fds (CLOEXEC); the emulator gets them at 3, 4, ... in this order. */
  tapFds: number[];
  env?: NodeJS.ProcessEnv;
}

/** The shell's convention: an exit code as is, a signal as 128 + its number. */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const n = signal === null ? undefined : constants.signals[signal];
  return 128 + (n ?? 0);
}

/** File status flags of stdio as we got them: Node may set O_NONBLOCK on a pipe, the emulator must not inherit that. */
const stdioFlags: (number | undefined)[] = [0, 1, 2].map((fd) => {
  try {
    return fcntl(fd, C.F_GETFL, 0, { action: 'read stdio flags' });
  } catch {
    return undefined;
  }
});

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function canExecute(p: string): boolean {
  try {
    accessSync(p, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** What execvp would run: a name with a slash as is, else the first match in $PATH. */
export function resolveExecutable(file: string, pathVar: string | undefined): string {
  if (file.includes('/')) {
    if (!isFile(file)) {
      try {
        statSync(file);
      } catch {
        throw new LaunchError(127, `cannot run ${file}: not found`);
      }
      throw new LaunchError(126, `cannot run ${file}: is a directory`);
    }
    if (!canExecute(file)) throw new LaunchError(126, `cannot run ${file}: permission denied or not executable`);
    return file;
  }
  let denied: string | undefined;
  for (const dir of (pathVar ?? '/usr/local/bin:/usr/bin:/bin').split(':')) {
    const candidate = path.join(dir === '' ? '.' : dir, file);
    if (!isFile(candidate)) continue;
    if (canExecute(candidate)) return candidate;
    denied ??= candidate;
  }
  if (denied) throw new LaunchError(126, `cannot run ${denied}: permission denied or not executable`);
  throw new LaunchError(127, `cannot run ${file}: not found in PATH`);
}

function failureStatus(err: unknown): 126 | 127 | 125 {
  if (!(err instanceof SystemError)) return 125;
  if (err.errnoName === 'ENOENT' || err.errnoName === 'ENOTDIR') return 127;
  if (['EACCES', 'EPERM', 'ENOEXEC', 'EISDIR', 'ETXTBSY'].includes(err.errnoName)) return 126;
  return 125;
}

/**
 * Replaces this process with `file args`. Everything that can be checked is checked before the
 * fds are moved (a LaunchError then leaves tapctl intact, and the caller reports it). Once the
 * TAPs sit at 3, 4, ..., Node's own fds there are gone, so a failing execve is reported with
 * plain write(2) and _exit(2).
 */
export function execEmulator(opts: LaunchOptions): never {
  const resolved = resolveExecutable(opts.file, (opts.env ?? process.env).PATH);
  const env = Object.entries(opts.env ?? process.env).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`);
  const argv = [opts.file, ...opts.args];
  const ctx = { action: `start ${opts.file}` };
  // Inherited fds without close-on-exec (marked at start-up already; again in case we can still read /proc).
  closeOnExecAll();
  const n = opts.tapFds.length;
  // Out of the way first (above every target and every source), then onto 3, 4, ...: dup2 leaves
  // the new fd without FD_CLOEXEC, every other copy keeps it and goes at exec.
  const floor = Math.max(FIRST_CHILD_FD + n, ...opts.tapFds.map((fd) => fd + 1));
  const high = opts.tapFds.map((fd) => fcntl(fd, LIBC_C.F_DUPFD_CLOEXEC, floor, ctx));
  closeAll(opts.tapFds.splice(0));
  high.forEach((fd, i) => sysDup2(fd, FIRST_CHILD_FD + i, ctx));
  // Node marks stdio close-on-exec and may make it non-blocking: the emulator gets it as we did.
  stdioFlags.forEach((flags, fd) => {
    if (flags === undefined) return;
    try {
      fcntl(fd, LIBC_C.F_SETFL, flags, ctx);
      fcntl(fd, C.F_SETFD, 0, ctx);
    } catch {
      // A closed stdio fd stays closed.
    }
  });
  sysResetSignalsForExec(ctx);
  try {
    sysExecve(resolved, argv, env, ctx);
  } catch (first) {
    let err = first;
    if (err instanceof SystemError && err.errnoName === 'ENOEXEC') {
      // execvp's fallback: a script without #! is run by the shell.
      try {
        sysExecve('/bin/sh', ['sh', resolved, ...opts.args], env, ctx);
      } catch (again) {
        err = again;
      }
    }
    writeSync(2, `tapctl: ${err instanceof Error ? err.message : String(err)}\n`);
    sysExit(failureStatus(err));
  }
}

