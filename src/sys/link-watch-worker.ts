// Runs on a worker thread: blocks in recv() on an rtnetlink socket and posts every RTM_DELLINK.
// A blocking read would stall the daemon's event loop, and libuv cannot poll a netlink fd for us.
import { parentPort, workerData } from 'node:worker_threads';
import { C, LAYOUT } from './constants.js';
import { SystemError } from '../errors/system-error.js';
import { sysRecv } from './libc.js';

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
  for (let off = 0; off + LAYOUT['sizeof struct nlmsghdr'] <= n; ) {
    const len = buf.readUInt32LE(off + LAYOUT['nlmsghdr.nlmsg_len']);
    if (len < LAYOUT['sizeof struct nlmsghdr'] || off + len > n) break;
    const type = buf.readUInt16LE(off + LAYOUT['nlmsghdr.nlmsg_type']);
    const body = off + LAYOUT['sizeof struct nlmsghdr'];
    // AF_BRIDGE DELLINKs only say a port left its bridge; the device is gone when family is AF_UNSPEC.
    if (type === C.RTM_DELLINK && buf.readUInt8(body + LAYOUT['ifinfomsg.ifi_family']) === C.AF_UNSPEC) {
      parentPort!.postMessage({ kind: 'gone', ifindex: buf.readInt32LE(body + LAYOUT['ifinfomsg.ifi_index']) });
    }
    off += (len + 3) & ~3;
  }
}
