// A minimal OVSDB client (RFC 7047 JSON-RPC over ovsdb-server's Unix socket) for what tapd does
// with Open vSwitch: put a lease's TAP on a bridge as a port whose Interface carries
// external_ids:iface-id / attached-mac (so ovn-controller binds it to a logical port) and
// tapd-lease (so tapd finds its own ports again), and take it off when the lease ends.
//
// Why the database protocol and not ovs-vsctl:
// - cost per open: ovs-vsctl is a process per call that reads whole tables before it writes
//   (measured here on a near-empty database: add-port 8 ms, del-port 4 ms, with --no-wait);
//   connect + one transaction + close on the Unix socket is ~0.5 ms and reads only our rows;
// - no shell and no argument quoting: ovs-vsctl parses `key=value` words itself, so an iface-id
//   or name with '=' ',' '"' or '{' would need escaping rules of its own; here values are JSON;
// - exact errors: a transaction answers per operation ("constraint violation" with the column and
//   value, our own "wait" failing = the bridge is missing), instead of a stderr line to scrape;
// - it imports nothing but node:* (no ffi, no child processes), so it runs anywhere in the daemon.
//
// The database is always "Open_vSwitch". Every call has a timeout; a timed-out call closes the
// connection (its outcome is unknown, so later replies are not trusted). What is read is capped
// (maxMessageBytes) and parsed strictly: anything unexpected is an OvsdbError('protocol').
import net from 'node:net';
import { OvsdbError } from './ovsdb-error.js';

export { OvsdbError } from './ovsdb-error.js';

const DB = 'Open_vSwitch';
/** Debian's ovsdb-server socket (ovs-vsctl's default). */
export const DEFAULT_OVSDB_SOCKET = '/run/openvswitch/db.sock';
const DEFAULT_TIMEOUT_MS = 5_000;
const DEFAULT_MAX_MESSAGE_BYTES = 16 << 20;
/** Our replies are at most ~10 levels deep; far deeper input is not OVSDB. */
const MAX_DEPTH = 64;
/** external_ids key that marks a Port and Interface as tapd's, with the lease id as value. */
export const LEASE_KEY = 'tapd-lease';

// ---------------------------------------------------------------------------------------------
// Framing: ovsdb-server sends JSON objects back to back, with no delimiter or length prefix.

/**
 * Splits a byte stream into top-level JSON objects. Tracks strings and escapes so braces inside
 * strings do not count; UTF-8 continuation bytes are >= 0x80 and never look like syntax.
 */
export class JsonStream {
  private parts: Buffer[] = [];
  private partBytes = 0;
  private depth = 0;
  private inString = false;
  private escape = false;

  constructor(private readonly maxMessageBytes: number = DEFAULT_MAX_MESSAGE_BYTES) {}

  /** Feeds bytes; returns the complete messages they finish. Throws OvsdbError('protocol'). */
  push(chunk: Buffer): unknown[] {
    const out: unknown[] = [];
    let start = this.depth > 0 ? 0 : -1;
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i] as number;
      if (this.depth === 0) {
        if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) continue;
        if (c !== 0x7b) throw new OvsdbError('protocol', `Open vSwitch's database sent ${describeByte(c)} where a JSON object should start; is the socket really ovsdb-server's?`);
        start = i;
        this.depth = 1;
        continue;
      }
      if (this.inString) {
        if (this.escape) this.escape = false;
        else if (c === 0x5c) this.escape = true;
        else if (c === 0x22) this.inString = false;
        continue;
      }
      if (c === 0x22) this.inString = true;
      else if (c === 0x7b || c === 0x5b) {
        if (++this.depth > MAX_DEPTH) throw new OvsdbError('protocol', `Open vSwitch's database sent JSON nested deeper than ${MAX_DEPTH} levels`);
      } else if (c === 0x7d || c === 0x5d) {
        if (--this.depth === 0) {
          const piece = chunk.subarray(start, i + 1);
          const total = this.partBytes + piece.length;
          if (total > this.maxMessageBytes) throw tooBig(this.maxMessageBytes);
          const bytes = this.parts.length ? Buffer.concat([...this.parts, piece], total) : piece;
          this.parts = [];
          this.partBytes = 0;
          start = -1;
          let value: unknown;
          try {
            value = JSON.parse(bytes.toString('utf8'));
          } catch (err) {
            throw new OvsdbError('protocol', `Open vSwitch's database sent malformed JSON (${(err as Error).message})`);
          }
          out.push(value);
        }
      }
    }
    if (this.depth > 0 && start >= 0) {
      const piece = chunk.subarray(start);
      this.partBytes += piece.length;
      if (this.partBytes > this.maxMessageBytes) throw tooBig(this.maxMessageBytes);
      // Copy: the socket may reuse its buffer.
      this.parts.push(Buffer.from(piece));
    }
    return out;
  }

  /** True between messages (nothing half-read). */
  get idle(): boolean {
    return this.depth === 0;
  }
}

function tooBig(max: number): OvsdbError {
  return new OvsdbError('protocol', `a message from Open vSwitch's database is larger than ${max} bytes; refusing to read it (raise maxMessageBytes if the database is really that big)`);
}

function describeByte(c: number): string {
  return c >= 0x21 && c < 0x7f ? `'${String.fromCharCode(c)}'` : `byte 0x${c.toString(16).padStart(2, '0')}`;
}

// ---------------------------------------------------------------------------------------------
// OVSDB values (RFC 7047 section 5.1) and their strict readers.

export type OvsdbAtom = string | number | boolean | ['uuid', string] | ['named-uuid', string];
export type OvsdbValue = OvsdbAtom | ['set', OvsdbAtom[]] | ['map', Array<[OvsdbAtom, OvsdbAtom]>];
export type OvsdbRow = Record<string, unknown>;
/** One operation of a transaction (RFC 7047 5.2); kept loose, the server checks it. */
export type OvsdbOperation = Record<string, unknown> & { op: string };
export interface OvsdbOpResult {
  count?: number;
  rows?: OvsdbRow[];
  uuid?: ['uuid', string];
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function bad(what: string, v: unknown): OvsdbError {
  let shown = JSON.stringify(v) ?? String(v);
  if (shown.length > 120) shown = `${shown.slice(0, 117)}...`;
  return new OvsdbError('protocol', `Open vSwitch's database sent ${shown} where ${what} was expected`);
}

/** ["map", [[k, v], ...]] of strings -> object. */
export function readStringMap(v: unknown, what = 'a string map'): Record<string, string> {
  if (!Array.isArray(v) || v.length !== 2 || v[0] !== 'map' || !Array.isArray(v[1])) throw bad(what, v);
  const out: Record<string, string> = Object.create(null);
  for (const pair of v[1] as unknown[]) {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') throw bad(what, v);
    out[pair[0]] = pair[1];
  }
  return out;
}

export function readUuid(v: unknown, what = 'a uuid'): string {
  if (!Array.isArray(v) || v.length !== 2 || v[0] !== 'uuid' || typeof v[1] !== 'string' || !UUID_RE.test(v[1])) throw bad(what, v);
  return v[1];
}

/** A set of uuids: one ["uuid", u] atom or ["set", [...]] (RFC 7047: a 1-element set may be bare). */
export function readUuidSet(v: unknown, what = 'a set of uuids'): string[] {
  if (Array.isArray(v) && v[0] === 'set') {
    if (v.length !== 2 || !Array.isArray(v[1])) throw bad(what, v);
    return (v[1] as unknown[]).map((a) => readUuid(a, what));
  }
  return [readUuid(v, what)];
}

/** An integer column, or an optional one (["set", []] when empty): null when empty. */
export function readOptionalInteger(v: unknown, what = 'an integer'): number | null {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (Array.isArray(v) && v.length === 2 && v[0] === 'set' && Array.isArray(v[1])) {
    if (v[1].length === 0) return null;
    if (v[1].length === 1 && typeof v[1][0] === 'number' && Number.isInteger(v[1][0])) return v[1][0];
  }
  throw bad(what, v);
}

/** A string column, or an optional one: null when empty. */
export function readOptionalString(v: unknown, what = 'a string'): string | null {
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && v.length === 2 && v[0] === 'set' && Array.isArray(v[1])) {
    if (v[1].length === 0) return null;
    if (v[1].length === 1 && typeof v[1][0] === 'string') return v[1][0];
  }
  throw bad(what, v);
}

export function stringMap(obj: Record<string, string>): ['map', Array<[string, string]>] {
  return ['map', Object.entries(obj)];
}

function column(row: OvsdbRow, name: string): unknown {
  if (!Object.prototype.hasOwnProperty.call(row, name)) throw bad(`a row with column ${name}`, row);
  return row[name];
}

/** The server's error value, readable: "constraint violation: Transaction causes ...". */
function errorText(e: unknown): string {
  if (typeof e === 'string') return e;
  if (isPlainObject(e)) {
    const main = typeof e.error === 'string' ? e.error : JSON.stringify(e);
    return typeof e.details === 'string' ? `${main}: ${e.details}` : main;
  }
  return JSON.stringify(e) ?? String(e);
}

// ---------------------------------------------------------------------------------------------
// The connection.

export interface OvsdbOptions {
  /** ovsdb-server's Unix socket (default /run/openvswitch/db.sock). */
  socketPath?: string;
  /** Per call, and for connecting (default 5 s). */
  timeoutMs?: number;
  /** Largest message read (default 16 MiB). */
  maxMessageBytes?: number;
}

interface Pending {
  method: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** Called with the index of the failed operation and the server's error text; returns an error to throw instead. */
export type ExplainFailure = (opIndex: number, error: string, details: string) => OvsdbError | undefined;

export interface TransactOptions {
  timeoutMs?: number;
  explain?: ExplainFailure;
}

export interface LeasePortSpec {
  /** The Open vSwitch bridge (e.g. br-int). It must exist. */
  bridge: string;
  /** The TAP's name: becomes the Port's and the Interface's name. */
  port: string;
  /** The guest's MAC (lower case, colon-separated). */
  mac: string;
  /** The lease id (external_ids:tapd-lease on Port and Interface). */
  leaseId: string;
  /** OVN logical port name; omitted for a plain OVS bridge. */
  ifaceId?: string;
}

export interface LeasePort {
  /** Port (= Interface = TAP) name. */
  port: string;
  /** Bridge holding it, or null if no bridge does (should not persist: the server collects orphans). */
  bridge: string | null;
  leaseId: string;
}

export interface InterfaceState {
  name: string;
  /** OpenFlow port number; null until ovs-vswitchd has added it, -1 when it could not. */
  ofport: number | null;
  /** ovs-vswitchd's reason when it could not add the interface. */
  error: string | null;
  externalIds: Record<string, string>;
}

const NAME_RE = /^[A-Za-z0-9_.:@+-]{1,64}$/;
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

function checkName(what: string, v: string): void {
  if (!NAME_RE.test(v)) throw new OvsdbError('refused', `${what} ${JSON.stringify(v)} is not a name tapd puts in Open vSwitch (1-64 of A-Z a-z 0-9 _ . : @ + -)`);
}

export class OvsdbClient {
  private readonly sock: net.Socket;
  private readonly stream: JsonStream;
  private readonly pending = new Map<number, Pending>();
  private readonly monitors = new Map<string, () => void>();
  private nextId = 1;
  private closedBy: OvsdbError | undefined;
  readonly socketPath: string;
  readonly timeoutMs: number;
  readonly maxMessageBytes: number;

  private constructor(sock: net.Socket, socketPath: string, timeoutMs: number, maxMessageBytes: number) {
    this.sock = sock;
    this.socketPath = socketPath;
    this.timeoutMs = timeoutMs;
    this.maxMessageBytes = maxMessageBytes;
    this.stream = new JsonStream(maxMessageBytes);
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', (err) => this.fail(new OvsdbError('connect', `the connection to Open vSwitch's database at ${socketPath} failed (${(err as NodeJS.ErrnoException).code ?? err.message}); check that ovsdb-server runs`, { cause: err })));
    sock.on('close', () => this.fail(new OvsdbError('connect', `Open vSwitch's database at ${socketPath} closed the connection; check that ovsdb-server runs (its log says why it dropped us)`)));
  }

  /** Connects to ovsdb-server. Throws OvsdbError('connect' | 'timeout'). */
  static connect(opts: OvsdbOptions = {}): Promise<OvsdbClient> {
    const socketPath = opts.socketPath ?? DEFAULT_OVSDB_SOCKET;
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const max = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    return new Promise((resolve, reject) => {
      const sock = net.createConnection({ path: socketPath });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new OvsdbError('timeout', `connecting to Open vSwitch's database at ${socketPath} took longer than ${timeoutMs} ms; check that ovsdb-server is not stuck`));
      }, timeoutMs);
      sock.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        const hint = err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? 'is ovsdb-server running, and is this its socket (ovs-vsctl --db=unix:PATH)?' : 'check the socket and that tapd may open it';
        reject(new OvsdbError('connect', `cannot connect to Open vSwitch's database at ${socketPath} (${err.code ?? err.message}): ${hint}`, { cause: err }));
      });
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        resolve(new OvsdbClient(sock, socketPath, timeoutMs, max));
      });
    });
  }

  /** Closes the connection; pending calls fail with 'connect'. Idempotent. */
  close(): void {
    this.fail(new OvsdbError('connect', `the connection to Open vSwitch's database at ${this.socketPath} was closed by tapd`));
  }

  get closed(): boolean {
    return this.closedBy !== undefined;
  }

  private fail(err: OvsdbError): void {
    if (!this.closedBy) this.closedBy = err;
    this.sock.destroy();
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(err);
    }
    for (const wake of this.monitors.values()) wake();
  }

  private onData(d: Buffer): void {
    let msgs: unknown[];
    try {
      msgs = this.stream.push(d);
    } catch (err) {
      this.fail(err as OvsdbError);
      return;
    }
    for (const m of msgs) {
      try {
        this.dispatch(m);
      } catch (err) {
        this.fail(err instanceof OvsdbError ? err : new OvsdbError('protocol', String(err)));
        return;
      }
    }
  }

  private dispatch(m: unknown): void {
    if (!isPlainObject(m)) throw bad('a JSON-RPC object', m);
    if ('method' in m) {
      if (typeof m.method !== 'string' || !Array.isArray(m.params) || !('id' in m)) throw bad('a JSON-RPC request or notification', m);
      if (m.id === null) {
        // update / update2 / update3: our monitors only need the wake-up (they re-read the row).
        if (m.method === 'update' || m.method === 'update2' || m.method === 'update3') {
          const wake = typeof m.params[0] === 'string' ? this.monitors.get(m.params[0]) : undefined;
          wake?.();
        }
        return;
      }
      // The server's inactivity probe: answer it, or it drops us.
      if (m.method === 'echo') this.send({ id: m.id, result: m.params, error: null });
      else this.send({ id: m.id, result: null, error: 'unknown method' });
      return;
    }
    if (!('id' in m) || !('result' in m) || !('error' in m) || typeof m.id !== 'number') throw bad('a JSON-RPC response', m);
    const p = this.pending.get(m.id);
    if (!p) throw bad('a reply to a request of ours', m);
    this.pending.delete(m.id);
    clearTimeout(p.timer);
    if (m.error !== null) p.reject(new OvsdbError('refused', `Open vSwitch's database refused ${p.method}: ${errorText(m.error)}`));
    else p.resolve(m.result);
  }

  private send(msg: unknown): void {
    this.sock.write(JSON.stringify(msg));
  }

  /** One JSON-RPC call. Throws OvsdbError('connect' | 'timeout' | 'refused' | 'protocol'). */
  call(method: string, params: unknown[], timeoutMs = this.timeoutMs): Promise<unknown> {
    if (this.closedBy) return Promise.reject(this.closedBy);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new OvsdbError('timeout', `Open vSwitch's database at ${this.socketPath} did not answer ${method} within ${timeoutMs} ms; check that ovsdb-server is not stuck (its outcome is unknown, the connection is closed)`));
        this.fail(new OvsdbError('connect', `the connection to Open vSwitch's database at ${this.socketPath} was closed after a call timed out`));
      }, timeoutMs);
      this.pending.set(id, { method, resolve, reject, timer });
      this.send({ id, method, params });
    });
  }

  /**
   * An atomic transaction on Open_vSwitch. Returns one result per operation; if one failed,
   * throws OvsdbError('refused') naming it (or what `explain` makes of it).
   */
  async transact(ops: OvsdbOperation[], opts: TransactOptions = {}): Promise<OvsdbOpResult[]> {
    const result = await this.call('transact', [DB, ...ops], opts.timeoutMs);
    // RFC 7047 4.1.3: one element per operation, plus one when the commit itself failed.
    if (!Array.isArray(result) || (result.length !== ops.length && result.length !== ops.length + 1)) {
      throw bad(`an array of ${ops.length} operation results`, result);
    }
    for (let i = 0; i < result.length; i++) {
      const r: unknown = result[i];
      if (r === null) continue; // not run, after an earlier failure
      if (!isPlainObject(r)) throw bad('an operation result object', r);
      if ('error' in r) {
        const error = typeof r.error === 'string' ? r.error : JSON.stringify(r.error);
        const details = typeof r.details === 'string' ? r.details : '';
        const explained = opts.explain?.(i, error, details);
        if (explained) throw explained;
        const what = i < ops.length ? `operation ${i + 1} (${ops[i]?.op} ${String(ops[i]?.table ?? '')})`.replace(/ \)$/, ')') : 'the commit';
        throw new OvsdbError('refused', `Open vSwitch's database refused ${what} of a transaction: ${error}${details ? `: ${details}` : ''}`);
      }
    }
    // Nothing failed: every operation has a result and there is no commit error element.
    if (result.length !== ops.length || result.some((r) => r === null)) throw bad('a result for every operation', result);
    return result.slice(0, ops.length).map((r, i) => checkResult(ops[i] as OvsdbOperation, r as Record<string, unknown>));
  }

  // ------------------------------------------------------------------------------------------
  // What tapd does.

  /** The bridge's datapath_type ("" = the kernel's "system", "netdev" = userspace), or null if no such bridge. */
  async bridge(name: string): Promise<{ name: string; datapathType: string } | null> {
    const [sel] = await this.transact([{ op: 'select', table: 'Bridge', where: [['name', '==', name]], columns: ['name', 'datapath_type'] }]);
    const rows = sel?.rows ?? [];
    if (rows.length === 0) return null;
    if (rows.length > 1) throw bad('at most one bridge of that name', rows);
    const row = rows[0] as OvsdbRow;
    const dt = column(row, 'datapath_type');
    if (typeof dt !== 'string') throw bad('a datapath_type string', dt);
    return { name, datapathType: dt };
  }

  /**
   * In one transaction: a Port and its Interface named `port` on `bridge`, the Interface's
   * external_ids = {iface-id?, attached-mac, tapd-lease}, the Port's = {tapd-lease}. Fails,
   * changing nothing, when the bridge is missing ('bridge') or a port of that name exists ('port').
   * Returns the new Port's uuid. ovs-vswitchd applies it shortly after: see waitInterface.
   */
  async addPort(spec: LeasePortSpec, timeoutMs?: number): Promise<string> {
    checkName('bridge', spec.bridge);
    checkName('port', spec.port);
    checkName('lease id', spec.leaseId);
    if (spec.ifaceId !== undefined) checkName('iface-id', spec.ifaceId);
    if (!MAC_RE.test(spec.mac)) throw new OvsdbError('refused', `MAC ${JSON.stringify(spec.mac)} is not lower-case colon-separated`);
    const ifaceIds: Record<string, string> = {};
    if (spec.ifaceId !== undefined) ifaceIds['iface-id'] = spec.ifaceId;
    ifaceIds['attached-mac'] = spec.mac;
    ifaceIds[LEASE_KEY] = spec.leaseId;
    const ops: OvsdbOperation[] = [
      // The bridge exists (a wait that cannot be satisfied fails at once with timeout 0) ...
      { op: 'wait', table: 'Bridge', where: [['name', '==', spec.bridge]], columns: ['name'], until: '==', rows: [{ name: spec.bridge }], timeout: 0 },
      // ... and no port has the name yet (the index would refuse too, in less clear words).
      { op: 'wait', table: 'Port', where: [['name', '==', spec.port]], columns: ['name'], until: '==', rows: [], timeout: 0 },
      { op: 'insert', table: 'Interface', 'uuid-name': 'tapdiface', row: { name: spec.port, type: '', external_ids: stringMap(ifaceIds) } },
      { op: 'insert', table: 'Port', 'uuid-name': 'tapdport', row: { name: spec.port, interfaces: ['named-uuid', 'tapdiface'], external_ids: stringMap({ [LEASE_KEY]: spec.leaseId }) } },
      { op: 'mutate', table: 'Bridge', where: [['name', '==', spec.bridge]], mutations: [['ports', 'insert', ['set', [['named-uuid', 'tapdport']]]]] },
      // Shown by `ovsdb-tool show-log` / in the server's log: who changed the switch, and why.
      { op: 'comment', comment: `tapd: lease ${spec.leaseId} adds port ${spec.port} to ${spec.bridge}` },
    ];
    const results = await this.transact(ops, {
      timeoutMs,
      explain: (i, error, details) => {
        if (i === 0 && error === 'timed out') return new OvsdbError('bridge', `Open vSwitch has no bridge ${spec.bridge}; create it (ovs-vsctl add-br ${spec.bridge}; with OVN, ovn-controller creates br-int) or fix the network's bridge in tapd.conf`);
        if (i === 1 && error === 'timed out') return new OvsdbError('port', `Open vSwitch already has a port named ${spec.port}; if it is a stale tapd port, tapd removes it at start, else remove it (ovs-vsctl del-port ${spec.port})`);
        if (error === 'constraint violation') return new OvsdbError('port', `Open vSwitch refused port ${spec.port} on ${spec.bridge}: ${details || error}`);
        return undefined;
      },
    });
    const mutated = results[4]?.count;
    if (mutated !== 1) throw bad('one bridge changed', results[4]);
    const inserted = results[3]?.uuid;
    return readUuid(inserted, 'the new port\'s uuid');
  }

  /**
   * Takes tapd's port `name` off its bridge (the server then drops the Port and Interface rows).
   * Only a port that carries tapd-lease (equal to `leaseId` when given) is touched:
   * 'deleted', 'absent' (no such port), or 'foreign' (a port of that name that is not ours: left alone).
   */
  async deletePort(name: string, leaseId?: string, timeoutMs?: number): Promise<'deleted' | 'absent' | 'foreign'> {
    const [sel] = await this.transact([{ op: 'select', table: 'Port', where: [['name', '==', name]], columns: ['_uuid', 'external_ids'] }], { timeoutMs });
    const rows = sel?.rows ?? [];
    if (rows.length === 0) return 'absent';
    const row = rows[0] as OvsdbRow;
    const ids = readStringMap(column(row, 'external_ids'), 'the port\'s external_ids');
    const owner = ids[LEASE_KEY];
    if (owner === undefined || (leaseId !== undefined && owner !== leaseId)) return 'foreign';
    const n = await this.detach([readUuid(column(row, '_uuid'))], `tapd: lease ${owner} ends, port ${name} removed`, timeoutMs);
    return n > 0 ? 'deleted' : 'absent';
  }

  /** Takes every port of lease `leaseId` off its bridge; returns their names. */
  async deleteLeasePorts(leaseId: string, timeoutMs?: number): Promise<string[]> {
    checkName('lease id', leaseId);
    const [sel] = await this.transact([{
      op: 'select', table: 'Port', where: [['external_ids', 'includes', stringMap({ [LEASE_KEY]: leaseId })]], columns: ['_uuid', 'name'],
    }], { timeoutMs });
    const rows = sel?.rows ?? [];
    if (rows.length === 0) return [];
    const names = rows.map((r) => {
      const n = column(r, 'name');
      if (typeof n !== 'string') throw bad('a port name', n);
      return n;
    });
    await this.detach(rows.map((r) => readUuid(column(r, '_uuid'))), `tapd: lease ${leaseId} ends, ports ${names.join(' ')} removed`, timeoutMs);
    return names;
  }

  /** Removes the port uuids from every bridge that has them; returns how many bridges changed. */
  private async detach(uuids: string[], comment: string, timeoutMs?: number): Promise<number> {
    const set = ['set', uuids.map((u) => ['uuid', u])];
    const [mut] = await this.transact([
      { op: 'mutate', table: 'Bridge', where: [['ports', 'includes', set]], mutations: [['ports', 'delete', set]] },
      { op: 'comment', comment },
    ], { timeoutMs });
    return mut?.count ?? 0;
  }

  /** Every port that carries external_ids:tapd-lease, with its bridge (for the daemon's startup reconcile). */
  async leasePorts(timeoutMs?: number): Promise<LeasePort[]> {
    const [ports, bridges] = await this.transact([
      { op: 'select', table: 'Port', where: [], columns: ['_uuid', 'name', 'external_ids'] },
      { op: 'select', table: 'Bridge', where: [], columns: ['name', 'ports'] },
    ], { timeoutMs });
    const bridgeOf = new Map<string, string>();
    for (const b of bridges?.rows ?? []) {
      const bname = column(b, 'name');
      if (typeof bname !== 'string') throw bad('a bridge name', bname);
      for (const u of readUuidSet(column(b, 'ports'), 'a bridge\'s ports')) bridgeOf.set(u, bname);
    }
    const out: LeasePort[] = [];
    for (const p of ports?.rows ?? []) {
      const lease = readStringMap(column(p, 'external_ids'), 'a port\'s external_ids')[LEASE_KEY];
      if (lease === undefined) continue;
      const name = column(p, 'name');
      if (typeof name !== 'string') throw bad('a port name', name);
      out.push({ port: name, bridge: bridgeOf.get(readUuid(column(p, '_uuid'))) ?? null, leaseId: lease });
    }
    return out;
  }

  /** The Interface row `name`, or null. */
  async interfaceState(name: string, timeoutMs?: number): Promise<InterfaceState | null> {
    const [sel] = await this.transact([{ op: 'select', table: 'Interface', where: [['name', '==', name]], columns: ['name', 'ofport', 'error', 'external_ids'] }], { timeoutMs });
    const row = sel?.rows?.[0];
    if (!row) return null;
    return {
      name,
      ofport: readOptionalInteger(column(row, 'ofport'), 'an ofport'),
      error: readOptionalString(column(row, 'error'), 'an interface error'),
      externalIds: readStringMap(column(row, 'external_ids'), 'an interface\'s external_ids'),
    };
  }

  /**
   * Waits until ovs-vswitchd has added Interface `name` (ofport > 0) and, with `ovnInstalled`,
   * until ovn-controller has set external_ids:ovn-installed="true" (its flows for the logical
   * port are in place). Wakes on a monitor_cond of that one row, reads it with a select.
   * Throws OvsdbError: 'port' at once when ovs-vswitchd reports an error for it or the row goes
   * away, 'ovn' / 'port' when `timeoutMs` passes first.
   */
  async waitInterface(name: string, opts: { timeoutMs: number; ovnInstalled?: boolean }): Promise<InterfaceState> {
    const end = Date.now() + opts.timeoutMs;
    const monitorId = `tapd-wait-${this.nextId}`;
    let wake: () => void = () => {};
    let woken = false;
    this.monitors.set(monitorId, () => {
      woken = true;
      wake();
    });
    let monitoring = false;
    try {
      await this.call('monitor_cond', [DB, monitorId, { Interface: [{ columns: ['ofport', 'error', 'external_ids'], where: [['name', '==', name]] }] }], Math.max(1, Math.min(this.timeoutMs, end - Date.now())));
      monitoring = true;
      for (;;) {
        woken = false;
        // Each read gets a call's own timeout: the last one starts at the deadline, and must still
        // be able to answer (else a wait that ran out reads as a dead database).
        const st = await this.interfaceState(name, this.timeoutMs);
        if (!st) throw new OvsdbError('port', `Open vSwitch has no interface ${name} (it went away while tapd waited for it)`);
        if (st.error) throw new OvsdbError('port', `ovs-vswitchd could not add ${name}: ${st.error}`);
        const added = st.ofport !== null && st.ofport > 0;
        if (added && (!opts.ovnInstalled || st.externalIds['ovn-installed'] === 'true')) return st;
        if (this.closedBy) throw this.closedBy;
        if (Date.now() >= end) {
          if (!added) throw new OvsdbError('port', `ovs-vswitchd did not add ${name} within ${opts.timeoutMs} ms; check that ovs-vswitchd runs (ovs-appctl version)`);
          const iid = st.externalIds['iface-id'] ?? '(none)';
          throw new OvsdbError('ovn', `ovn-controller did not install ${name} (iface-id ${iid}) within ${opts.timeoutMs} ms; check that ovn-controller runs and that the logical switch port ${iid} exists in the northbound database (ovn-nbctl lsp-list) and is not bound elsewhere`);
        }
        if (!woken) {
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, Math.max(1, end - Date.now()));
            wake = () => {
              clearTimeout(t);
              resolve();
            };
          });
          wake = () => {};
        }
      }
    } finally {
      this.monitors.delete(monitorId);
      if (monitoring && !this.closedBy) await this.call('monitor_cancel', [monitorId]).catch(() => {});
    }
  }

  /**
   * The open path in one call: addPort, then waitInterface (ovn-installed too when the spec has
   * an iface-id and `ovnInstalled` is not false). If the wait fails, the port is removed again
   * before the error is thrown, so a failed open leaves no port; should that removal fail too
   * (the database went away), the startup reconcile finds the port by its tapd-lease mark.
   */
  async attachPort(spec: LeasePortSpec, opts: { timeoutMs: number; ovnInstalled?: boolean }): Promise<InterfaceState> {
    await this.addPort(spec);
    try {
      return await this.waitInterface(spec.port, { timeoutMs: opts.timeoutMs, ovnInstalled: opts.ovnInstalled ?? spec.ifaceId !== undefined });
    } catch (err) {
      // A call that timed out closed this connection: undo on a fresh one.
      const undo = async (db: OvsdbClient) => db.deletePort(spec.port, spec.leaseId);
      if (!this.closed) await undo(this).catch(() => {});
      else await withOvsdb({ socketPath: this.socketPath, timeoutMs: this.timeoutMs, maxMessageBytes: this.maxMessageBytes }, undo).catch(() => {});
      throw err;
    }
  }

  /** waitInterface with ovnInstalled. */
  waitOvnInstalled(name: string, timeoutMs: number): Promise<InterfaceState> {
    return this.waitInterface(name, { timeoutMs, ovnInstalled: true });
  }
}

function checkResult(op: OvsdbOperation, r: Record<string, unknown>): OvsdbOpResult {
  switch (op.op) {
    case 'select':
      if (!Array.isArray(r.rows) || !r.rows.every(isPlainObject)) throw bad('select\'s rows', r);
      return { rows: r.rows as OvsdbRow[] };
    case 'insert':
      return { uuid: ['uuid', readUuid(r.uuid, 'insert\'s uuid')] };
    case 'update':
    case 'mutate':
    case 'delete':
      if (typeof r.count !== 'number' || !Number.isInteger(r.count) || r.count < 0) throw bad(`${op.op}'s count`, r);
      return { count: r.count };
    default:
      return {};
  }
}

/** Connects, runs `fn`, closes. One short connection per open or lease end is cheap on a Unix socket. */
export async function withOvsdb<T>(opts: OvsdbOptions, fn: (db: OvsdbClient) => Promise<T>): Promise<T> {
  const db = await OvsdbClient.connect(opts);
  try {
    return await fn(db);
  } finally {
    db.close();
  }
}
