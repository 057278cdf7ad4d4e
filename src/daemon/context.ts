import type { LeaseTable } from './leases.js';
import type { Logger } from './log.js';
import type { Policy, Subject } from './policy/types.js';

/** The daemon's state, as every handler sees it. */
export interface DaemonContext {
  /** Replaced whole by reload(); a request keeps the policy it started with. */
  policy: Policy;
  readonly leases: LeaseTable;
  readonly log: Logger;
  readonly startedAt: number;
  /** Open connections, in all and per uid (the server keeps them). */
  readonly connections: { total: number; byUid: Map<number, number> };
  /** Re-read the policy; keeps the old one and throws if the new one is broken. */
  reload(): void;
  polkitAllows(subject: Subject, action: string): Promise<boolean>;
}

/** The caller, from the kernel (SO_PEERCRED, SO_PEERGROUPS, SO_PEERPIDFD: all recorded at connect()). */
export type Peer = Subject;
