// The lease table: every TAP handed out, who owns it, and the quota it holds.
// Quotas are counted from this table (reservations included), so a slot is free exactly when
// its entry is gone; the table is written to the state dir after every change.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync, openSync, fsyncSync, closeSync } from 'node:fs';
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
}

/** A slot held while an open is in progress: it counts against quotas and reserves its MAC. */
export interface Reservation {
  id: string;
  ownerUid: number;
  network: string;
  mac: string;
}

interface StateFile {
  version: 1;
  leases: Lease[];
}

export class LeaseTable {
  private readonly leases = new Map<string, Lease>();
  private readonly pending = new Map<string, Reservation>();
  private readonly file: string;

  constructor(stateDir: string) {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    this.file = path.join(stateDir, 'leases.json');
  }

  /** Leases recorded by an earlier run of the daemon (the caller reconciles them). */
  loadRecorded(): Lease[] {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch {
      return [];
    }
    let state: StateFile;
    try {
      state = JSON.parse(text) as StateFile;
    } catch {
      // Writes are atomic, so this is damage from outside; refusing beats forgetting leases.
      throw new TapdError('state_invalid', `${this.file} is not valid JSON; move it aside (its leases' down hooks will not run) and start again`);
    }
    return state.version === 1 && Array.isArray(state.leases) ? state.leases : [];
  }

  /** Write atomically: a crash leaves the old file or the new one, never half of one. */
  private save(): void {
    const tmp = `${this.file}.tmp`;
    const state: StateFile = { version: 1, leases: [...this.leases.values()] };
    writeFileSync(tmp, JSON.stringify(state), { mode: 0o600 });
    const fd = openSync(tmp, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.file);
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

  /** Synchronous, so check-and-take cannot interleave with another open (one event loop). */
  reserve(ownerUid: number, network: string, mac: string): Reservation {
    const r = { id: randomBytes(8).toString('hex'), ownerUid, network, mac };
    this.pending.set(r.id, r);
    return r;
  }

  cancel(r: Reservation): void {
    this.pending.delete(r.id);
  }

  activate(r: Reservation, lease: Omit<Lease, 'id' | 'ownerUid' | 'network' | 'mac'>): Lease {
    this.pending.delete(r.id);
    const full: Lease = { id: r.id, ownerUid: r.ownerUid, network: r.network, mac: r.mac, ...lease };
    this.leases.set(full.id, full);
    this.save();
    return full;
  }

  /** Re-adopt a lease from the state file whose device still exists. */
  adopt(lease: Lease): void {
    this.leases.set(lease.id, lease);
  }

  update(lease: Lease): Lease {
    this.leases.set(lease.id, lease);
    this.save();
    return lease;
  }

  end(id: string): Lease | undefined {
    const lease = this.leases.get(id);
    if (lease) {
      this.leases.delete(id);
      this.save();
    }
    return lease;
  }

  byIfindex(ifindex: number): Lease | undefined {
    for (const l of this.leases.values()) if (l.ifindex === ifindex) return l;
    return undefined;
  }

  all(): Lease[] {
    return [...this.leases.values()];
  }

  persist(): void {
    this.save();
  }
}
