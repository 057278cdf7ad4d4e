// Framing: a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
// The length is checked against a fixed cap before a single body byte is kept or parsed.
import { TapdError } from '../errors/tapd-error.js';

export const HEADER_BYTES = 4;
/** Requests are tiny; anything bigger is hostile or broken. */
export const MAX_REQUEST_BYTES = 4096;
/** Replies can list every lease (1024 × ~250 bytes). */
export const MAX_REPLY_BYTES = 1024 * 1024;

export function encodeFrame(message: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  const frame = Buffer.alloc(HEADER_BYTES + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, HEADER_BYTES);
  return frame;
}

/** Accumulates bytes from a stream and yields whole frame bodies. */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly maxBytes: number) {}

  get pendingBytes(): number {
    return this.buffered;
  }

  /** Adds bytes; returns the complete bodies now available. Throws on a bad length. */
  push(data: Buffer): Buffer[] {
    this.chunks.push(data);
    this.buffered += data.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.buffered < HEADER_BYTES) break;
      const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
      this.chunks = [all];
      const length = all.readUInt32BE(0);
      if (length === 0) throw new TapdError('bad_frame', 'empty frame');
      if (length > this.maxBytes) {
        throw new TapdError('frame_too_large', `frame of ${length} bytes is over the limit of ${this.maxBytes}`);
      }
      if (all.length < HEADER_BYTES + length) break;
      out.push(all.subarray(HEADER_BYTES, HEADER_BYTES + length));
      const rest = all.subarray(HEADER_BYTES + length);
      this.chunks = rest.length ? [rest] : [];
      this.buffered = rest.length;
    }
    return out;
  }
}

/** Strict JSON: well-formed UTF-8 and a single object at the top. */
export function parseJsonObject(body: Buffer): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw new TapdError('bad_request', 'request is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new TapdError('bad_request', 'request is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TapdError('bad_request', 'request must be a JSON object');
  }
  return value as Record<string, unknown>;
}
