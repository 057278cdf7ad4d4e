// Runs on a worker thread: blocks in recv() on an rtnetlink socket and posts what the daemon
// must act on: every device deletion, and every state report of a tun/tap device (its holder
// can change persist, owner, group and MAC through its fd). A blocking read would stall the
// daemon's event loop, and libuv cannot poll a netlink fd for us.
import { parentPort, workerData } from 'node:worker_threads';
import { C, LAYOUT } from './constants.js';
import { SystemError } from '../errors/system-error.js';
import { sysRecv } from './libc.js';
import { parseLink } from './rtnetlink.js';

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
    const body = buf.subarray(off + LAYOUT['sizeof struct nlmsghdr'], off + len);
    // AF_BRIDGE messages only speak of a port's bridge side; the device itself is AF_UNSPEC.
    const family = body.length > 0 ? body.readUInt8(LAYOUT['ifinfomsg.ifi_family']) : -1;
    if (family === C.AF_UNSPEC && type === C.RTM_DELLINK) {
      parentPort!.postMessage({ kind: 'gone', ifindex: body.readInt32LE(LAYOUT['ifinfomsg.ifi_index']) });
    } else if (family === C.AF_UNSPEC && type === C.RTM_NEWLINK) {
      const link = parseLink(body);
      if (link?.tun) {
        parentPort!.postMessage({ kind: 'tun', ifindex: link.ifindex, ifname: link.ifname, address: link.address?.toString(), tun: link.tun });
      } else if (link?.kind === 'macvtap') {
        parentPort!.postMessage({ kind: 'changed', ifindex: link.ifindex });
      }
    }
    off += (len + 3) & ~3;
  }
}
