// Fuzzing the daemon's input path: FrameReader → parseJsonObject → decodeRequest, as the server
// runs it on every connection. Streams mix valid requests, mutated ones, random JSON, random bytes
// and random length headers, cut at random chunk boundaries. The properties:
//   - nothing throws but a TapdError with a known code, at the stage that owns that code;
//   - the reader returns exactly the frames a whole-stream reference parser finds, keeps exactly
//     the bytes of the unfinished frame, and refuses a bad header on the very push that completes it;
//   - what it keeps between pushes stays under one header plus the cap (memory does not grow);
//   - whatever decodes is a well-formed Request that says what the message said, and every
//     unmutated valid request decodes to what was sent.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TapdError } from '../../src/errors/tapd-error.js';
import { FrameReader, HEADER_BYTES, MAX_REQUEST_BYTES, parseJsonObject } from '../../src/protocol/frame.js';
import { decodeRequest, MAX_MTU, MAX_QUEUES, MIN_MTU, type Request } from '../../src/protocol/messages.js';

const CAP = MAX_REQUEST_BYTES;
const READER_CODES = new Set(['bad_frame', 'frame_too_large']);
const PARSE_CODES = new Set(['bad_request']);
const DECODE_CODES = new Set(['bad_request', 'bad_version']);
const OPEN_KEYS = ['network', 'mac', 'mtu', 'queues', 'vnet_hdr', 'vhost', 'as_uid', 'progress', 'bridge_helper'];
const PROTO_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf'];

function header(length: number): Buffer {
  const h = Buffer.alloc(HEADER_BYTES);
  h.writeUInt32BE(length >>> 0, 0);
  return h;
}
const framed = (body: Buffer): Buffer => Buffer.concat([header(body.length), body]);

// ---- generators ----

const u32 = (a: number, b: number) => fc.integer({ min: a, max: b });
const openArb = fc.record(
  {
    v: fc.constant(1),
    op: fc.constantFrom('open', 'check'),
    network: fc.string({ minLength: 1, maxLength: 64 }),
    mac: fc.string({ maxLength: 17 }),
    mtu: u32(MIN_MTU, MAX_MTU),
    queues: u32(1, MAX_QUEUES),
    vnet_hdr: fc.boolean(),
    vhost: fc.boolean(),
    as_uid: u32(0, 0xfffffffe),
  },
  { requiredKeys: ['v', 'op', 'network'] },
);
const simpleArb = fc.record({ v: fc.constant(1), op: fc.constantFrom('list', 'status', 'reload', 'networks') });
const validArb: fc.Arbitrary<Record<string, unknown>> = fc.oneof({ arbitrary: openArb, weight: 3 }, { arbitrary: simpleArb, weight: 1 });

const edgeValue = fc.constantFrom<unknown>(
  -1, 0, 1, 16, 17, 67, 68, 65535, 65536, 0xfffffffe, 0xffffffff, 2 ** 53, 1.5, -0, 1e308, '', '1', 'x'.repeat(65),
  null, true, false, [], {}, [1], { v: 1 },
);
const keyArb = fc.oneof(fc.constantFrom('v', 'op', ...OPEN_KEYS, ...PROTO_KEYS), fc.string({ maxLength: 8 }));
const valueArb = fc.oneof(edgeValue, fc.jsonValue({ maxDepth: 2 }));

/** An object-level mutation of a valid request: a key dropped, or a key set to something else. */
const mutatedObjectArb = fc.tuple(validArb, fc.boolean(), keyArb, valueArb).map(([msg, drop, key, value]) => {
  const m: Record<string, unknown> = { ...msg };
  if (drop) {
    const keys = Object.keys(m);
    delete m[keys[key.length % keys.length]!];
  } else {
    // defineProperty, so "__proto__" becomes an own key, as JSON.parse would make it.
    Object.defineProperty(m, key, { value, enumerable: true, configurable: true, writable: true });
  }
  return Buffer.from(JSON.stringify(m), 'utf8');
});

/** A byte-level mutation of a valid request's JSON: a byte changed, inserted or cut, or a key repeated. */
const mutatedBytesArb = fc.tuple(validArb, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('flip', 'insert', 'truncate', 'dup'), keyArb, valueArb)
  .map(([msg, pos, byte, how, key, value]) => {
    const text = Buffer.from(JSON.stringify(msg), 'utf8');
    const i = pos % text.length;
    switch (how) {
      case 'flip': { const b = Buffer.from(text); b[i] = byte; return b; }
      case 'insert': return Buffer.concat([text.subarray(0, i), Buffer.from([byte]), text.subarray(i)]);
      case 'truncate': return text.subarray(0, i);
      case 'dup': return Buffer.concat([text.subarray(0, text.length - 1), Buffer.from(`,${JSON.stringify(key)}:${JSON.stringify(value) ?? 'null'}}`)]);
    }
  });

type Piece = { bytes: Buffer; valid?: Record<string, unknown> };

const pieceArb: fc.Arbitrary<Piece> = fc.oneof(
  { weight: 6, arbitrary: validArb.map((m) => ({ bytes: framed(Buffer.from(JSON.stringify(m), 'utf8')), valid: m })) },
  { weight: 6, arbitrary: mutatedObjectArb.map((b) => ({ bytes: framed(b) })) },
  { weight: 4, arbitrary: mutatedBytesArb.map((b) => ({ bytes: framed(b.length ? b : Buffer.from(' ')) })) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => ({ bytes: framed(Buffer.from(JSON.stringify(v) ?? 'null', 'utf8')) })) },
  { weight: 2, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 200 }).map((b) => ({ bytes: framed(Buffer.from(b)) })) },
  // A body at or near the cap.
  { weight: 1, arbitrary: fc.integer({ min: CAP - 8, max: CAP }).map((n) => ({ bytes: framed(Buffer.alloc(n, 0x20)) })) },
  // A short random length header: it swallows what follows as its body.
  { weight: 1, arbitrary: fc.tuple(u32(1, 64), fc.uint8Array({ maxLength: 64 })).map(([len, tail]) => ({ bytes: Buffer.concat([header(len), Buffer.from(tail)]) })) },
);

/** What may end a stream: a zero or over-cap length, or any length at all, then a few bytes. */
const terminalArb: fc.Arbitrary<Piece> = fc.tuple(
  fc.oneof(fc.constant(0), u32(1, CAP), u32(CAP + 1, 0xffffffff), fc.constantFrom(CAP + 1, 0x80000000, 0xffffffff)),
  fc.uint8Array({ maxLength: 64 }),
).map(([len, tail]) => ({ bytes: Buffer.concat([header(len), Buffer.from(tail)]) }));

/**
 * Chunk sizes, used in turn until the stream is used up: any size (uniform, so most streams
 * take few pushes), small ones, or one byte at a time.
 */
const chunkingArb = fc.oneof(
  { weight: 40, arbitrary: fc.array(fc.noBias(fc.integer({ min: 1, max: 1500 })), { minLength: 1, maxLength: 16 }) },
  { weight: 3, arbitrary: fc.array(fc.integer({ min: 1, max: 16 }), { minLength: 1, maxLength: 16 }) },
  { weight: 1, arbitrary: fc.constant([1]) },
  { weight: 1, arbitrary: fc.constant([1 << 20]) },
);

// ---- the reference: the whole stream at once, no state carried between chunks ----

interface Reference {
  frames: { start: number; end: number }[];
  error?: { code: string; headerEnd: number };
}
function reference(stream: Buffer): Reference {
  const frames: Reference['frames'] = [];
  let pos = 0;
  while (stream.length - pos >= HEADER_BYTES) {
    const len = stream.readUInt32BE(pos);
    if (len === 0) return { frames, error: { code: 'bad_frame', headerEnd: pos + HEADER_BYTES } };
    if (len > CAP) return { frames, error: { code: 'frame_too_large', headerEnd: pos + HEADER_BYTES } };
    if (stream.length - pos - HEADER_BYTES < len) break;
    frames.push({ start: pos, end: pos + HEADER_BYTES + len });
    pos += HEADER_BYTES + len;
  }
  return { frames };
}

// ---- the oracle for a decoded request ----

/** A plain check: `expect` costs too much to call a million times. */
function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(what);
}

function checkSound(r: Request, msg: Record<string, unknown>): void {
  check(msg.v === 1 && msg.op === r.op, `decoded ${r.op} from ${JSON.stringify(msg)}`);
  if (r.op === 'open' || r.op === 'check') {
    check(Object.keys(msg).every((k) => k === 'v' || k === 'op' || OPEN_KEYS.includes(k)), `unknown key accepted in ${JSON.stringify(msg)}`);
    check(Object.keys(r).sort().join() === 'asUid,bridgeHelper,mac,mtu,network,op,progress,queues,vhost,vnetHdr', `request keys ${Object.keys(r).join()}`);
    check(typeof r.network === 'string' && r.network.length <= 64 && r.network === msg.network, 'network');
    check(r.mac === msg.mac && (r.mac === undefined || (typeof r.mac === 'string' && r.mac.length <= 17)), 'mac');
    check(r.mtu === msg.mtu && (r.mtu === undefined || (Number.isInteger(r.mtu) && r.mtu >= MIN_MTU && r.mtu <= MAX_MTU)), 'mtu');
    check(r.queues === (msg.queues ?? 1) && Number.isInteger(r.queues) && r.queues >= 1 && r.queues <= MAX_QUEUES, 'queues');
    check(r.vnetHdr === (msg.vnet_hdr ?? false) && typeof r.vnetHdr === 'boolean', 'vnetHdr');
    check(r.vhost === (msg.vhost ?? false) && typeof r.vhost === 'boolean', 'vhost');
    check(r.asUid === msg.as_uid && (r.asUid === undefined || (Number.isInteger(r.asUid) && r.asUid >= 0 && r.asUid <= 0xfffffffe)), 'asUid');
  } else {
    check(['list', 'status', 'reload', 'networks'].includes(r.op), `op ${r.op}`);
    check(Object.keys(msg).sort().join() === 'op,v', `fields accepted on ${r.op}: ${JSON.stringify(msg)}`);
    check(Object.keys(r).join() === 'op', `request keys ${Object.keys(r).join()}`);
  }
}

/** Runs `fn`; returns its value, or the TapdError it threw, after checking the code is one `codes` allows. */
function stage<T>(codes: Set<string>, fn: () => T): T | TapdError {
  try {
    return fn();
  } catch (e) {
    if (!(e instanceof TapdError)) throw new Error(`threw something other than a TapdError: ${String(e)}`, { cause: e });
    if (!codes.has(e.code)) throw new Error(`unexpected code ${e.code}: ${e.message}`);
    return e;
  }
}

const counts = { streams: 0, frames: 0, decoded: 0, validChecked: 0, readerErrors: 0, chunks: 0, maxPending: 0 };

function runStream(pieces: Piece[], chunking: readonly number[]): void {
  const stream = Buffer.concat(pieces.map((p) => p.bytes));
  const ref = reference(stream);
  const validAt = new Map<number, Record<string, unknown>>();
  let off = 0;
  for (const p of pieces) {
    if (p.valid) validAt.set(off, p.valid);
    off += p.bytes.length;
  }

  const reader = new FrameReader(CAP);
  const bodies: Buffer[] = [];
  let fed = 0;
  let done = 0; // reference frames complete within what was fed
  let thrown: TapdError | undefined;
  for (let c = 0; fed < stream.length; c++) {
    const size = chunking[c % chunking.length]!;
    const chunk = stream.subarray(fed, fed + size);
    const before = fed;
    fed += chunk.length;
    counts.chunks++;
    const out = stage(READER_CODES, () => reader.push(chunk));
    if (out instanceof TapdError) {
      thrown = out;
      // Refused on the push that completed the bad header: not before, not after.
      check(ref.error !== undefined, `reader threw ${out.code} where the reference saw no bad header`);
      check(out.code === ref.error!.code, `reader threw ${out.code}, reference ${ref.error!.code}`);
      check(before < ref.error!.headerEnd && ref.error!.headerEnd <= fed, 'bad header refused on the wrong push');
      break;
    }
    // Frames in the push that throws are never handed out (the connection is ending), so only
    // bodies of pushes that returned are compared.
    while (done < ref.frames.length && ref.frames[done]!.end <= fed) done++;
    check(bodies.length + out.length === done, `after ${fed} bytes: ${bodies.length + out.length} frames, reference ${done}`);
    bodies.push(...out);
    // The reader holds exactly the unfinished frame's bytes, and never more than a header plus the cap.
    const pending = fed - (done ? ref.frames[done - 1]!.end : 0);
    check(reader.pendingBytes === pending, `pending ${reader.pendingBytes}, reference ${pending}`);
    check(reader.pendingBytes < HEADER_BYTES + CAP, `pending ${reader.pendingBytes} over a header plus the cap`);
    if (reader.pendingBytes > counts.maxPending) counts.maxPending = reader.pendingBytes;
  }
  if (thrown) counts.readerErrors++;
  else check(ref.error === undefined || ref.error.headerEnd > stream.length, 'the reader missed a bad header');

  for (const [i, body] of bodies.entries()) {
    const f = ref.frames[i]!;
    check(body.equals(stream.subarray(f.start + HEADER_BYTES, f.end)), `frame ${i} differs from the reference`);
    counts.frames++;
    const valid = validAt.get(f.start);
    const msg = stage(PARSE_CODES, () => parseJsonObject(body));
    if (msg instanceof TapdError) {
      check(valid === undefined, `a valid request failed to parse: ${msg.message}`);
      continue;
    }
    const req = stage(DECODE_CODES, () => decodeRequest(msg));
    if (req instanceof TapdError) {
      check(valid === undefined, `a valid request was refused: ${req.message}`);
      continue;
    }
    counts.decoded++;
    checkSound(req, msg);
    if (valid) {
      counts.validChecked++;
      checkSound(req, valid);
    }
  }
  counts.streams++;
}

/**
 * A stream: a pool of generated frames, laid out in a generated order (so a run yields many
 * frames for little generating), then maybe one header that ends the stream.
 */
const streamArb = fc.tuple(
  fc.array(pieceArb, { minLength: 1, maxLength: 24 }),
  fc.array(fc.nat(), { minLength: 200, maxLength: 300 }),
  fc.option(terminalArb, { freq: 3 }),
).map(([pool, order, terminal]) => [...order.map((i) => pool[i % pool.length]!), ...(terminal ? [terminal] : [])]);

describe('fuzz: frame reader + JSON + request decoder', () => {
  it('at least 100k generated frames, split at random chunk boundaries', () => {
    const protoBefore = Object.getOwnPropertyNames(Object.prototype).sort();
    fc.assert(fc.property(streamArb, chunkingArb, (pieces, chunking) => runStream(pieces, chunking)), { numRuns: 700 });
    console.log(`fuzz: ${JSON.stringify(counts)}`);
    expect(counts.frames).toBeGreaterThanOrEqual(100_000);
    // Each kind of outcome really happened, so no property above held vacuously.
    expect(counts.decoded).toBeGreaterThan(10_000);
    expect(counts.validChecked).toBeGreaterThan(10_000);
    expect(counts.frames - counts.decoded).toBeGreaterThan(10_000);
    expect(counts.readerErrors).toBeGreaterThan(100);
    expect(counts.maxPending).toBeGreaterThan(CAP);
    // Nothing reached Object.prototype.
    expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(protoBefore);
    expect(({} as Record<string, unknown>).as_uid).toBeUndefined();
  });

  describe('the harness notices a broken reader (self-check)', () => {
    const status = framed(Buffer.from('{"v":1,"op":"status"}'));
    const realPush = FrameReader.prototype.push;
    const withPush = (push: (this: FrameReader, data: Buffer) => Buffer[], fn: () => void) => {
      FrameReader.prototype.push = push;
      try {
        fn();
      } finally {
        FrameReader.prototype.push = realPush;
      }
    };

    it('the real reader passes', () => {
      expect(() => runStream([{ bytes: status }, { bytes: status }, { bytes: header(CAP + 1) }], [3])).not.toThrow();
    });
    it('one that drops a frame fails', () => {
      withPush(function (data) { return realPush.call(this, data).slice(1); }, () => {
        expect(() => runStream([{ bytes: status }, { bytes: status }], [1 << 20])).toThrow(/frames, reference/);
      });
    });
    it('one that refuses a bad header late fails', () => {
      withPush(function (data) {
        try { return realPush.call(this, data); } catch (e) { if (data.length > 1) throw e; return []; }
      }, () => {
        expect(() => runStream([{ bytes: header(CAP + 1) }, { bytes: Buffer.alloc(8) }], [1])).toThrow();
      });
    });
    it('a decoder that accepts an unknown field fails', () => {
      const msg = { v: 1, op: 'status', junk: 1 };
      expect(() => checkSound({ op: 'status' }, msg)).toThrow(/fields accepted/);
    });
  });
});
