import os from 'node:os';
import { TapdError } from './tapd-error.js';

// Several names share a number (EAGAIN/EWOULDBLOCK, EDEADLK/EDEADLOCK): the first listed, the
// classic one, wins.
const errnoNames = new Map<number, string>();
for (const [name, code] of Object.entries(os.constants.errno)) if (!errnoNames.has(code)) errnoNames.set(code, name);

/** libc's strerror text as ffi-rs reports it, without the "(os error N)" suffix. */
function describe(fallback: string): string {
  return fallback.replace(/ \(os error \d+\)$/, '').toLowerCase();
}

/**
 * A failed system call. `message` reads like "add tap3 to bridge br0: EBUSY (device or resource busy)":
 * what we were doing, the errno name, and the kernel's words.
 */
export class SystemError extends TapdError {
  readonly syscall: string;
  readonly errno: number;
  readonly errnoName: string;
  readonly device: string | undefined;

  constructor(action: string, syscall: string, errno: number, errnoText: string, device?: string) {
    const errnoName = errnoNames.get(errno) ?? `errno ${errno}`;
    super('system_error', `${action}: ${errnoName} (${describe(errnoText)})`);
    this.syscall = syscall;
    this.errno = errno;
    this.errnoName = errnoName;
    this.device = device;
  }
}
