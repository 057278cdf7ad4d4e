// The wire framing (src/protocol/frame.ts): a 4-byte big-endian length, then that many bytes of
// UTF-8 JSON. What a hostile local client can send, taken apart one case at a time.
import { describe, expect, it } from 'vitest';
import { TapdError } from '../../src/errors/tapd-error.js';
import {
  encodeFrame, FrameReader, HEADER_BYTES, MAX_REPLY_BYTES, MAX_REQUEST_BYTES, parseJsonObject,
} from '../../src/protocol/frame.js';

function header(length: number): Buffer {
  const h = Buffer.alloc(HEADER_BYTES);
  h.writeUInt32BE(length, 0);
  return h;
}

function frame(body: string | Buffer): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  return Buffer.concat([header(b.length), b]);
}

/** The TapdError `fn` throws (fails the test if it throws anything else, or nothing). */
function tapdErrorOf(fn: () => unknown): TapdError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(TapdError);
  return caught as TapdError;
}

const texts = (bodies: Buffer[]): string[] => bodies.map((b) => b.toString('utf8'));

describe('encodeFrame', () => {
  it('writes the body length big-endian, then the JSON', () => {
    const f = encodeFrame({ v: 1, op: 'status' });
    const body = '{"v":1,"op":"status"}';
    expect(f.readUInt32BE(0)).toBe(body.length);
    expect(f.subarray(HEADER_BYTES).toString('utf8')).toBe(body);
    expect(f.length).toBe(HEADER_BYTES + body.length);
  });

  it('counts bytes, not characters', () => {
    const f = encodeFrame({ n: 'é€' });
    expect(f.readUInt32BE(0)).toBe(Buffer.byteLength('{"n":"é€"}'));
    expect(f.readUInt32BE(0)).toBe(13);
  });

  it('round-trips through FrameReader and parseJsonObject', () => {
    const msg = { v: 1, op: 'open', network: 'lan', queues: 4, vnet_hdr: true };
    const [body, ...rest] = new FrameReader(MAX_REQUEST_BYTES).push(encodeFrame(msg));
    expect(rest).toEqual([]);
    expect(parseJsonObject(body!)).toEqual(msg);
  });
});

describe('FrameReader', () => {
  it('yields one whole frame from one chunk and keeps nothing', () => {
    const r = new FrameReader(MAX_REQUEST_BYTES);
    expect(texts(r.push(frame('{"a":1}')))).toEqual(['{"a":1}']);
    expect(r.pendingBytes).toBe(0);
  });

  it('yields every frame of a chunk holding several, in order', () => {
    const r = new FrameReader(MAX_REQUEST_BYTES);
    const bodies = ['{"a":1}', '{}', 'x', '{"b":"' + 'y'.repeat(300) + '"}'];
    expect(texts(r.push(Buffer.concat(bodies.map(frame))))).toEqual(bodies);
    expect(r.pendingBytes).toBe(0);
  });

  it('a chunk with whole frames and the start of the next keeps just that start', () => {
    const r = new FrameReader(MAX_REQUEST_BYTES);
    const next = frame('{"c":3}');
    expect(texts(r.push(Buffer.concat([frame('{"a":1}'), frame('{"b":2}'), next.subarray(0, 6)])))).toEqual(['{"a":1}', '{"b":2}']);
    expect(r.pendingBytes).toBe(6);
    expect(texts(r.push(next.subarray(6)))).toEqual(['{"c":3}']);
    expect(r.pendingBytes).toBe(0);
  });

  it('reassembles frames split across chunks at every possible boundary', () => {
    const stream = Buffer.concat([frame('{"first":true}'), frame('{"second":"é"}')]);
    for (let cut = 0; cut <= stream.length; cut++) {
      const r = new FrameReader(MAX_REQUEST_BYTES);
      const got = [...r.push(stream.subarray(0, cut)), ...r.push(stream.subarray(cut))];
      expect(texts(got), `cut at ${cut}`).toEqual(['{"first":true}', '{"second":"é"}']);
      expect(r.pendingBytes).toBe(0);
    }
  });

  it('reassembles a stream fed one byte at a time, yielding each frame on its last byte', () => {
    const bodies = ['{"v":1,"op":"status"}', '{"v":1,"op":"list"}'];
    const stream = Buffer.concat(bodies.map(frame));
    const ends = [HEADER_BYTES + bodies[0]!.length, stream.length];
    const r = new FrameReader(MAX_REQUEST_BYTES);
    const got: string[] = [];
    for (let i = 0; i < stream.length; i++) {
      const out = texts(r.push(stream.subarray(i, i + 1)));
      // Nothing comes out early, and each frame comes out exactly when its last byte arrives.
      expect(out.length, `byte ${i}`).toBe(ends.includes(i + 1) ? 1 : 0);
      got.push(...out);
      const consumed = ends.filter((e) => e <= i + 1).pop() ?? 0;
      expect(r.pendingBytes).toBe(i + 1 - consumed);
    }
    expect(got).toEqual(bodies);
  });

  it('an empty chunk changes nothing', () => {
    const r = new FrameReader(MAX_REQUEST_BYTES);
    expect(r.push(Buffer.alloc(0))).toEqual([]);
    r.push(Buffer.from([0, 0]));
    expect(r.push(Buffer.alloc(0))).toEqual([]);
    expect(r.pendingBytes).toBe(2);
  });

  it('returned bodies stay intact while later chunks arrive', () => {
    const r = new FrameReader(MAX_REQUEST_BYTES);
    const f = frame('{"keep":"me"}');
    const [a] = r.push(Buffer.concat([f, f.subarray(0, 3)]));
    r.push(f.subarray(3));
    r.push(Buffer.concat([header(50), Buffer.alloc(40, 0x41)])); // the start of another frame
    expect(r.pendingBytes).toBe(44);
    expect(a?.toString()).toBe('{"keep":"me"}');
  });

  it('a zero-length frame is bad_frame', () => {
    const e = tapdErrorOf(() => new FrameReader(MAX_REQUEST_BYTES).push(header(0)));
    expect(e.code).toBe('bad_frame');
    expect(e.message).toMatch(/empty frame/);
  });

  it('a zero length after a good frame in the same chunk is still caught', () => {
    const r = new FrameReader(MAX_REQUEST_BYTES);
    expect(tapdErrorOf(() => r.push(Buffer.concat([frame('{}'), header(0)]))).code).toBe('bad_frame');
  });

  it('the cap itself is allowed; one byte more is not', () => {
    const r = new FrameReader(MAX_REQUEST_BYTES);
    const body = Buffer.alloc(MAX_REQUEST_BYTES, 0x20);
    expect(r.push(frame(body))).toHaveLength(1);
    const e = tapdErrorOf(() => new FrameReader(MAX_REQUEST_BYTES).push(header(MAX_REQUEST_BYTES + 1)));
    expect(e.code).toBe('frame_too_large');
    expect(e.message).toContain(`${MAX_REQUEST_BYTES + 1} bytes is over the limit of ${MAX_REQUEST_BYTES}`);
  });

  it('an over-limit length is refused as soon as the header is complete, before any body byte', () => {
    for (const length of [MAX_REQUEST_BYTES + 1, 65536, 0x7fffffff, 0xffffffff]) {
      const r = new FrameReader(MAX_REQUEST_BYTES);
      const h = header(length);
      // Three header bytes: nothing to decide yet.
      expect(r.push(h.subarray(0, 3))).toEqual([]);
      expect(r.pendingBytes).toBe(3);
      // The fourth: refused at once, with no body byte sent, so none was waited for or kept.
      expect(tapdErrorOf(() => r.push(h.subarray(3))).code, `length ${length}`).toBe('frame_too_large');
    }
  });

  it('a 4 GiB length header followed by a body-sized chunk is refused, not buffered', () => {
    const r = new FrameReader(MAX_REQUEST_BYTES);
    expect(tapdErrorOf(() => r.push(Buffer.concat([header(0xffffffff), Buffer.alloc(64 * 1024)]))).code).toBe('frame_too_large');
  });

  it('an over-limit frame after good frames in one chunk: the reader throws (the connection ends)', () => {
    const r = new FrameReader(MAX_REQUEST_BYTES);
    expect(tapdErrorOf(() => r.push(Buffer.concat([frame('{"a":1}'), header(MAX_REQUEST_BYTES + 1)]))).code).toBe('frame_too_large');
  });

  it('never holds more than one header plus one capped body between pushes', () => {
    const r = new FrameReader(MAX_REQUEST_BYTES);
    const big = frame(Buffer.alloc(MAX_REQUEST_BYTES, 0x20));
    r.push(big.subarray(0, big.length - 1));
    expect(r.pendingBytes).toBe(HEADER_BYTES + MAX_REQUEST_BYTES - 1);
    expect(r.push(big.subarray(big.length - 1))).toHaveLength(1);
    expect(r.pendingBytes).toBe(0);
  });

  it('the reply cap is its own limit', () => {
    const r = new FrameReader(MAX_REPLY_BYTES);
    expect(r.push(header(MAX_REQUEST_BYTES + 1))).toEqual([]);
    expect(tapdErrorOf(() => new FrameReader(MAX_REPLY_BYTES).push(header(MAX_REPLY_BYTES + 1))).code).toBe('frame_too_large');
  });
});

describe('parseJsonObject', () => {
  const parse = (bytes: Buffer | string) => parseJsonObject(typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes);
  const codeOf = (bytes: Buffer | string) => tapdErrorOf(() => parse(bytes));

  it('accepts an object, with any UTF-8 in its strings', () => {
    expect(parse('{"v":1,"op":"status"}')).toEqual({ v: 1, op: 'status' });
    expect(parse(' \n{"s":"é€😀"}\t')).toEqual({ s: 'é€😀' });
    expect(parse('{}')).toEqual({});
  });

  it.each([
    ['a lone continuation byte', [0x7b, 0x80, 0x7d]],
    ['0xff', [0x7b, 0x22, 0xff, 0x22, 0x7d]],
    ['an overlong "/" (C0 AF)', [0x7b, 0x22, 0xc0, 0xaf, 0x22, 0x7d]],
    ['an overlong NUL (C0 80)', [0x7b, 0x22, 0xc0, 0x80, 0x22, 0x3a, 0x31, 0x7d]],
    ['a UTF-16 surrogate encoded as UTF-8 (ED A0 80)', [0x7b, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x3a, 0x31, 0x7d]],
    ['a code point above U+10FFFF (F4 90 80 80)', [0x7b, 0x22, 0xf4, 0x90, 0x80, 0x80, 0x22, 0x3a, 0x31, 0x7d]],
    ['a sequence cut short at the end', [0x7b, 0x7d, 0xe2, 0x82]],
    ['a sequence cut short inside a string', [0x7b, 0x22, 0xe2, 0x82, 0x22, 0x3a, 0x31, 0x7d]],
  ])('invalid UTF-8 (%s) is bad_request, never replaced with U+FFFD', (_name, bytes) => {
    const e = codeOf(Buffer.from(bytes));
    expect(e.code).toBe('bad_request');
    expect(e.message).toBe('request is not valid UTF-8');
  });

  it.each([
    ['truncated', '{"v":1,'],
    ['trailing garbage', '{"v":1} x'],
    ['two objects', '{}{}'],
    ['single quotes', "{'v':1}"],
    ['a trailing comma', '{"v":1,}'],
    ['a comment', '{"v":1 /* hi */}'],
    ['NaN', '{"v":NaN}'],
    ['empty', ''],
    ['only spaces', '   '],
    ['a NUL byte', '{"v":1}\0'],
  ])('malformed JSON (%s) is bad_request', (_name, text) => {
    const e = codeOf(text);
    expect(e.code).toBe('bad_request');
    expect(e.message).toBe('request is not valid JSON');
  });

  it.each([['[]'], ['[{"v":1}]'], ['null'], ['1'], ['"{}"'], ['true']])('a JSON value that is not an object (%s) is bad_request', (text) => {
    const e = codeOf(text);
    expect(e.code).toBe('bad_request');
    expect(e.message).toBe('request must be a JSON object');
  });

  it('deep nesting is a bad_request, not a crash', () => {
    const e = codeOf('['.repeat(100_000) + ']'.repeat(100_000));
    expect(e.code).toBe('bad_request');
  });

  it('a duplicate key: the last one wins, and it is the only value anyone sees', () => {
    // JSON.parse keeps the last; what decodeRequest checks is then what the daemon uses, so a
    // first "good" copy cannot carry a second bad one past the checks (test/unit/messages.test.ts).
    const o = parse('{"op":"status","op":"open","n":1,"n":2}');
    expect(o).toEqual({ op: 'open', n: 2 });
    expect(Object.keys(o)).toEqual(['op', 'n']);
  });

  it('"__proto__" is an own data key of the result, and Object.prototype is untouched', () => {
    const o = parse('{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}');
    expect(Object.hasOwn(o, '__proto__')).toBe(true);
    expect(Object.getPrototypeOf(o)).toBe(Object.prototype);
    expect(Object.keys(o)).toEqual(['__proto__', 'constructor']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('a leading byte-order mark is dropped by the decoder, so the object still parses', () => {
    // Documented behaviour of TextDecoder: harmless, the rest must still be one JSON object.
    expect(parse(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"v":1}')]))).toEqual({ v: 1 });
    expect(codeOf(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf, 0xef, 0xbb, 0xbf]), Buffer.from('{"v":1}')])).code).toBe('bad_request');
  });
});
