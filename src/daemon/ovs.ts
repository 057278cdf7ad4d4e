// Open vSwitch networks (`network NAME ovs-bridge BR`): the lease's TAP, created and owned as on
// any network, becomes a port of an OVS bridge whose Interface names the logical port
// (external_ids:iface-id), the guest's MAC (attached-mac) and the lease (tapd-lease), so that
// ovn-controller binds it and tapd finds it again. The port goes when the lease ends, when an
// open fails after adding it, and at start for leases that ended while tapd was down.
// The OVSDB work is src/daemon/ovsdb.ts; this file is what the daemon does with it.
import { TapdError } from '../errors/tapd-error.js';
import type { DaemonContext } from './context.js';
import { OvsdbError, withOvsdb } from './ovsdb.js';
import type { Network } from './policy/types.js';

/** Without `ovn-wait`: how long ovs-vswitchd may take to open the TAP (it takes milliseconds). */
export const VSWITCHD_WAIT_MS = 10_000;
/** Per OVSDB call (connect, transact): the socket is local, so anything slower is a stuck server. */
const CALL_TIMEOUT_MS = 5_000;

/** What the open path needs of a lease to put its port on the switch. */
export interface PortOwner {
  /** Lease id (tapd-lease). */
  id: string;
  /** The TAP's name: becomes the Port's and Interface's name. */
  ifname: string;
  /** The guest's MAC (attached-mac). */
  mac: string;
  /** The logical port (iface-id); the policy has granted it. */
  port: string;
}

/**
 * Adds the lease's port and waits until ovs-vswitchd has it (and, with `ovn-wait`, until
 * ovn-controller has installed it), so the guest's first frame is not lost. On failure nothing
 * is left on the switch (attachPort undoes itself) and the peer hears what it can act on; the
 * database's own words go to our log only.
 */
export async function attachLeasePort(ctx: DaemonContext, net: Network, owner: PortOwner): Promise<void> {
  const ovs = net.ovs!;
  const ovnInstalled = ovs.ovnWaitMs !== undefined;
  const t0 = Date.now();
  try {
    await withOvsdb({ socketPath: ovs.socket, timeoutMs: CALL_TIMEOUT_MS }, (db) => db.attachPort(
      { bridge: ovs.bridge, port: owner.ifname, mac: owner.mac, leaseId: owner.id, ifaceId: owner.port },
      { timeoutMs: ovs.ovnWaitMs ?? VSWITCHD_WAIT_MS, ovnInstalled },
    ));
  } catch (err) {
    if (!(err instanceof OvsdbError)) throw err;
    ctx.log.error({ event: 'ovs_port_failed', lease: owner.id, network: net.name, ovs_bridge: ovs.bridge, ifname: owner.ifname, port: owner.port, failure: err.failure, reason: err.message }, 'Open vSwitch did not take the port');
    throw new TapdError('network_unavailable', `network ${net.name}: ${peerWords(err, owner.port)}, so ${owner.ifname} was removed; an admin can find why in the tapd log`);
  }
  ctx.log.info({ event: 'ovs_port_added', lease: owner.id, network: net.name, ovs_bridge: ovs.bridge, ifname: owner.ifname, port: owner.port, ovn_installed: ovnInstalled, ms: Date.now() - t0 }, 'port added to Open vSwitch');
}

/** Short, and nothing of the database's text (paths, uuids, other ports' names). */
function peerWords(err: OvsdbError, port: string): string {
  switch (err.failure) {
    case 'ovn': return `OVN did not install logical port ${port} in time (does it exist, and is it bound elsewhere?)`;
    case 'bridge': return 'its Open vSwitch bridge is missing';
    case 'connect':
    case 'timeout': return 'tapd cannot reach Open vSwitch\'s database';
    default: return 'Open vSwitch did not take the TAP as a port';
  }
}

/**
 * Takes the lease's port off the switch (only if it still carries this lease's mark). Never
 * throws: a port left because the database was unreachable is removed at tapd's next start.
 */
export async function removeLeasePort(ctx: DaemonContext, lease: { id: string; ifname: string; ovsdb: string; network: string }): Promise<void> {
  try {
    const r = await withOvsdb({ socketPath: lease.ovsdb, timeoutMs: CALL_TIMEOUT_MS }, (db) => db.deletePort(lease.ifname, lease.id));
    ctx.log.info({ event: 'ovs_port_removed', lease: lease.id, network: lease.network, ifname: lease.ifname, result: r }, 'port removed from Open vSwitch');
  } catch (err) {
    ctx.log.error({ event: 'ovs_port_remove_failed', lease: lease.id, network: lease.network, ifname: lease.ifname, reason: (err as Error).message }, 'could not remove the port from Open vSwitch; tapd removes it at its next start');
  }
}

/**
 * At start: every port carrying tapd-lease whose lease is not live (it ended while tapd was
 * down, or tapd died mid-open before recording it) is removed, on every ovsdb-server the
 * policy or a recorded lease names. Ports without the mark (the admin's) are never touched.
 */
export async function reconcileOvsPorts(ctx: DaemonContext): Promise<void> {
  const sockets = new Set<string>();
  for (const n of ctx.policy.networks.values()) if (n.ovs) sockets.add(n.ovs.socket);
  for (const l of ctx.leases.all()) if (l.ovsdb) sockets.add(l.ovsdb);
  for (const socketPath of sockets) {
    try {
      const removed = await withOvsdb({ socketPath, timeoutMs: CALL_TIMEOUT_MS }, async (db) => {
        const out: string[] = [];
        for (const p of await db.leasePorts()) {
          if (ctx.leases.isLive(p.leaseId)) continue;
          if ((await db.deletePort(p.port, p.leaseId)) === 'deleted') out.push(p.port);
        }
        return out;
      });
      if (removed.length) ctx.log.info({ event: 'ovs_ports_reconciled', ovsdb: socketPath, removed }, 'stale lease ports removed from Open vSwitch');
    } catch (err) {
      ctx.log.error({ event: 'ovs_reconcile_failed', ovsdb: socketPath, reason: (err as Error).message }, 'could not check Open vSwitch for stale lease ports');
    }
  }
}
