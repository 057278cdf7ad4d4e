// Node opens its own fds O_CLOEXEC, but a parent (a shell, a test runner, a service manager) may
// have left us fds without it. Nothing of those may reach a hook (the daemon) or an emulator
// (tapctl): mark them all.
import { readdirSync } from 'node:fs';
import { C } from './constants.js';
import { sysFcntl } from './libc.js';

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
      const flags = sysFcntl(fd, C.F_GETFD, 0, CTX);
      if ((flags & C.FD_CLOEXEC) === 0) {
        sysFcntl(fd, C.F_SETFD, flags | C.FD_CLOEXEC, CTX);
        changed.push(fd);
      }
    } catch {
      // The directory listing's own fd, already closed: nothing to do.
    }
  }
  return changed;
}
