// The OVSDB client's framing and parsing against canned replies from a fake ovsdb-server on a
// Unix socket (no root, no Open vSwitch). test/ovn.test.ts runs it against the real one.
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { JsonStream, OvsdbClient, OvsdbError, readStringMap, readUuidSet } from '../../src/daemon/ovsdb.js';

const U1 = '11111111-2222-3333-4444-555555555555';
const U2 = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee';

describe('JsonStream', () => {
  it('splits back-to-back objects, across any chunk boundary', () => {
    const text = '{"id":1,"result":["a{b}","c\\"}"],"error":null} \n{"id":2,"result":{"é":"ü}"},"error":null}{"method":"echo","params":[],"id":"x"}';
    const bytes = Buffer.from(text, 'utf8');
    const expected = [
      { id: 1, result: ['a{b}', 'c"}'], error: null },
      { id: 2, result: { é: 'ü}' }, error: null },
      { method: 'echo', params: [], id: 'x' },
    ];
    for (let cut = 0; cut <= bytes.length; cut++) {
      const s = new JsonStream();
      const got = [...s.push(bytes.subarray(0, cut)), ...s.push(bytes.subarray(cut))];
      expect(got).toEqual(expected);
      expect(s.idle).toBe(true);
    }
    // One byte at a time (splits the UTF-8 sequences too).
    const s = new JsonStream();
    const got: unknown[] = [];
    for (const b of bytes) got.push(...s.push(Buffer.from([b])));
    expect(got).toEqual(expected);
  });

  it('keeps an escaped backslash before a closing quote straight', () => {
    const s = new JsonStream();
    expect(s.push(Buffer.from('{"a":"x\\\\"}{"b":1}'))).toEqual([{ a: 'x\\' }, { b: 1 }]);
  });

  it('refuses what is not a JSON object stream', () => {
    expect(() => new JsonStream().push(Buffer.from('[1,2]'))).toThrow(/where a JSON object should start/);
    expect(() => new JsonStream().push(Buffer.from('HTTP/1.1 400'))).toThrow(OvsdbError);
    expect(() => new JsonStream().push(Buffer.from('{"a":tru}'))).toThrow(/malformed JSON/);
    expect(() => new JsonStream().push(Buffer.from('{"a":' + '['.repeat(100)))).toThrow(/nested deeper/);
  });

  it('caps a message, whole or still arriving', () => {
    const big = `{"a":"${'x'.repeat(200)}"}`;
    expect(() => new JsonStream(100).push(Buffer.from(big))).toThrow(/larger than 100 bytes/);
    const s = new JsonStream(100);
    expect(() => {
      for (let i = 0; i < 10; i++) s.push(Buffer.from(i === 0 ? '{"a":"' : 'x'.repeat(20)));
    }).toThrow(/larger than 100 bytes/);
    expect(new JsonStream(100).push(Buffer.from(`{"a":"${'x'.repeat(80)}"}`))).toHaveLength(1);
  });
});

describe('value readers', () => {
  it('read maps and uuid sets strictly', () => {
    expect(readStringMap(['map', [['iface-id', 'lp1'], ['tapd-lease', 'L']]])).toEqual({ 'iface-id': 'lp1', 'tapd-lease': 'L' });
    expect(() => readStringMap(['map', [['k', 1]]])).toThrow(OvsdbError);
    expect(() => readStringMap(['set', []])).toThrow(/string map/);
    expect(readUuidSet(['uuid', U1])).toEqual([U1]);
    expect(readUuidSet(['set', [['uuid', U1], ['uuid', U2]]])).toEqual([U1, U2]);
    expect(readUuidSet(['set', []])).toEqual([]);
    expect(() => readUuidSet(['uuid', 'not-a-uuid'])).toThrow(OvsdbError);
  });
});

// A fake ovsdb-server: `reply` sees each request and returns what to write back (raw strings
// are written as they are; undefined = stay silent).
type Req = { id: unknown; method: string; params: unknown[] };
let cleanup: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanup.reverse()) c();
  cleanup = [];
});

async function fakeServer(reply: (req: Req, sock: net.Socket) => unknown): Promise<{ path: string; requests: Req[] }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tapd-ovsdbunit-'));
  const sockPath = path.join(dir, 'db.sock');
  const requests: Req[] = [];
  const conns = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    conns.add(sock);
    const stream = new JsonStream();
    sock.on('data', (d) => {
      for (const m of stream.push(d)) {
        const req = m as Req;
        if (!('method' in req)) continue; // answers to our echo
        requests.push(req);
        const out = reply(req, sock);
        if (out === undefined) continue;
        sock.write(typeof out === 'string' ? out : JSON.stringify(out));
      }
    });
    sock.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(sockPath, r));
  cleanup.push(() => {
    for (const c of conns) c.destroy();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { path: sockPath, requests };
}

const ok = (req: Req, result: unknown) => ({ id: req.id, result, error: null });

async function client(p: string, timeoutMs = 2000, maxMessageBytes?: number): Promise<OvsdbClient> {
  const db = await OvsdbClient.connect({ socketPath: p, timeoutMs, maxMessageBytes });
  cleanup.push(() => db.close());
  return db;
}

async function failure(p: Promise<unknown>): Promise<OvsdbError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(OvsdbError);
    return err as OvsdbError;
  }
  throw new Error('expected an OvsdbError');
}

describe('OvsdbClient against canned replies', () => {
  it('says how to fix a missing socket', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tapd-ovsdbunit-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const e = await failure(OvsdbClient.connect({ socketPath: path.join(dir, 'none.sock') }));
    expect(e.failure).toBe('connect');
    expect(e.code).toBe('ovs_failed');
    expect(e.message).toMatch(/ENOENT.*is ovsdb-server running/);
  });

  it('addPort sends one transaction: wait bridge, wait no port, insert Interface and Port, mutate Bridge.ports', async () => {
    const srv = await fakeServer((req) => ok(req, [{}, {}, { uuid: ['uuid', U1] }, { uuid: ['uuid', U2] }, { count: 1 }, {}]));
    const db = await client(srv.path);
    expect(await db.addPort({ bridge: 'br-int', port: 'tap7', mac: '52:54:00:12:34:56', leaseId: 'L7', ifaceId: 'lp-a' })).toBe(U2);
    expect(srv.requests).toHaveLength(1);
    const [req] = srv.requests;
    expect(req?.method).toBe('transact');
    const [dbName, ...ops] = req?.params as [string, ...Array<Record<string, unknown>>];
    expect(dbName).toBe('Open_vSwitch');
    expect(ops.map((o) => `${o.op} ${String(o.table ?? '')}`)).toEqual(['wait Bridge', 'wait Port', 'insert Interface', 'insert Port', 'mutate Bridge', 'comment ']);
    expect(ops[2]).toMatchObject({ 'uuid-name': 'tapdiface', row: { name: 'tap7', type: '', external_ids: ['map', [['iface-id', 'lp-a'], ['attached-mac', '52:54:00:12:34:56'], ['tapd-lease', 'L7']]] } });
    expect(ops[3]).toMatchObject({ 'uuid-name': 'tapdport', row: { name: 'tap7', interfaces: ['named-uuid', 'tapdiface'], external_ids: ['map', [['tapd-lease', 'L7']]] } });
    expect(ops[4]).toEqual({ op: 'mutate', table: 'Bridge', where: [['name', '==', 'br-int']], mutations: [['ports', 'insert', ['set', [['named-uuid', 'tapdport']]]]] });
  });

  it('addPort: a missing bridge and a taken name are told apart', async () => {
    let n = 0;
    const srv = await fakeServer((req) => ok(req, n++ === 0
      ? [{ error: 'timed out' }, null, null, null, null, null]
      : [{}, { error: 'timed out' }, null, null, null, null]));
    const db = await client(srv.path);
    const spec = { bridge: 'br-int', port: 'tap7', mac: '52:54:00:12:34:56', leaseId: 'L7' };
    const noBridge = await failure(db.addPort(spec));
    expect(noBridge.failure).toBe('bridge');
    expect(noBridge.message).toMatch(/no bridge br-int; create it/);
    const taken = await failure(db.addPort(spec));
    expect(taken.failure).toBe('port');
    expect(taken.message).toMatch(/already has a port named tap7/);
  });

  it('a constraint violation keeps the server\'s words', async () => {
    const srv = await fakeServer((req) => ok(req, [{}, {}, { uuid: ['uuid', U1] }, { uuid: ['uuid', U2] }, { count: 1 }, {}, { error: 'constraint violation', details: 'Transaction causes multiple rows in "Interface" table to have identical values (tap7) for index on column "name".' }]));
    const db = await client(srv.path);
    const e = await failure(db.addPort({ bridge: 'b', port: 'tap7', mac: '52:54:00:12:34:56', leaseId: 'L' }));
    expect(e.failure).toBe('port');
    expect(e.message).toContain('identical values (tap7)');
  });

  it('addPort refuses names and MACs it would not put in the database, before sending anything', async () => {
    const srv = await fakeServer((req) => ok(req, []));
    const db = await client(srv.path);
    for (const spec of [
      { bridge: 'br int', port: 'tap0', mac: '52:54:00:12:34:56', leaseId: 'L' },
      { bridge: 'br0', port: 'tap0', mac: '52:54:00:12:34:56', leaseId: 'L', ifaceId: 'a"b' },
      { bridge: 'br0', port: 'tap0', mac: '52:54:00:12:34:5G', leaseId: 'L' },
      { bridge: 'br0', port: '', mac: '52:54:00:12:34:56', leaseId: 'L' },
    ]) expect((await failure(db.addPort(spec))).failure).toBe('refused');
    expect(srv.requests).toHaveLength(0);
  });

  it('deletePort leaves a port that is not tapd\'s (or another lease\'s) alone', async () => {
    const srv = await fakeServer((req) => {
      const ops = req.params.slice(1) as Array<Record<string, unknown>>;
      if (ops[0]?.op === 'select') {
        const name = (ops[0].where as unknown[][])[0]?.[2];
        if (name === 'admin0') return ok(req, [{ rows: [{ _uuid: ['uuid', U1], external_ids: ['map', []] }] }]);
        if (name === 'tap1') return ok(req, [{ rows: [{ _uuid: ['uuid', U2], external_ids: ['map', [['tapd-lease', 'L1']]] }] }]);
        return ok(req, [{ rows: [] }]);
      }
      return ok(req, [{ count: 1 }, {}]);
    });
    const db = await client(srv.path);
    expect(await db.deletePort('admin0')).toBe('foreign');
    expect(await db.deletePort('tap1', 'L2')).toBe('foreign');
    expect(await db.deletePort('nothing')).toBe('absent');
    expect(srv.requests).toHaveLength(3);
    expect(await db.deletePort('tap1', 'L1')).toBe('deleted');
    const mutate = (srv.requests[4]?.params[1] ?? {}) as Record<string, unknown>;
    expect(mutate).toEqual({ op: 'mutate', table: 'Bridge', where: [['ports', 'includes', ['set', [['uuid', U2]]]]], mutations: [['ports', 'delete', ['set', [['uuid', U2]]]]] });
  });

  it('leasePorts reads only tapd\'s ports, with their bridges (one-element sets may be bare)', async () => {
    const srv = await fakeServer((req) => ok(req, [
      { rows: [
        { _uuid: ['uuid', U1], name: 'tap1', external_ids: ['map', [['tapd-lease', 'L1']]] },
        { _uuid: ['uuid', U2], name: 'br-int', external_ids: ['map', []] },
      ] },
      { rows: [{ name: 'br-int', ports: ['set', [['uuid', U1], ['uuid', U2]]] }, { name: 'br-x', ports: ['set', []] }] },
    ]));
    const db = await client(srv.path);
    expect(await db.leasePorts()).toEqual([{ port: 'tap1', bridge: 'br-int', leaseId: 'L1' }]);
  });

  it('refuses replies of the wrong shape, and an answer to nothing it asked', async () => {
    const bads: unknown[] = [
      (req: Req) => ok(req, { rows: [] }), // not an array
      (req: Req) => ok(req, [{ rows: [] }, { rows: [] }]), // too many results
      (req: Req) => ok(req, [{ rows: 'x' }]),
      (req: Req) => ok(req, [{ rows: [{ name: 'b' }] }]), // no datapath_type column
      (_req: Req) => ({ id: 999, result: [], error: null }),
      (req: Req) => ({ id: req.id, result: [] }), // no error member
      () => '[1]',
    ];
    for (const make of bads as Array<(req: Req) => unknown>) {
      const srv = await fakeServer((req) => make(req));
      const db = await client(srv.path);
      const e = await failure(db.bridge('b'));
      expect(e.failure, e.message).toBe('protocol');
    }
  });

  it('a server error is "refused", with its text', async () => {
    const srv = await fakeServer((req) => ({ id: req.id, result: null, error: { error: 'unknown database', details: 'Open_vSwitch is not a database' } }));
    const db = await client(srv.path);
    const e = await failure(db.bridge('b'));
    expect(e.failure).toBe('refused');
    expect(e.message).toContain('unknown database: Open_vSwitch is not a database');
  });

  it('answers the server\'s echo probe and goes on', async () => {
    let echoed: unknown;
    const srv = await fakeServer((req, sock) => {
      if (req.method === 'transact') {
        sock.write(JSON.stringify({ id: 'echo', method: 'echo', params: ['probe'] }));
        sock.once('data', (d) => {
          echoed = JSON.parse(d.toString());
          sock.write(JSON.stringify(ok(req, [{ rows: [{ name: 'b', datapath_type: 'netdev' }] }])));
        });
      }
      return undefined;
    });
    const db = await client(srv.path);
    expect(await db.bridge('b')).toEqual({ name: 'b', datapathType: 'netdev' });
    expect(echoed).toEqual({ id: 'echo', result: ['probe'], error: null });
  });

  it('a call that gets no answer times out and closes the connection', async () => {
    const srv = await fakeServer(() => undefined);
    const db = await client(srv.path, 200);
    const e = await failure(db.bridge('b'));
    expect(e.failure).toBe('timeout');
    expect(e.message).toMatch(/did not answer transact within 200 ms/);
    expect(db.closed).toBe(true);
    expect((await failure(db.bridge('b'))).failure).toBe('connect');
  });

  it('a reply over the size cap is refused and the connection closed', async () => {
    const srv = await fakeServer((req) => ok(req, [{ rows: [{ name: 'x'.repeat(5000), datapath_type: '' }] }]));
    const db = await client(srv.path, 2000, 1024);
    const e = await failure(db.bridge('b'));
    expect(e.failure).toBe('protocol');
    expect(e.message).toMatch(/larger than 1024 bytes/);
  });

  it('waitInterface wakes on the monitor\'s update and returns once ovn-installed is set', async () => {
    let installed = false;
    let monitorId: unknown;
    const srv = await fakeServer((req, sock) => {
      if (req.method === 'monitor_cond') {
        monitorId = req.params[1];
        expect(req.params[2]).toEqual({ Interface: [{ columns: ['ofport', 'error', 'external_ids'], where: [['name', '==', 'tap1']] }] });
        setTimeout(() => {
          installed = true;
          sock.write(JSON.stringify({ id: null, method: 'update2', params: [monitorId, { Interface: {} }] }));
        }, 100);
        return ok(req, { Interface: {} });
      }
      if (req.method === 'monitor_cancel') return ok(req, {});
      const ids = [['iface-id', 'lp1'], ...(installed ? [['ovn-installed', 'true']] : [])];
      return ok(req, [{ rows: [{ name: 'tap1', ofport: 3, error: ['set', []], external_ids: ['map', ids] }] }]);
    });
    const db = await client(srv.path);
    const st = await db.waitOvnInstalled('tap1', 5000);
    expect(st.externalIds['ovn-installed']).toBe('true');
    expect(st.ofport).toBe(3);
    expect(srv.requests.map((r) => r.method)).toEqual(['monitor_cond', 'transact', 'transact', 'monitor_cancel']);
  });

  it('waitInterface fails at once on ovs-vswitchd\'s error, and says what to check on timeout', async () => {
    const srv = await fakeServer((req) => {
      if (req.method !== 'transact') return ok(req, {});
      const name = ((req.params[1] as Record<string, unknown[][]>).where?.[0] ?? [])[2];
      return name === 'tap1'
        ? ok(req, [{ rows: [{ name, ofport: -1, error: 'could not open network device tap1 (No such device)', external_ids: ['map', []] }] }])
        : ok(req, [{ rows: [{ name, ofport: 4, error: ['set', []], external_ids: ['map', [['iface-id', 'lp2']]] }] }]);
    });
    const db = await client(srv.path);
    const e1 = await failure(db.waitOvnInstalled('tap1', 5000));
    expect(e1.failure).toBe('port');
    expect(e1.message).toContain('could not open network device tap1');
    const e2 = await failure(db.waitOvnInstalled('tap2', 2000)); // long enough for a loaded machine's round trips
    expect(e2.failure).toBe('ovn');
    expect(e2.message).toMatch(/did not install tap2 \(iface-id lp2\) within 2000 ms; check that ovn-controller runs/);
  });

  it('attachPort takes the port off again when the wait fails', async () => {
    const srv = await fakeServer((req) => {
      if (req.method !== 'transact') return ok(req, {});
      const ops = req.params.slice(1) as Array<Record<string, unknown>>;
      if (ops[0]?.op === 'wait') return ok(req, [{}, {}, { uuid: ['uuid', U1] }, { uuid: ['uuid', U2] }, { count: 1 }, {}]);
      if (ops[0]?.op === 'select' && ops[0].table === 'Interface') {
        return ok(req, [{ rows: [{ name: 'tap3', ofport: -1, error: 'could not open network device tap3 (No such device)', external_ids: ['map', []] }] }]);
      }
      if (ops[0]?.op === 'select') return ok(req, [{ rows: [{ _uuid: ['uuid', U2], external_ids: ['map', [['tapd-lease', 'L3']]] }] }]);
      return ok(req, [{ count: 1 }, {}]);
    });
    const db = await client(srv.path);
    const e = await failure(db.attachPort({ bridge: 'br-int', port: 'tap3', mac: '52:54:00:12:34:56', leaseId: 'L3', ifaceId: 'lp' }, { timeoutMs: 5000 }));
    expect(e.failure).toBe('port');
    const last = srv.requests.at(-1)?.params[1] as Record<string, unknown>;
    expect(last).toEqual({ op: 'mutate', table: 'Bridge', where: [['ports', 'includes', ['set', [['uuid', U2]]]]], mutations: [['ports', 'delete', ['set', [['uuid', U2]]]]] });
  });
});
