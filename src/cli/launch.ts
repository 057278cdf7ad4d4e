// Starting the emulator with its TAP fds at 3, 4, ..., then living exactly as long as it does:
// signals forwarded, its exit status ours, our copies of the fds closed as soon as it has its own.
import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import * as sys from '../sys/index.js';
import { LaunchError } from './launch-error.js';

export const FORWARDED_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

export interface LaunchOptions {
  file: string;
  args: string[];
  /** Our fds (CLOEXEC); the child gets them at 3, 4, ... in this order. Always closed here. */
  tapFds: number[];
  env?: NodeJS.ProcessEnv;
}

/** The shell's convention: an exit code as is, a signal as 128 + its number. */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const n = signal === null ? undefined : constants.signals[signal];
  return 128 + (n ?? 0);
}

function startFailure(file: string, err: NodeJS.ErrnoException): LaunchError {
  switch (err.code) {
    case 'ENOENT':
      return new LaunchError(127, `cannot run ${file}: not found${file.includes('/') ? '' : ' in PATH'}`, { cause: err });
    case 'EACCES':
    case 'EPERM':
    case 'ENOEXEC':
    case 'EISDIR':
      return new LaunchError(126, `cannot run ${file}: ${err.code === 'EISDIR' ? 'is a directory' : 'permission denied or not executable'}`, { cause: err });
    default:
      return new LaunchError(125, `cannot run ${file}: ${err.message}`, { cause: err });
  }
}

/** Resolves with the child's 'spawn' (it is running) or rejects with why it never ran. */
function started(child: ChildProcess, file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (err: NodeJS.ErrnoException) => reject(startFailure(file, err)));
  });
}

/**
 * Runs `file args` with the TAP fds and waits for it. Returns the status tapctl should exit with.
 * The child stays in our process group and session (terminal job control works as usual) and
 * shares our stdio, so it outlives us if we are killed: nothing it holds is tied to our lifetime.
 */
export async function launch(opts: LaunchOptions): Promise<number> {
  let child: ChildProcess;
  try {
    sys.closeOnExecAll();
    child = spawn(opts.file, opts.args, {
      stdio: ['inherit', 'inherit', 'inherit', ...opts.tapFds],
      env: opts.env ?? process.env,
    });
  } catch (err) {
    throw startFailure(opts.file, err as NodeJS.ErrnoException);
  } finally {
    // The child has its own copies now (or never will): ours would keep the lease alive after it exits.
    sys.closeAll(opts.tapFds.splice(0));
  }
  const exited = new Promise<number>((resolve) => {
    child.once('exit', (code, signal) => resolve(exitStatus(code, signal)));
  });
  const forward = (signal: NodeJS.Signals) => {
    try {
      child.kill(signal);
    } catch {
      // Already gone: its exit is on its way.
    }
  };
  for (const s of FORWARDED_SIGNALS) process.on(s, forward);
  try {
    await started(child, opts.file);
    return await exited;
  } finally {
    for (const s of FORWARDED_SIGNALS) process.off(s, forward);
  }
}
