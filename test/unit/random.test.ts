// Random bytes for MACs, TAP names and lease ids come from getrandom(2) (src/sys/random.ts).
import { describe, expect, it } from 'vitest';
import { Mac } from '../../src/sys/mac.js';
import { randomBytes } from '../../src/sys/random.js';

describe('random bytes from getrandom(2)', () => {
  it('fills exactly the length asked for, differently each time', () => {
    for (const n of [0, 1, 6, 8, 300]) expect(randomBytes(n).length).toBe(n);
    const seen = new Set(Array.from({ length: 64 }, () => randomBytes(8).toString('hex')));
    expect(seen.size).toBe(64);
    // Every bit position takes both values over 64 draws of 8 bytes (a stuck bit would not).
    const or = Buffer.alloc(8);
    const and = Buffer.alloc(8, 0xff);
    for (let i = 0; i < 64; i++) {
      const b = randomBytes(8);
      for (let j = 0; j < 8; j++) {
        or[j]! |= b[j]!;
        and[j]! &= b[j]!;
      }
    }
    expect(or.toString('hex')).toBe('ff'.repeat(8));
    expect(and.toString('hex')).toBe('00'.repeat(8));
  });

  it('never hands out the same bytes twice, across pool refills and past the pool size', () => {
    // 8-byte draws over three pools' worth: a refill that reused or skipped a region would repeat.
    const seen = new Set(Array.from({ length: 1600 }, () => randomBytes(8).toString('hex')));
    expect(seen.size).toBe(1600);
    const big = randomBytes(5000);
    expect(big.length).toBe(5000);
    expect(new Set(Array.from({ length: 625 }, (_, i) => big.subarray(i * 8, i * 8 + 8).toString('hex'))).size).toBe(625);
    // Odd sizes straddle the pool's end: every result is its own copy, not a view of the pool.
    const a = randomBytes(4093);
    const b = randomBytes(7);
    expect(a.buffer).not.toBe(b.buffer);
    expect(b.equals(Buffer.alloc(7))).toBe(false);
  });

  it('a random MAC keeps its prefix, or is unicast and locally administered without one', () => {
    for (let i = 0; i < 32; i++) {
      expect(Mac.random([0x52, 0x54, 0x00]).toString()).toMatch(/^52:54:00(:[0-9a-f]{2}){3}$/);
      const b = Mac.parse(Mac.random().toString()).bytes;
      expect(b[0]! & 0x03).toBe(0x02);
    }
  });
});
