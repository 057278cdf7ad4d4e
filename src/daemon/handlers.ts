// The daemon's whole API. Each handler is a short linear story; see docs/protocol.md.
//
//   op      who            does
//   open    policy says    create a TAP on a network, reply with its fds (SCM_RIGHTS)
//   check   anyone         would this open be allowed, and why (no side effects)
//   list    anyone         the caller's leases (admins: everyone's)
//   status  anyone         version, uptime, counts
//   reload  admins         re-read the policy (SIGHUP does the same)
import { TapdError } from '../errors/tapd-error.js';
import { DeniedError } from './denied-error.js';
import type { OpenRequest, Request, LeaseInfo } from '../protocol/messages.js';
import { PROTOCOL_VERSION } from '../protocol/messages.js';
import * as sys from '../sys/index.js';
import { getpwuid, groupsOf } from '../common/accounts.js';
import type { DaemonContext, Peer } from './context.js';
import { runHook } from './hooks.js';
import type { Lease, Reservation } from './leases.js';
import { ensureNetwork, makeTap, releaseFds } from './networks.js';
import type { Network, Permit } from './policy/types.js';
import { notFoundReason } from './policy/index.js';
import { VERSION } from '../version.js';

export interface Reply {
  body: Record<string, unknown>;
  /** TAP fds to pass with the reply; the server closes its copies after sending. */
  fds?: number[];
  /** Called after the reply went out (ok) or could not be sent. */
  sent?: (delivered: boolean) => void;
}

type Handler<R extends Request> = (ctx: DaemonContext, peer: Peer, req: R) => Promise<Reply>;

function ok(body: Record<string, unknown>): Reply {
  return { body: { v: PROTOCOL_VERSION, ok: true, ...body } };
}

/** The table. Nothing else dispatches requests. */
export const HANDLERS: { [K in Request['op']]: Handler<Extract<Request, { op: K }>> } = {
  open: handleOpen,
  check: handleCheck,
  list: handleList,
  status: handleStatus,
  reload: handleReload,
};

function leaseInfo(l: Lease): LeaseInfo {
  return {
    id: l.id, ifname: l.ifname, ifindex: l.ifindex, mac: l.mac, network: l.network, bridge: l.bridge,
    mtu: l.mtu, queues: l.queues, vnet_hdr: l.vnetHdr, owner_uid: l.ownerUid, pid: l.pid, started: l.started,
  };
}

/** Whose lease this is: the peer, or for root the sudo user it names. */
function subjectFor(peer: Peer, req: OpenRequest): Peer {
  if (req.asUid === undefined || req.asUid === peer.uid) return peer;
  if (peer.uid !== 0) throw new TapdError('forbidden', 'only root may open on behalf of another user (as_uid)');
  const account = getpwuid(req.asUid);
  if (!account) throw new TapdError('bad_request', `field "as_uid": no user with uid ${req.asUid}`);
  // No kernel credentials for someone who did not connect: their groups are initgroups'.
  return { uid: account.uid, gid: account.gid, groups: groupsOf(account), pid: peer.pid };
}

interface Decided {
  subject: Peer;
  net: Network;
  permit: Permit;
  mac: sys.Mac | undefined;
}

/** Everything `check` and `open` share: resolve, validate, ask the policy. Throws a peer-safe error. */
async function decide(ctx: DaemonContext, peer: Peer, req: OpenRequest): Promise<Decided> {
  const subject = subjectFor(peer, req);
  const net = ctx.policy.resolve(req.network);
  if (!net) throw new DeniedError(notFoundReason(req.network), `no network, bridge or uplink named ${JSON.stringify(req.network)}`);
  const mac = req.mac === undefined ? undefined : sys.Mac.parse(req.mac);
  if (mac && (mac.isMulticast || mac.isZero)) {
    throw new TapdError('invalid_mac', `MAC ${mac} is ${mac.isZero ? 'all zero' : 'multicast'}; use a unicast address such as 52:54:00:12:34:56`);
  }
  if (req.queues > ctx.policy.limits.maxQueues) {
    throw new TapdError('limit', `at most ${ctx.policy.limits.maxQueues} queues per TAP`);
  }
  const decision = ctx.policy.decide(subject, {
    network: net, wantsMac: mac !== undefined, wantsMtu: req.mtu !== undefined,
    queues: req.queues, vnetHdr: req.vnetHdr, vhost: req.vhost,
  });
  if (!decision.allowed) throw new DeniedError(decision.reason, decision.logReason);
  if (decision.askPolkit && !(await ctx.polkitAllows(subject, 'org.tapd.open'))) {
    throw new DeniedError(`${decision.reason}, but polkit did not authorize org.tapd.open`);
  }
  return { subject, net, permit: decision, mac };
}

/** Quota and uniqueness checks, then a reservation, all in one synchronous step. */
function reserve(ctx: DaemonContext, d: Decided): Reservation {
  const { leases } = ctx;
  if (leases.size >= ctx.policy.limits.maxLeases) {
    throw new TapdError('limit', `tapd has its maximum of ${ctx.policy.limits.maxLeases} leases; try again later`);
  }
  const { maxLeasesPerUser, maxLeasesPerNetwork } = d.permit;
  if (maxLeasesPerNetwork !== undefined && leases.countFor(d.subject.uid, d.net.name) >= maxLeasesPerNetwork) {
    throw new TapdError('quota', `you already hold ${maxLeasesPerNetwork} of ${maxLeasesPerNetwork} leases allowed on network ${d.net.name}; stop a VM first`);
  }
  if (maxLeasesPerUser !== undefined && leases.countFor(d.subject.uid) >= maxLeasesPerUser) {
    throw new TapdError('quota', `you already hold ${maxLeasesPerUser} of ${maxLeasesPerUser} leases allowed to you; stop a VM first`);
  }
  let mac = d.mac;
  if (mac && leases.macInUse(mac.toString())) {
    throw new TapdError('mac_in_use', `MAC ${mac} is in use by another lease; choose another or let tapd pick one`);
  }
  while (!mac || leases.macInUse(mac.toString())) mac = generateMac();
  return leases.reserve(d.subject.uid, d.net.name, mac.toString());
}

/** QEMU's 52:54:00 prefix (locally administered by convention), random low 3 bytes. */
function generateMac(): sys.Mac {
  const b = Buffer.from([0x52, 0x54, 0x00, 0, 0, 0]);
  crypto.getRandomValues(b.subarray(3));
  return sys.Mac.fromBytes(b);
}

/**
 * The safety limits for everyone: no MTU below the bridge's, and no requested MAC whose host side
 * would become the bridge's address (only possible on a bridge whose MAC is not fixed).
 */
function checkBridgeSafety(net: Network, req: OpenRequest, mac: sys.Mac): void {
  if (net.mode === 'hostonly' || !net.bridge) return;
  const bridge = sys.IfName.parse(net.bridge);
  if (req.mtu !== undefined && req.mtu < sys.getMtu(bridge)) {
    throw new TapdError('mtu_too_small', `MTU ${req.mtu} is below bridge ${net.bridge}'s ${sys.getMtu(bridge)} and would lower it for every VM on it`);
  }
  if (req.mac !== undefined && !sys.macIsFixed(bridge) && mac.hostSide().compare(sys.getMac(bridge)) < 0) {
    throw new TapdError('invalid_mac', `MAC ${mac} would change bridge ${net.bridge}'s address; choose another`);
  }
}

async function handleOpen(ctx: DaemonContext, peer: Peer, req: OpenRequest): Promise<Reply> {
  const d = await decide(ctx, peer, req);
  const slot = reserve(ctx, d);
  const audit = { event: 'lease_start', uid: d.subject.uid, pid: peer.pid, network: d.net.name, mac: slot.mac };
  let fds: number[] = [];
  try {
    await ensureNetwork(d.net, ctx.policy.limits.hookTimeoutMs, ctx.log);
    const mac = sys.Mac.parse(slot.mac);
    checkBridgeSafety(d.net, req, mac);
    const made = makeTap({ net: d.net, mac, mtu: req.mtu ?? d.net.mtu, queues: req.queues, vnetHdr: req.vnetHdr });
    fds = made.tap.fds;
    let lease = ctx.leases.activate(slot, {
      pid: peer.pid, bridge: d.net.mode === 'hostonly' ? null : d.net.bridge ?? null, mtu: made.mtu,
      queues: req.queues, vnetHdr: req.vnetHdr, ifname: made.tap.name.value, ifindex: made.ifindex,
      started: new Date().toISOString(), upRan: false,
    });
    if (d.net.up) {
      await runUpHook(ctx, d.net.up, lease);
      lease = ctx.leases.update({ ...lease, upRan: true });
    }
    ctx.log.info({ ...audit, ifname: lease.ifname, lease: lease.id, result: 'granted', reason: d.permit.reason }, 'lease started');
    return { ...ok({ lease: leaseInfo(lease) }), fds, sent: () => releaseFds(fds) };
  } catch (err) {
    // Undo in one place: the slot if still pending, the device with its fds. A lease already
    // activated then ends through the link watch (no down hook: the up hook never succeeded).
    ctx.leases.cancel(slot);
    releaseFds(fds);
    ctx.log.warn({ ...audit, result: 'failed', reason: String((err as Error).message) }, 'open failed');
    throw err;
  }
}

async function runUpHook(ctx: DaemonContext, script: string, lease: Lease): Promise<void> {
  try {
    await runHook({ script, args: [lease.ifname], env: hookEnv(lease, 'up'), timeoutMs: ctx.policy.limits.hookTimeoutMs }, ctx.log);
  } catch {
    // What went wrong is in our log (the hook record); the peer gets what it can act on.
    throw new TapdError('hook_failed', `the network's up hook failed, so ${lease.ifname} was removed; ask an admin to check the tapd log`);
  }
}

export function hookEnv(lease: Lease, event: 'up' | 'down'): Record<string, string> {
  return {
    TAPD_EVENT: event,
    TAPD_IFNAME: lease.ifname,
    TAPD_NETWORK: lease.network,
    TAPD_BRIDGE: lease.bridge ?? '',
    TAPD_MAC: lease.mac,
    TAPD_MTU: String(lease.mtu),
    TAPD_OWNER_UID: String(lease.ownerUid),
    TAPD_LEASE_ID: lease.id,
  };
}

async function handleCheck(ctx: DaemonContext, peer: Peer, req: OpenRequest): Promise<Reply> {
  try {
    const d = await decide(ctx, peer, req);
    return ok({ allowed: true, reason: d.permit.reason });
  } catch (err) {
    if (err instanceof TapdError) return ok({ allowed: false, code: err.code, reason: err.message });
    throw err;
  }
}

async function handleList(ctx: DaemonContext, peer: Peer): Promise<Reply> {
  const all = ctx.policy.isAdmin(peer);
  const leases = ctx.leases.all().filter((l) => all || l.ownerUid === peer.uid).map(leaseInfo);
  return ok({ leases });
}

async function handleStatus(ctx: DaemonContext): Promise<Reply> {
  return ok({
    status: {
      version: VERSION,
      protocol: PROTOCOL_VERSION,
      uptime_s: Math.round((Date.now() - ctx.startedAt) / 1000),
      leases: ctx.leases.all().length,
      connections: ctx.connections(),
      networks: ctx.policy.networks.size,
    },
  });
}

async function handleReload(ctx: DaemonContext, peer: Peer): Promise<Reply> {
  if (!ctx.policy.isAdmin(peer)) throw new TapdError('forbidden', 'only root or a tapd admin may reload the policy');
  ctx.reload();
  return ok({ reloaded: true });
}
