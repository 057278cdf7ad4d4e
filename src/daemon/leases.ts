// The lease table: every TAP handed out, who owns it, and the quota it holds.
// Quotas are counted from this table (reservations included), so a slot is free exactly when
// its entry is gone. Every change is appended to a journal in the state dir before the daemon
// acts on it, so a crash loses nothing that a restart needs to reconcile.
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { TapdError } from '../errors/tapd-error.js';

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
}

/** A slot held while an open is in progress: it counts against quotas and reserves its MAC and name. */
export interface Reservation {
  id: string;
  ownerUid: number;
  network: string;
  mac: string;
  /** The TAP's name, chosen by tapd: never one a live or still-ending lease has (hooks get names). */
  ifname: string;
}

/** One journal line. */
type Entry = { start: Lease } | { end: string };

/** Rewrite the journal once it holds this many lines per live lease (plus a constant). */
const COMPACT_FACTOR = 4;
const COMPACT_SLACK = 64;

export class LeaseTable {
  private readonly leases = new Map<string, Lease>();
  private readonly pending = new Map<string, Reservation>();
  /** Ended leases whose down hook has not finished: their names stay taken until it has. */
  private readonly retiring = new Map<string, Lease>();
  private readonly file: string;

  constructor(stateDir: string) {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    this.file = path.join(stateDir, 'leases.journal');
  }

  private journalLines = 0;

  /** Leases recorded by an earlier run of the daemon (the caller reconciles them). */
  loadRecorded(): Lease[] {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch {
      return [];
    }
    const recorded = new Map<string, Lease>();
    const lines = text.split('\n');
    lines.forEach((line, i) => {
      if (line === '') return;
      let entry: Entry;
      try {
        entry = JSON.parse(line) as Entry;
      } catch {
        // Only the last line can be cut short (by a crash mid-append); anything else is damage.
        if (i === lines.length - 1) return;
        throw new TapdError('state_invalid', `${this.file}:${i + 1} is not valid JSON; move the file aside (its leases' down hooks will not run) and start again`);
      }
      if ('start' in entry) recorded.set(entry.start.id, entry.start);
      else recorded.delete(entry.end);
    });
    return [...recorded.values()];
  }

  /**
   * Append one change: O(1), so a thousand leases cost no more per open than one. No fsync: the
   * journal has to survive a crash of the daemon (the page cache does), not of the machine (a
   * reboot ends every TAP, and the state dir is in /run).
   */
  private record(entry: Entry): void {
    appendFileSync(this.file, `${JSON.stringify(entry)}\n`, { mode: 0o600 });
    if (++this.journalLines > COMPACT_FACTOR * this.leases.size + COMPACT_SLACK) this.persist();
  }

  /** Rewrite the journal as just the live leases, atomically (a crash leaves the old or the new). */
  persist(): void {
    const tmp = `${this.file}.tmp`;
    const lines = [...this.leases.values()].map((lease) => `${JSON.stringify({ start: lease })}\n`).join('');
    writeFileSync(tmp, lines, { mode: 0o600 });
    renameSync(tmp, this.file);
    this.journalLines = this.leases.size;
  }

  countFor(uid: number, network?: string): number {
    let n = 0;
    for (const e of [...this.leases.values(), ...this.pending.values()]) {
      if (e.ownerUid === uid && (network === undefined || e.network === network)) n++;
    }
    return n;
  }

  get size(): number {
    return this.leases.size + this.pending.size;
  }

  macInUse(mac: string): boolean {
    for (const e of [...this.leases.values(), ...this.pending.values()]) if (e.mac === mac) return true;
    return false;
  }

  /** Whether a live, pending or still-ending lease has this TAP name. */
  nameInUse(ifname: string): boolean {
    for (const e of [...this.leases.values(), ...this.pending.values(), ...this.retiring.values()]) if (e.ifname === ifname) return true;
    return false;
  }

  /**
   * Synchronous, so check-and-take cannot interleave with another open (one event loop). The
   * TAP name is `tap` + 8 random hex digits, unique among leases that are live or ending: the
   * kernel's own `tap%d` reuses a number as soon as its device is gone, while the old lease's
   * down hook may still be running with that name.
   */
  reserve(ownerUid: number, network: string, mac: string, prefix: 'tap' | 'mvt' = 'tap'): Reservation {
    let ifname: string;
    do ifname = `${prefix}${randomBytes(4).toString('hex')}`;
    while (this.nameInUse(ifname));
    const r = { id: randomBytes(8).toString('hex'), ownerUid, network, mac, ifname };
    this.pending.set(r.id, r);
    return r;
  }

  cancel(r: Reservation): void {
    this.pending.delete(r.id);
  }

  activate(r: Reservation, lease: Omit<Lease, 'id' | 'ownerUid' | 'network' | 'mac' | 'ifname'>): Lease {
    this.pending.delete(r.id);
    const full: Lease = { id: r.id, ownerUid: r.ownerUid, network: r.network, mac: r.mac, ifname: r.ifname, ...lease };
    this.leases.set(full.id, full);
    this.record({ start: full });
    return full;
  }

  /** Re-adopt a lease from the state file whose device still exists. */
  adopt(lease: Lease): void {
    this.leases.set(lease.id, lease);
  }

  update(lease: Lease): Lease {
    this.leases.set(lease.id, lease);
    this.record({ start: lease });
    return lease;
  }

  /** Ends a lease (its quota slot is free at once); its name stays taken until retired(). */
  end(id: string): Lease | undefined {
    const lease = this.leases.get(id);
    if (lease) {
      this.leases.delete(id);
      this.retiring.set(id, lease);
      this.record({ end: id });
    }
    return lease;
  }

  /** The ended lease's down hook is done: its name may be given out again. */
  retired(id: string): void {
    this.retiring.delete(id);
  }

  byIfindex(ifindex: number): Lease | undefined {
    for (const l of this.leases.values()) if (l.ifindex === ifindex) return l;
    return undefined;
  }

  all(): Lease[] {
    return [...this.leases.values()];
  }
}
