import os from 'node:os';
import { TapdError } from './tapd-error.js';

const errnoNames = new Map<number, string>(
  Object.entries(os.constants.errno).map(([name, code]) => [code, name]),
);

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
