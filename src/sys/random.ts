// Random bytes from getrandom(2), the source node:crypto's randomBytes reads too. Not node:crypto
// itself: loading it costs the daemon's start-up some 4 ms (about twenty internal modules that
// --jitless compiles from source at every start), and random names and MACs are all it needs.
import { sysGetrandom } from './libc.js';

export function randomBytes(n: number): Buffer {
  const b = Buffer.alloc(n);
  sysGetrandom(b, { action: 'read random bytes' });
  return b;
}
