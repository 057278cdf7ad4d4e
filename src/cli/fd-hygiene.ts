// Nothing but the TAP fds may reach the emulator. Node opens its own fds O_CLOEXEC, but a parent
// (a shell, a test runner, a service manager) may have left us fds without it; mark them all.
import { readdirSync } from 'node:fs';
import * as sys from '../sys/index.js';

const CTX = { action: 'mark inherited fds close-on-exec' };

/** Sets FD_CLOEXEC on every open fd above stderr. Returns the fds that lacked it. */
export function closeOnExecAll(): number[] {
  const changed: number[] = [];
  let names: string[];
  try {
    names = readdirSync('/proc/self/fd');
  } catch {
    return changed;
  }
  for (const name of names) {
    const fd = Number(name);
    if (!Number.isInteger(fd) || fd <= 2) continue;
    try {
      const flags = sys.fcntl(fd, sys.C.F_GETFD, 0, CTX);
      if ((flags & sys.C.FD_CLOEXEC) === 0) {
        sys.fcntl(fd, sys.C.F_SETFD, flags | sys.C.FD_CLOEXEC, CTX);
        changed.push(fd);
      }
    } catch {
      // The directory listing's own fd, already closed: nothing to do.
    }
  }
  return changed;
}
