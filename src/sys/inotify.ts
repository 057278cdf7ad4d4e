// Open and close events of files (macvtap character devices), from inotify. A macvtap device
// outlives its fds, so its lease ends when the last open file of its node is released: the
// kernel reports IN_CLOSE_* once per open file, at its final close, wherever its fds went
// (SCM_RIGHTS, fork, dup all share one open file).
import { C, LAYOUT } from './constants.js';
import { sysClose, sysInotifyAddWatch, sysInotifyInit, sysInotifyRmWatch, sysRead } from './libc.js';
import { SystemError } from '../errors/system-error.js';

export interface FileEvents {
  wd: number;
  opened: number;
  closed: number;
}

export class OpenCloseWatch {
  private fd = -1;
  private readonly buf = Buffer.alloc(64 * 1024);

  private ensure(): number {
    if (this.fd < 0) this.fd = sysInotifyInit(C.IN_NONBLOCK | C.IN_CLOEXEC, { action: 'open inotify' });
    return this.fd;
  }

  /** Watches opens and final closes of `path`'s inode. Two paths of one inode share a wd. */
  add(path: string): number {
    return sysInotifyAddWatch(this.ensure(), path, C.IN_OPEN | C.IN_CLOSE_WRITE | C.IN_CLOSE_NOWRITE, { action: `watch ${path}`, device: path });
  }

  remove(wd: number): void {
    if (this.fd >= 0) sysInotifyRmWatch(this.fd, wd);
  }

  /**
   * Reads every queued event without blocking: per watch, how many opens and final closes, in
   * the kernel's order (an open is always reported before its close). `overflow`: some were lost.
   */
  drain(): { events: Map<number, FileEvents>; overflow: boolean } {
    const events = new Map<number, FileEvents>();
    let overflow = false;
    if (this.fd < 0) return { events, overflow };
    for (;;) {
      let n: number;
      try {
        n = sysRead(this.fd, this.buf, { action: 'read inotify events' });
      } catch (err) {
        if (err instanceof SystemError && (err.errno === C.EAGAIN || err.errno === C.EINTR)) break;
        throw err;
      }
      for (let off = 0; off + LAYOUT['sizeof struct inotify_event'] <= n;) {
        const wd = this.buf.readInt32LE(off + LAYOUT['inotify_event.wd']);
        const mask = this.buf.readUInt32LE(off + LAYOUT['inotify_event.mask']);
        off += LAYOUT['sizeof struct inotify_event'] + this.buf.readUInt32LE(off + LAYOUT['inotify_event.len']);
        if (mask & C.IN_Q_OVERFLOW) overflow = true;
        if (wd < 0) continue;
        const e = events.get(wd) ?? { wd, opened: 0, closed: 0 };
        if (mask & C.IN_OPEN) e.opened++;
        if (mask & (C.IN_CLOSE_WRITE | C.IN_CLOSE_NOWRITE)) e.closed++;
        events.set(wd, e);
      }
    }
    return { events, overflow };
  }

  close(): void {
    if (this.fd >= 0) sysClose(this.fd);
    this.fd = -1;
  }
}
