// tapctl's exit statuses, in one place, and how an error maps onto them.
import { DaemonError } from '../client/daemon-error.js';
import { TapdError } from '../errors/tapd-error.js';
import { LaunchError } from './launch-error.js';

export const EXIT = {
  OK: 0,
  /** tapd said no (denied, quota, bad MAC...), `check` said not allowed, or a usage error. */
  REFUSED: 1,
  /** tapd could not be reached: not running, no access to its socket, no answer. */
  UNREACHABLE: 2,
  /** tapctl itself failed before the emulator started. */
  FAILED: 125,
  CANNOT_EXECUTE: 126,
  NOT_FOUND: 127,
} as const;

const UNREACHABLE_CODES = new Set(['not_running', 'no_access', 'timeout', 'protocol', 'system_error']);

export function exitCodeFor(err: unknown): number {
  if (err instanceof LaunchError) return err.exitCode;
  if (err instanceof DaemonError) return EXIT.REFUSED;
  if (err instanceof TapdError) {
    if (err.code === 'usage') return EXIT.REFUSED;
    if (UNREACHABLE_CODES.has(err.code)) return EXIT.UNREACHABLE;
  }
  return EXIT.FAILED;
}

/** The error as one line (tapd's own message verbatim): no stack, no newlines. */
export function errorLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/\s*\n\s*/g, ' ').trim() || 'unknown error';
}

export const EXIT_CODES_HELP = `Exit status:
  0        success (list, status, check allowed, reload)
  1        tapd said no (its message is printed), check said "not allowed", or bad usage
  2        tapd cannot be reached (not running, no access to its socket, no answer)
  125      tapctl failed before starting the emulator or command
  126      the emulator or command was found but cannot be executed
  127      the emulator or command was not found
  other    qemu and run: the emulator's (command's) own exit status;
           128+N if it was killed by signal N (e.g. 143 for SIGTERM)`;
