// The lease table: every TAP handed out, who owns it, and the quota it holds.
// Quotas are counted from this table (reservations included), so a slot is free exactly when
// its entry is gone. Every change is appended to a journal in the state dir before the daemon
// acts on it, so a crash loses nothing that a restart needs to reconcile.
import { MAX_MTU, MAX_QUEUES, MIN_MTU } from '../protocol/messages.js';
import { randomBytes } from '../sys/random.js';
import { closeSync, constants as fsc, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import { ensureOwnDirectory, openOwnFile } from '../common/trust.js';
import { TapdError } from '../errors/tapd-error.js';
import { ifNameProblem } from '../sys/ifname.js';
import { Mac } from '../sys/mac.js';
import { PORT_NAME_RE } from '../protocol/messages.js';

export interface Lease {
  id: string;
  ownerUid: number;
  /** The client process that asked (for the log; the emulator may be another process). */
  pid: number;
  network: string;
  bridge: string | null;
  /** The guest's MAC (the TAP's host side uses Mac.hostSide of it). */
  mac: string;
  mtu: number;
  queues: number;
  vnetHdr: boolean;
  ifname: string;
  ifindex: number;
  started: string;
  /** The up hook ran, so the down hook must run when the lease ends. */
  upRan: boolean;
  /** 'macvtap': a macvtap device on the network's NIC (the guest's MAC is the device's); absent: a TAP. */
  kind?: 'macvtap';
  /** The VLAN of its bridge port, when its network has one. */
  vlan?: number;
  /** A bridge helper's lease: QEMU chose the guest's MAC; `mac` only derives the host side. */
  macUnknown?: true;
  /** ovs networks: the logical port (OVN iface-id) this lease binds. */
  port?: string;
  /** ovs networks: ovsdb-server's socket, where the lease's port is removed when it ends. */
  ovsdb?: string;
}

/** A slot held while an open is in progress: it counts against quotas and reserves its MAC and name. */
export interface Reservation {
  id: string;
  ownerUid: number;
  network: string;
  mac: string;
  /** The TAP's name, chosen by tapd: never one a live or still-ending lease has (hooks get names). */
  ifname: string;
  /** ovs networks: the logical port, taken from the reservation on (no two leases bind one). */
  port?: string;
}

/** One journal line. */
type Entry = { start: Lease } | { end: string };

/** Rewrite the journal once it holds this many lines per live lease (plus a constant). */
const COMPACT_FACTOR = 4;
const COMPACT_SLACK = 64;

const MAX_ID = 0xfffffffe;
type OptionalField = 'port' | 'ovsdb' | 'kind' | 'vlan' | 'macUnknown';
/** Fields a lease may lack (leases on other networks, and journals of earlier versions). */
const OPTIONAL_FIELDS: Record<OptionalField, (v: unknown) => string | undefined> = {
  port: (v) => (typeof v === 'string' && PORT_NAME_RE.test(v) ? undefined : 'must be a logical port name (1 to 64 of A-Z a-z 0-9 _ . : @ + -)'),
  ovsdb: (v) => (typeof v === 'string' && v.startsWith('/') && v.length <= 107 ? undefined : 'must be an absolute socket path'),
  kind: (v) => (v === 'macvtap' ? undefined : 'must be "macvtap" when present'),
  vlan: (v) => (Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 4094 ? undefined : 'must be a VLAN id from 1 to 4094'),
  macUnknown: (v) => (v === true ? undefined : 'must be true when present'),
};
const LEASE_FIELDS: Record<Exclude<keyof Lease, OptionalField>, (v: unknown) => string | undefined> = {
  id: (v) => (typeof v === 'string' && /^[0-9a-f]{16}$/.test(v) ? undefined : 'must be 16 lowercase hex digits'),
  ownerUid: (v) => (Number.isInteger(v) && (v as number) >= 0 && (v as number) <= MAX_ID ? undefined : `must be an integer uid from 0 to ${MAX_ID}`),
  pid: (v) => (Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0x7fffffff ? undefined : 'must be a process id (an integer from 0)'),
  network: (v) => nameProblem(v),
  bridge: (v) => (v === null ? undefined : nameProblem(v)),
  mac: (v) => macProblem(v),
  mtu: (v) => (Number.isInteger(v) && (v as number) >= MIN_MTU && (v as number) <= MAX_MTU ? undefined : `must be an integer from ${MIN_MTU} to ${MAX_MTU}`),
  queues: (v) => (Number.isInteger(v) && (v as number) >= 1 && (v as number) <= MAX_QUEUES ? undefined : `must be an integer from 1 to ${MAX_QUEUES}`),
  vnetHdr: (v) => (typeof v === 'boolean' ? undefined : 'must be true or false'),
  ifname: (v) => nameProblem(v),
  ifindex: (v) => (Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 0x7fffffff ? undefined : 'must be an interface index (an integer from 1)'),
  started: (v) => (typeof v === 'string' && v.length > 0 && v.length <= 64 ? undefined : 'must be a time stamp (a string of 1 to 64 characters)'),
  upRan: (v) => (typeof v === 'boolean' ? undefined : 'must be true or false'),
};

function nameProblem(v: unknown): string | undefined {
  if (typeof v !== 'string') return 'must be an interface name (a string)';
  const p = ifNameProblem(v);
  return p === undefined ? undefined : `${JSON.stringify(v)} ${p}`;
}

function macProblem(v: unknown): string | undefined {
  try {
    Mac.parse(v as string); // the kernel layer's one MAC rule (it checks the type too)
    return undefined;
  } catch {
    return 'must be a MAC address such as 52:54:00:12:34:56';
  }
}

/** write(2) until all of `text` is written. */
function writeAll(fd: number, text: string): void {
  const buf = Buffer.from(text);
  for (let off = 0; off < buf.length;) off += writeSync(fd, buf, off);
}

/** Opens a journal file for writing (creating it); the state dir vanishing is an error too. */
function openForWrite(file: string, flags: number): number {
  const fd = openOwnFile(file, flags | fsc.O_WRONLY | fsc.O_CREAT);
  if (fd === undefined) throw new TapdError('state_invalid', `cannot create ${file}: its directory is gone; restart tapd`);
  return fd;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Why a parsed journal line is not an entry tapd wrote, or undefined when it is one. */
function entryProblem(v: unknown): string | undefined {
  if (!isObject(v)) return `expected {"start": LEASE} or {"end": ID}, found ${v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v}`;
  const keys = Object.keys(v);
  if (keys.length !== 1 || (keys[0] !== 'start' && keys[0] !== 'end')) return `expected exactly one of "start" or "end", found ${JSON.stringify(keys)}`;
  if ('end' in v) return LEASE_FIELDS.id(v.end) && `"end" ${LEASE_FIELDS.id(v.end)}`;
  const lease = v.start;
  if (!isObject(lease)) return `"start" must be a lease object, found ${lease === null ? 'null' : typeof lease}`;
  for (const [field, check] of Object.entries(LEASE_FIELDS)) {
    if (!(field in lease)) return `the lease has no "${field}"`;
    const p = check(lease[field]);
    if (p !== undefined) return `the lease's "${field}" ${p}`;
  }
  for (const [field, check] of Object.entries(OPTIONAL_FIELDS)) {
    const p = field in lease ? check(lease[field]) : undefined;
    if (p !== undefined) return `the lease's "${field}" ${p}`;
  }
  const extra = Object.keys(lease).find((k) => !(k in LEASE_FIELDS) && !(k in OPTIONAL_FIELDS));
  if (extra !== undefined) return `the lease has an unknown field "${extra}"`;
  return undefined;
}

/** Counts per key: how many entries of a set hold each value (a key is gone at 0). */
class Counter<K> {
  private readonly n = new Map<K, number>();
  add(k: K): void {
    this.n.set(k, (this.n.get(k) ?? 0) + 1);
  }
  remove(k: K): void {
    const c = this.n.get(k) ?? 0;
    if (c <= 1) this.n.delete(k);
    else this.n.set(k, c - 1);
  }
  get(k: K): number {
    return this.n.get(k) ?? 0;
  }
}

export class LeaseTable {
  // The three sets below are only changed through setLive/unsetLive/setPending/unsetPending/
  // setRetiring/unsetRetiring, which keep the indexes in step: every question an open asks
  // (quota, MAC, port, name, ifindex) is O(1) in the number of leases, not a scan of all of them.
  private readonly leases = new Map<string, Lease>();
  private readonly pending = new Map<string, Reservation>();
  /** Ended leases whose down hook has not finished: their names stay taken until it has. */
  private readonly retiring = new Map<string, Lease>();
  /** Over live and pending: */
  private readonly macs = new Counter<string>();
  private readonly ports = new Counter<string>();
  private readonly perUid = new Counter<number>();
  private readonly perUidNetwork = new Map<number, Counter<string>>();
  /** Over live, pending and retiring. */
  private readonly names = new Counter<string>();
  /** Live leases by ifindex, ids in insertion order (the kernel makes an ifindex unique; the first wins). */
  private readonly ifindexes = new Map<number, Set<string>>();
  private readonly file: string;

  private indexHeld(e: Lease | Reservation, add: boolean): void {
    const op = add ? 'add' : 'remove';
    this.macs[op](e.mac);
    if (e.port !== undefined) this.ports[op](e.port);
    this.perUid[op](e.ownerUid);
    let byNet = this.perUidNetwork.get(e.ownerUid);
    if (!byNet) this.perUidNetwork.set(e.ownerUid, byNet = new Counter<string>());
    byNet[op](e.network);
    if (!add && this.perUid.get(e.ownerUid) === 0) this.perUidNetwork.delete(e.ownerUid);
    this.names[op](e.ifname);
  }

  private setLive(lease: Lease): void {
    this.unsetLive(lease.id);
    this.leases.set(lease.id, lease);
    this.indexHeld(lease, true);
    let ids = this.ifindexes.get(lease.ifindex);
    if (!ids) this.ifindexes.set(lease.ifindex, ids = new Set());
    ids.add(lease.id);
  }

  private unsetLive(id: string): Lease | undefined {
    const old = this.leases.get(id);
    if (!old) return undefined;
    this.leases.delete(id);
    this.indexHeld(old, false);
    const ids = this.ifindexes.get(old.ifindex);
    ids?.delete(id);
    if (ids?.size === 0) this.ifindexes.delete(old.ifindex);
    return old;
  }

  private setPending(r: Reservation): void {
    this.unsetPending(r.id);
    this.pending.set(r.id, r);
    this.indexHeld(r, true);
  }

  private unsetPending(id: string): void {
    const old = this.pending.get(id);
    if (!old) return;
    this.pending.delete(id);
    this.indexHeld(old, false);
  }

  private setRetiring(lease: Lease): void {
    this.unsetRetiring(lease.id);
    this.retiring.set(lease.id, lease);
    this.names.add(lease.ifname);
  }

  private unsetRetiring(id: string): void {
    const old = this.retiring.get(id);
    if (!old) return;
    this.retiring.delete(id);
    this.names.remove(old.ifname);
  }

  /**
   * The state dir must be tapd's own: owned by its euid, writable by nobody else, under
   * directories only root (or tapd) can change (src/common/trust.ts). Throws TapdError
   * ('state_untrusted') otherwise: a directory someone made first in /tmp is never used.
   */
  constructor(stateDir: string) {
    this.file = path.join(ensureOwnDirectory(stateDir), 'leases.journal');
  }

  private journalLines = 0;

  /**
   * Leases recorded by an earlier run of the daemon (the caller reconciles them). Every field of
   * every line is checked: the journal decides which down hooks run. Anything but a missing
   * journal or a last line cut short by a crash mid-append stops start-up with
   * TapdError('state_invalid', 'FILE:LINE: ...').
   */
  loadRecorded(): Lease[] {
    const fd = openOwnFile(this.file, fsc.O_RDONLY);
    if (fd === undefined) return []; // no journal yet: no leases
    let text: string;
    try {
      text = readFileSync(fd, 'utf8');
    } catch (e) {
      throw new TapdError('state_invalid', `${this.file} cannot be read (${(e as NodeJS.ErrnoException).code ?? String(e)}); fix it or move it aside (its leases' down hooks will not run) and start again`);
    } finally {
      closeSync(fd);
    }
    const recorded = new Map<string, Lease>();
    const lines = text.split('\n');
    const damaged = (i: number, what: string): never => {
      throw new TapdError('state_invalid', `${this.file}:${i + 1} ${what}; move the file aside (its leases' down hooks will not run) and start again`);
    };
    lines.forEach((line, i) => {
      const last = i === lines.length - 1;
      if (line === '') {
        if (last) return; // the newline ending the file
        damaged(i, 'is empty (tapd writes no empty lines)');
      }
      let entry: unknown;
      try {
        entry = JSON.parse(line);
      } catch {
        // Only the last line can be cut short (by a crash mid-append); anything else is damage.
        if (last) return;
        damaged(i, 'is not valid JSON');
      }
      const problem = entryProblem(entry);
      if (problem !== undefined) damaged(i, `is not a journal entry tapd writes: ${problem}`);
      const e = entry as Entry;
      if ('start' in e) recorded.set(e.start.id, e.start);
      else recorded.delete(e.end);
    });
    return [...recorded.values()];
  }

  /**
   * Append one change: O(1), so a thousand leases cost no more per open than one. No fsync: the
   * journal has to survive a crash of the daemon (the page cache does), not of the machine (a
   * reboot ends every TAP, and the state dir is in /run). O_NOFOLLOW, and checked on the fd.
   */
  private record(entry: Entry): void {
    const fd = openForWrite(this.file, fsc.O_APPEND);
    try {
      writeAll(fd, `${JSON.stringify(entry)}\n`);
    } finally {
      closeSync(fd);
    }
    if (++this.journalLines > COMPACT_FACTOR * this.leases.size + COMPACT_SLACK) this.persist();
  }

  /**
   * Rewrite the journal as just the live leases, atomically (a crash leaves the old or the new).
   * The temporary file is created anew (O_CREAT|O_EXCL|O_NOFOLLOW): whatever is left at its
   * name, a planted symlink included, is removed, never written through.
   */
  persist(): void {
    const tmp = `${this.file}.tmp`;
    const lines = [...this.leases.values()].map((lease) => `${JSON.stringify({ start: lease })}\n`).join('');
    try {
      unlinkSync(tmp); // left by a crash mid-rewrite; unlink never follows a link
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new TapdError('state_invalid', `cannot remove ${tmp}: ${(e as NodeJS.ErrnoException).code}`);
    }
    const fd = openForWrite(tmp, fsc.O_EXCL);
    try {
      writeAll(fd, lines);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.file);
    this.journalLines = this.leases.size;
  }

  countFor(uid: number, network?: string): number {
    return network === undefined ? this.perUid.get(uid) : this.perUidNetwork.get(uid)?.get(network) ?? 0;
  }

  get size(): number {
    return this.leases.size + this.pending.size;
  }

  macInUse(mac: string): boolean {
    return this.macs.get(mac) > 0;
  }

  /** Whether a live or pending lease binds this logical port. */
  portInUse(port: string): boolean {
    return this.ports.get(port) > 0;
  }

  /** Whether this id is a live or pending lease's (the OVS reconcile keeps their ports). */
  isLive(id: string): boolean {
    return this.leases.has(id) || this.pending.has(id);
  }

  /** Whether a live, pending or still-ending lease has this TAP name. */
  nameInUse(ifname: string): boolean {
    return this.names.get(ifname) > 0;
  }

  /**
   * Synchronous, so check-and-take cannot interleave with another open (one event loop). The
   * TAP name is `tap` + 8 random hex digits, unique among leases that are live or ending: the
   * kernel's own `tap%d` reuses a number as soon as its device is gone, while the old lease's
   * down hook may still be running with that name.
   */
  reserve(ownerUid: number, network: string, mac: string, prefix: 'tap' | 'mvt' = 'tap', port?: string): Reservation {
    let ifname: string;
    do ifname = `${prefix}${randomBytes(4).toString('hex')}`;
    while (this.nameInUse(ifname));
    const r: Reservation = { id: randomBytes(8).toString('hex'), ownerUid, network, mac, ifname, ...(port === undefined ? {} : { port }) };
    this.setPending(r);
    return r;
  }

  cancel(r: Reservation): void {
    this.unsetPending(r.id);
  }

  activate(r: Reservation, lease: Omit<Lease, 'id' | 'ownerUid' | 'network' | 'mac' | 'ifname' | 'port'>): Lease {
    this.unsetPending(r.id);
    const full: Lease = { id: r.id, ownerUid: r.ownerUid, network: r.network, mac: r.mac, ifname: r.ifname, ...(r.port === undefined ? {} : { port: r.port }), ...lease };
    this.setLive(full);
    this.record({ start: full });
    return full;
  }

  /** Re-adopt a lease from the state file whose device still exists. */
  adopt(lease: Lease): void {
    this.setLive(lease);
  }

  update(lease: Lease): Lease {
    this.setLive(lease);
    this.record({ start: lease });
    return lease;
  }

  /** Ends a lease (its quota slot is free at once); its name stays taken until retired(). */
  end(id: string): Lease | undefined {
    const lease = this.unsetLive(id);
    if (lease) {
      this.setRetiring(lease);
      this.record({ end: id });
    }
    return lease;
  }

  /** The ended lease's down hook is done: its name may be given out again. */
  retired(id: string): void {
    this.unsetRetiring(id);
  }

  byIfindex(ifindex: number): Lease | undefined {
    const first = this.ifindexes.get(ifindex)?.values().next();
    return first && !first.done ? this.leases.get(first.value) : undefined;
  }

  all(): Lease[] {
    return [...this.leases.values()];
  }
}
