import type { LeaseTable } from './leases.js';
import type { Logger } from './log.js';
import type { Policy, Subject } from './policy/types.js';

/** What every handler may use. */
export interface DaemonContext {
  policy: Policy;
  leases: LeaseTable;
  log: Logger;
  startedAt: number;
  connections: () => number;
  /** Re-read the policy; keeps the old one and throws if the new one is broken. */
  reload: () => void;
  polkitAllows: (subject: Subject, action: string) => Promise<boolean>;
}

/** The caller, from SO_PEERCRED + SO_PEERGROUPS at accept time. */
export type Peer = Subject;
