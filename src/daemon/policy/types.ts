import type { IfName } from '../../sys/ifname.js';
import type { MacvtapMode } from '../../sys/macvtap.js';

// The contract between the policy module (parser + decisions) and the daemon.
// The daemon only ever sees these types; how the file is written is the policy module's business.

/** Where a setting or rule came from, for error messages and explanations. */
export interface SourceRef {
  file: string;
  line: number;
}

export type NetworkMode = 'bridged' | 'uplink' | 'hostonly' | 'macvtap' | 'ovs';

/** ovs only: where the lease's TAP goes on Open vSwitch (src/daemon/ovs.ts). */
export interface OvsTarget {
  /** The Open vSwitch bridge (e.g. br-int). Not a Linux bridge, and not an alias for `-b`. */
  bridge: string;
  /** ovsdb-server's Unix socket. */
  socket: string;
  /** `ovn-wait D`: also wait until ovn-controller sets ovn-installed, at most this long. */
  ovnWaitMs?: number;
}

export interface Network {
  /** The name users pass with `-b` (also matched: the bridge name, and for uplink the NIC name). */
  name: string;
  mode: NetworkMode;
  /** bridged: the existing bridge (or one the daemon creates when `create` is set); uplink: the bridge the daemon makes for the NIC. */
  bridge?: IfName;
  /** bridged only: the daemon creates the bridge if it does not exist. */
  createBridge: boolean;
  /** uplink only: the physical NIC enslaved to `bridge`. */
  uplink?: IfName;
  /** uplink only: run once, as `script BRIDGE NIC`, right after the daemon created the bridge. */
  bridgeScript?: string;
  /** Hooks in QEMU's convention: `script IFNAME`. Absolute paths. */
  up?: string;
  down?: string;
  /** MTU to give new TAPs when the client asks for none (default: the bridge's MTU, or 1500). */
  mtu?: number;
  /** Bridge port isolation for TAPs on this network. */
  isolated: boolean;
  /** macvtap only: the NIC each lease's macvtap device sits on. */
  lower?: IfName;
  /** macvtap only: how macvtaps on one NIC reach each other (default bridge). */
  macvtapMode?: MacvtapMode;
  /** bridged/uplink only: the 802.1Q VLAN (1..4094) of this network's ports on a VLAN-filtering bridge. */
  vlan?: number;
  /** ovs only: the Open vSwitch bridge, socket and OVN wait. */
  ovs?: OvsTarget;
  source: SourceRef;
}

/** Who is asking, from the kernel (SO_PEERCRED + SO_PEERGROUPS), never from the message. */
export interface Subject {
  uid: number;
  gid: number;
  /** Supplementary groups at connect() time (SO_PEERGROUPS). */
  groups: readonly number[];
  pid: number;
  /**
   * Start time (field 22 of /proc/PID/stat) of the process that connected, captured by
   * src/daemon/peer.ts identifyPeer. undefined: not bound (gone by then); polkit then says no.
   */
  startTime?: string;
  /** pidfd of the process that connected (SO_PEERPIDFD), owned by the connection. */
  pidfd?: number;
}

/** The parts of an `open` request that the policy decides on. */
export interface OpenIntent {
  network: Network;
  /** The client asked for a MAC of its own. */
  wantsMac: boolean;
  /** The client asked for an MTU of its own. */
  wantsMtu: boolean;
  queues: number;
  vnetHdr: boolean;
  vhost: boolean;
  /** ovs networks: the logical port (OVN iface-id) the client asks to bind. */
  port?: string;
}

export interface Permit {
  allowed: true;
  /** Max concurrent leases of this user on this network; undefined = no per-network cap. */
  maxLeasesPerNetwork?: number;
  /** Max concurrent leases of this user overall; undefined = no per-user cap beyond the global one. */
  maxLeasesPerUser?: number;
  /** The rule must also be confirmed by polkit (action org.tapd.open). */
  askPolkit: boolean;
  /** Human words: which rule decided, e.g. "permitted by /etc/tapd/tapd.conf:12 (permit @kvm on lan)". */
  reason: string;
  /** Added by the policy module: where the deciding rule is (for qemu-bridge-conf, the ACL line). */
  rule?: SourceRef;
  /** Added by the policy module: what the rule grants (decide() has already checked the intent against it). */
  grants?: RuleGrants;
}

/** What a permit rule grants beyond "may open a TAP here" (rule options queues N, mac, mtu, vhost). */
export interface RuleGrants {
  queues: number;
  mac: boolean;
  mtu: boolean;
  vhost: boolean;
  /** ovs networks: the logical ports this rule lets the subject bind (`ports P,Q`; `alice-*` is a prefix). */
  ports?: string[];
}

export interface Deny {
  allowed: false;
  /**
   * Human words safe to show the peer. Must never reveal whether a network the peer
   * may not use exists (no existence oracle, CVE-2022-47952).
   */
  reason: string;
  /**
   * Added by the policy module: the full story for the daemon's log (never send it to the peer).
   * It may name a rule or a network that `reason` keeps quiet about.
   */
  logReason?: string;
}

export type Decision = Permit | Deny;

export interface DaemonLimits {
  /** Connections open at once, in all. */
  maxConnections: number;
  /** Connections open at once from one uid, so that one user cannot starve the others. */
  maxConnectionsPerUser: number;
  /** A client must send its request, and take its reply, each within this many ms, or it is dropped. */
  requestTimeoutMs: number;
  maxLeases: number;
  maxQueues: number;
  /** Hooks are killed after this many ms. */
  hookTimeoutMs: number;
  /** Exit after this many ms with no lease and no connection (socket activation restarts us); 0 = never. */
  idleExitMs: number;
}

export interface Policy {
  networks: ReadonlyMap<string, Network>;
  limits: DaemonLimits;
  /** Every file that made up this policy (for reload diagnostics). */
  files: readonly string[];
  /**
   * Find the network a `-b NAME` means: a network name, else a bridge name, else an uplink NIC name.
   * Returns undefined when nothing matches. Callers must not tell a peer "no such network"
   * unless the peer could use it (see Deny.reason).
   */
  resolve(name: string): Network | undefined;
  /** Decide for one subject and intent. Pure: quotas are counted by the daemon from the result. */
  decide(subject: Subject, intent: OpenIntent): Decision;
  /** May this subject see and end every lease (list-all, reload)? root always may. */
  isAdmin(subject: Subject): boolean;
}
