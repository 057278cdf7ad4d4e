// The fallback reader of src/sys/link-watch.ts, on a worker thread: blocks in recv() on an
// rtnetlink socket and posts the decoded events. Used only where the event loop cannot poll
// the socket (a Node without the pipe binding): a blocking read would stall the daemon.
import { parentPort, workerData } from 'node:worker_threads';
import { C } from './constants.js';
import { SystemError } from '../errors/system-error.js';
import { sysRecv } from './libc.js';
import { decodeLinkEvents } from './link-watch.js';

const { fd, stop } = workerData as { fd: number; stop: SharedArrayBuffer };
const stopFlag = new Int32Array(stop);
const buf = Buffer.alloc(64 * 1024);

while (Atomics.load(stopFlag, 0) === 0) {
  let n: number;
  try {
    n = sysRecv(fd, buf, 0, { action: 'read link events' });
  } catch (err) {
    const errno = err instanceof SystemError ? err.errno : 0;
    if (errno === C.EAGAIN || errno === C.EINTR) continue; // receive timeout: look at the stop flag
    // ENOBUFS: the kernel dropped events. The owner re-checks every lease.
    parentPort!.postMessage({ kind: 'overflow', reason: String((err as Error).message) });
    if (errno === C.ENOBUFS) continue;
    break;
  }
  for (const e of decodeLinkEvents(buf, n)) parentPort!.postMessage(e);
}
