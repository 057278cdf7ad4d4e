// Random bytes from getrandom(2), the source node:crypto's randomBytes reads too. Not node:crypto
// itself: loading it costs the daemon's start-up some 4 ms (about twenty internal modules that
// --jitless compiled from source at every start), and random names and MACs are all it needs.
//
// Read a pool at a time: an open takes three draws (lease id, TAP name, MAC), and a call through
// ffi-rs costs far more than the kernel's work for a few bytes. A byte is handed out once, and
// zeroed in the pool when it is.
import { sysGetrandom } from './libc.js';

const POOL_BYTES = 4096;
const pool = Buffer.alloc(POOL_BYTES);
let next = POOL_BYTES;

export function randomBytes(n: number): Buffer {
  const out = Buffer.alloc(n);
  if (n > POOL_BYTES) {
    sysGetrandom(out, { action: 'read random bytes' });
    return out;
  }
  if (POOL_BYTES - next < n) {
    sysGetrandom(pool, { action: 'read random bytes' });
    next = 0;
  }
  pool.copy(out, 0, next, next + n);
  pool.fill(0, next, next + n);
  next += n;
  return out;
}
