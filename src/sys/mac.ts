import { randomBytes } from './random.js';
import { InvalidMacError } from '../errors/invalid-mac-error.js';

/** A 48-bit Ethernet address. */
export class Mac {
  private constructor(readonly bytes: Buffer) {}

  /** Parse `52:54:00:12:34:56` (colon-separated, 2 hex digits each). */
  static parse(text: string): Mac {
    if (typeof text !== 'string' || !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(text)) {
      throw new InvalidMacError(`MAC address ${JSON.stringify(text)} is not of the form 52:54:00:12:34:56`);
    }
    return new Mac(Buffer.from(text.split(':').map((h) => parseInt(h, 16))));
  }

  /**
   * A random unicast address. With a prefix (QEMU's 52:54:00 for guests) only the rest is
   * random; without one, all of it, with the locally-administered bit set.
   */
  static random(prefix: readonly number[] = []): Mac {
    const b = randomBytes(6);
    if (prefix.length === 0) b[0] = (b[0]! & 0xfc) | 0x02;
    Buffer.from(prefix.slice(0, 6)).copy(b);
    return new Mac(b);
  }

  static fromBytes(bytes: Buffer): Mac {
    if (bytes.length !== 6) throw new InvalidMacError('a MAC address has 6 bytes');
    return new Mac(Buffer.from(bytes));
  }

  get isMulticast(): boolean {
    return (this.bytes[0]! & 0x01) !== 0;
  }

  get isZero(): boolean {
    return this.bytes.every((b) => b === 0);
  }

  get isLocallyAdministered(): boolean {
    return (this.bytes[0]! & 0x02) !== 0;
  }

  /** Byte-wise comparison, the order the Linux bridge uses to pick its address. */
  compare(other: Mac): number {
    return Buffer.compare(this.bytes, other.bytes);
  }

  equals(other: Mac): boolean {
    return this.compare(other) === 0;
  }

  /**
   * The MAC for the host side of a TAP whose guest uses this MAC. A Linux bridge takes the
   * lowest port address as its own; 0xFE as first byte (libvirt, qemu-bridge-helper) keeps TAPs
   * from ever being the lowest, so a VM joining never changes the bridge's address.
   */
  hostSide(): Mac {
    const b = Buffer.from(this.bytes);
    b[0] = 0xfe;
    return new Mac(b);
  }

  toString(): string {
    return [...this.bytes].map((b) => b.toString(16).padStart(2, '0')).join(':');
  }
}
