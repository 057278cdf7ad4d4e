// decodeRequest (src/protocol/messages.ts): every field, its type and range, unknown and missing
// fields, the version, and keys that try to reach Object.prototype.
import { describe, expect, it } from 'vitest';
import { TapdError } from '../../src/errors/tapd-error.js';
import { parseJsonObject } from '../../src/protocol/frame.js';
import { decodeRequest, errorReply, MAX_MTU, MAX_QUEUES, MIN_MTU, PROTOCOL_VERSION } from '../../src/protocol/messages.js';

/** Decodes JSON text the way the daemon does: bytes → object → request. */
const decodeText = (text: string) => decodeRequest(parseJsonObject(Buffer.from(text, 'utf8')));

function errorOf(msg: Record<string, unknown> | string): TapdError {
  let caught: unknown;
  try {
    if (typeof msg === 'string') decodeText(msg);
    else decodeRequest(msg);
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(TapdError);
  return caught as TapdError;
}

const open = (over: Record<string, unknown> = {}) => ({ v: 1, op: 'open', network: 'lan', ...over });

describe('the protocol version', () => {
  it('is 1', () => {
    expect(PROTOCOL_VERSION).toBe(1);
    expect(decodeRequest({ v: 1, op: 'status' })).toEqual({ op: 'status' });
  });

  it.each([
    ['missing', {}], ['0', { v: 0 }], ['2', { v: 2 }], ['"1"', { v: '1' }], ['true', { v: true }],
    ['null', { v: null }], ['1.5', { v: 1.5 }], ['[1]', { v: [1] }], ['{}', { v: {} }],
  ])('v %s is bad_version, whatever else the request says', (_name, v) => {
    const e = errorOf({ op: 'status', ...v });
    expect(e.code).toBe('bad_version');
    expect(e.message).toMatch(/protocol version must be 1; upgrade the client or the daemon/);
  });

  it('the version is checked before anything else', () => {
    expect(errorOf({ v: 2, op: 'destroy', junk: 1 }).code).toBe('bad_version');
  });

  it('1.0 in the JSON text is the number 1', () => {
    expect(decodeText('{"v":1.0,"op":"list"}')).toEqual({ op: 'list' });
  });
});

describe('op', () => {
  it('decodes each simple request to just its op', () => {
    for (const op of ['list', 'status', 'reload', 'networks'] as const) {
      expect(decodeRequest({ v: 1, op })).toStrictEqual({ op });
    }
  });

  it.each([
    ['missing', {}], ['unknown', { op: 'destroy' }], ['upper case', { op: 'STATUS' }], ['with a space', { op: 'status ' }],
    ['a number', { op: 1 }], ['null', { op: null }], ['an array', { op: ['status'] }], ['empty', { op: '' }],
    // Names every object has by inheritance are not operations.
    ['__proto__', { op: '__proto__' }], ['constructor', { op: 'constructor' }], ['toString', { op: 'toString' }],
    ['hasOwnProperty', { op: 'hasOwnProperty' }], ['valueOf', { op: 'valueOf' }],
  ])('op %s is bad_request listing the operations', (_name, op) => {
    const e = errorOf({ v: 1, ...op });
    expect(e.code).toBe('bad_request');
    expect(e.message).toBe('field "op" must be one of open, check, list, revoke, networks, status, reload');
  });

  it('list takes only user (a uid); revoke needs lease, user or network', () => {
    expect(decodeRequest({ v: 1, op: 'list', user: 1000 })).toStrictEqual({ op: 'list', user: 1000 });
    expect(errorOf({ v: 1, op: 'list', user: -1 }).code).toBe('bad_request');
    expect(errorOf({ v: 1, op: 'list', network: 'lan' }).message).toBe('unknown field "network" in list request');
    expect(decodeRequest({ v: 1, op: 'revoke', lease: '0123456789abcdef' })).toStrictEqual({ op: 'revoke', lease: '0123456789abcdef' });
    expect(decodeRequest({ v: 1, op: 'revoke', user: 7, network: 'lan' })).toStrictEqual({ op: 'revoke', user: 7, network: 'lan' });
    expect(errorOf({ v: 1, op: 'revoke' }).message).toBe('revoke needs at least one of "lease", "user", "network"');
    expect(errorOf({ v: 1, op: 'revoke', lease: 'x'.repeat(17) }).code).toBe('bad_request');
  });

  it.each(['status', 'reload', 'networks'])('%s takes no fields at all', (op) => {
    for (const field of ['network', 'queues', 'as_uid', 'x']) {
      const e = errorOf({ v: 1, op, [field]: 'lan' });
      expect(e.code).toBe('bad_request');
      expect(e.message).toBe(`unknown field "${field}" in ${op} request`);
    }
  });
});

describe('open and check', () => {
  it('defaults: one queue, no vnet_hdr, no vhost; optional fields stay unset', () => {
    expect(decodeRequest(open())).toEqual({ op: 'open', network: 'lan', queues: 1, vnetHdr: false, vhost: false, progress: false, bridgeHelper: false });
    const r = decodeRequest(open()) as Record<string, unknown>;
    for (const k of ['mac', 'mtu', 'asUid']) expect(r[k], k).toBeUndefined();
  });

  it('every field, mapped to its name in the request', () => {
    const msg = open({ op: 'check', mac: '52:54:00:12:34:56', mtu: 9000, queues: 16, vnet_hdr: true, vhost: true, as_uid: 1000 });
    expect(decodeRequest(msg)).toStrictEqual({
      op: 'check', network: 'lan', mac: '52:54:00:12:34:56', mtu: 9000, queues: 16, vnetHdr: true, vhost: true, asUid: 1000, progress: false, bridgeHelper: false,
    });
  });

  it('network is required', () => {
    for (const op of ['open', 'check']) {
      const e = errorOf({ v: 1, op, queues: 2 });
      expect(e.code).toBe('bad_request');
      expect(e.message).toBe(`field "network" is required in ${op} request`);
    }
  });

  // [field, good values, bad values with the words of the error]
  const fields: [string, unknown[], [unknown, string][]][] = [
    ['network', ['lan', 'x'.repeat(64), 'br-eth1'], [
      [7, 'must be a string'], [null, 'must be a string'], [true, 'must be a string'], [['lan'], 'must be a string'],
      [{ name: 'lan' }, 'must be a string'], ['x'.repeat(65), 'is longer than 64 characters'],
    ]],
    ['mac', ['52:54:00:aa:bb:cc', ''], [
      [0x525400aabbcc, 'must be a string'], [null, 'must be a string'], ['52:54:00:aa:bb:cc:d', 'is longer than 17 characters'],
    ]],
    ['mtu', [MIN_MTU, 1500, MAX_MTU], [
      [MIN_MTU - 1, `must be between ${MIN_MTU} and ${MAX_MTU}, got 67`], [MAX_MTU + 1, 'must be between 68 and 65521, got 65522'], [65536, 'must be between 68 and 65521, got 65536'],
      [0, 'must be between'], [-1500, 'must be between'], [1500.5, 'must be an integer'], ['1500', 'must be an integer'],
      [null, 'must be an integer'], [true, 'must be an integer'], [Infinity, 'must be an integer'], [NaN, 'must be an integer'],
      [1e21, 'must be between'],
    ]],
    ['queues', [1, 2, MAX_QUEUES], [
      [0, 'must be between 1 and 16, got 0'], [MAX_QUEUES + 1, 'must be between 1 and 16, got 17'], [-1, 'must be between'],
      [1000, 'must be between'], [2.5, 'must be an integer'], ['2', 'must be an integer'], [[2], 'must be an integer'],
    ]],
    ['vnet_hdr', [true, false], [[1, 'must be true or false'], ['true', 'must be true or false'], [null, 'must be true or false'], [0, 'must be true or false']]],
    ['vhost', [true, false], [[1, 'must be true or false'], ['yes', 'must be true or false'], [{}, 'must be true or false']]],
    ['as_uid', [0, 1000, 0xfffffffe], [
      [-1, 'must be between 0 and 4294967294, got -1'], [0xffffffff, 'must be between 0 and 4294967294, got 4294967295'],
      [2 ** 53, 'must be between'], [1000.5, 'must be an integer'], ['1000', 'must be an integer'], [null, 'must be an integer'],
    ]],
  ];

  describe.each(fields)('%s', (field, good, badValues) => {
    it.each(good.map((v) => [v]))('accepts %j', (value) => {
      for (const op of ['open', 'check']) expect(() => decodeRequest(open({ op, [field]: value }))).not.toThrow();
    });
    it.each(badValues)('refuses %j: field named, %s', (value, words) => {
      for (const op of ['open', 'check']) {
        const e = errorOf(open({ op, [field]: value }));
        expect(e.code).toBe('bad_request');
        expect(e.message).toContain(`field "${field}" ${words}`);
      }
    });
  });

  it('decoded values are the ones sent', () => {
    const r = decodeRequest(open({ network: 'wan', mac: 'aa', mtu: 1280, queues: 3, vnet_hdr: true, vhost: false, as_uid: 0 }));
    expect(r).toMatchObject({ network: 'wan', mac: 'aa', mtu: 1280, queues: 3, vnetHdr: true, vhost: false, asUid: 0 });
  });

  it.each([
    ['an unknown field', 'user'], ['the request-side spelling of a decoded name', 'vnetHdr'], ['asUid', 'asUid'],
    ['upper case', 'Network'], ['__proto__', '__proto__'], ['constructor', 'constructor'], ['prototype', 'prototype'],
    ['toString', 'toString'], ['hasOwnProperty', 'hasOwnProperty'], ['an empty name', ''],
  ])('%s is refused by name', (_name, field) => {
    const e = errorOf(open({ [field]: 1 }));
    expect(e.code).toBe('bad_request');
    expect(e.message).toBe(`unknown field "${field}" in open request`);
  });

  it('__proto__ and constructor from the wire are refused and pollute nothing', () => {
    for (const text of [
      '{"v":1,"op":"open","network":"lan","__proto__":{"as_uid":0,"queues":16}}',
      '{"v":1,"op":"open","network":"lan","constructor":{"prototype":{"as_uid":0}}}',
      '{"__proto__":{"v":1,"op":"status"}}',
    ]) {
      const e = errorOf(text);
      expect(['bad_request', 'bad_version']).toContain(e.code);
    }
    expect(errorOf('{"v":1,"op":"open","network":"lan","__proto__":{"as_uid":0}}').message).toBe('unknown field "__proto__" in open request');
    const plain = {} as Record<string, unknown>;
    expect(plain.as_uid).toBeUndefined();
    expect(plain.v).toBeUndefined();
    expect(plain.prototype).toBeUndefined();
  });

  it('inherited properties are not fields: a request object with a polluted prototype still lacks them', () => {
    // If something did pollute Object.prototype, decodeRequest must not read a required field from it.
    const msg = Object.assign(Object.create({ network: 'lan', as_uid: 0 }) as Record<string, unknown>, { v: 1, op: 'open' });
    const e = errorOf(msg);
    expect(e.message).toBe('field "network" is required in open request');
  });

  it('a duplicate key is decoded by its last value, and checked on that value', () => {
    expect(decodeText('{"v":1,"op":"open","network":"lan","queues":1,"queues":4}')).toMatchObject({ queues: 4 });
    expect(errorOf('{"v":1,"op":"open","network":"lan","queues":1,"queues":99}').message).toContain('field "queues" must be between');
    expect(errorOf('{"v":1,"op":"open","network":"lan","network":7}').message).toBe('field "network" must be a string');
    expect(errorOf('{"v":1,"v":2,"op":"status"}').code).toBe('bad_version');
    expect(decodeText('{"v":1,"op":"open","op":"status"}')).toEqual({ op: 'status' });
  });

  it('the first problem found is the one reported, naming its field', () => {
    const e = errorOf(open({ queues: 0, mtu: 1 }));
    expect(e.message).toMatch(/^field "(queues|mtu)" must be between/);
  });
});

describe('errorReply', () => {
  it('is a version-1 error object carrying the code and message', () => {
    expect(errorReply('bad_request', 'nope')).toStrictEqual({ v: 1, ok: false, error: { code: 'bad_request', message: 'nope' } });
  });
});
