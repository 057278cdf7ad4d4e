// The open path, top to bottom, in qemu-bridge-helper's order: resolve, decide, reserve, bridge
// ready, create, configure, attach, up, hook, record, reply. One undo. `steps` times it
// (steps.ts): each mark below names the step that just ended. `check` runs the same
// plan without side effects, so every refusal an open can give, check gives.
import { close as closeAsync } from 'node:fs';
import { TapdError } from '../errors/tapd-error.js';
import type { OpenRequest, LeaseInfo } from '../protocol/messages.js';
import { getpwuid, groupsOf } from '../common/accounts.js';
import * as sys from '../sys/index.js';
import { ensureBridge, inspectBridge } from './bridges.js';
import type { DaemonContext, Peer } from './context.js';
import { DeniedError } from './denied-error.js';
import { runHook } from './hooks.js';
import { parentOf, type IdentifiedPeer } from './peer.js';
import { POLKIT_ACTION_OPEN } from './polkit.js';
import { attachLeasePort, removeLeasePort } from './ovs.js';
import type { Lease } from './leases.js';
import { inspectMacvtap, openMacvtap } from './macvtap.js';
import { setPortVlan } from './vlans.js';
import type { Steps } from './steps.js';
import { DEFAULT_DENY_REASON, type Network, type Permit } from './policy/index.js';

/** The lease's process: the peer, or for QEMU's bridge helper its parent, QEMU (the helper exits at once). */
function emulatorPid(peer: Peer, req: OpenRequest): number {
  return (req.bridgeHelper && parentOf(peer as IdentifiedPeer)) || peer.pid;
}

/** Tells a waiting client what the open waits for now, and for how long at most. */
export type BeforeHook = (what: string, timeoutMs: number) => void;

/** What the policy allowed, with every value parsed: the open carries it out, check reports it. */
export interface Plan {
  subject: Peer;
  net: Network;
  permit: Permit;
  /** The guest's MAC when the client asked for one. */
  mac?: sys.Mac;
  mtu?: number;
  /** ovs networks: the logical port the policy granted. */
  port?: string;
  warnings: string[];
}

/** An open reply: the lease, its fds, and what to do once the reply went out (or did not). */
export interface Opened {
  lease: Lease;
  fds: number[];
  delivered(ok: boolean): void;
}

/** Whose lease this is: the peer, or for root the sudo user it names. */
function subjectFor(peer: Peer, req: OpenRequest): Peer {
  if (req.asUid === undefined || req.asUid === peer.uid) return peer;
  if (peer.uid !== 0) throw new TapdError('forbidden', 'only root may open on behalf of another user (as_uid)');
  const account = getpwuid(req.asUid);
  if (!account) throw new TapdError('bad_request', `field "as_uid": no user with uid ${req.asUid}`);
  // No kernel credentials for someone who did not connect: their groups are initgroups'. The
  // process is root's, bound at accept (polkit asks about it).
  return { uid: account.uid, gid: account.gid, groups: groupsOf(account), pid: peer.pid, startTime: peer.startTime, pidfd: peer.pidfd };
}

/**
 * Resolve and decide first: nothing about the network (not even whether it exists, nor whether
 * the MAC or MTU asked for would fit it) is looked at before the policy lets this caller use it.
 */
export async function plan(ctx: DaemonContext, peer: Peer, req: OpenRequest): Promise<Plan> {
  const subject = subjectFor(peer, req);
  const net = ctx.policy.resolve(req.network);
  if (!net) throw new DeniedError(DEFAULT_DENY_REASON, `${DEFAULT_DENY_REASON}: no network, bridge or uplink named ${JSON.stringify(req.network)}`);
  const decision = ctx.policy.decide(subject, {
    network: net, wantsMac: req.mac !== undefined, wantsMtu: req.mtu !== undefined,
    queues: req.queues, vnetHdr: req.vnetHdr, vhost: req.vhost, ...(req.port === undefined ? {} : { port: req.port }),
  });
  if (!decision.allowed) throw new DeniedError(decision.reason, decision.logReason);
  if (decision.askPolkit && !(await ctx.polkitAllows(subject, POLKIT_ACTION_OPEN))) {
    throw new DeniedError(`${decision.reason}, but polkit did not authorize ${POLKIT_ACTION_OPEN}`);
  }
  const p: Plan = { subject, net, permit: decision, warnings: [] };
  if (req.mac !== undefined) p.mac = guestMac(req.mac);
  if (req.mtu !== undefined) p.mtu = req.mtu;
  if (net.mode === 'ovs' && req.port !== undefined) p.port = req.port;
  checkQuota(ctx, p);
  if (net.mode === 'macvtap') inspectMacvtap(net, p.mtu);
  if (net.mode === 'bridged' || net.mode === 'uplink') {
    const { stp } = inspectBridge(net);
    if (stp) p.warnings.push(`bridge ${net.bridge} has STP on: a new port forwards nothing for twice the forward delay (30 s by default)`);
    if (p.mtu !== undefined && sys.exists(net.bridge!)) checkMtu(net, p.mtu, sys.getMtu(net.bridge!));
  }
  return p;
}

function guestMac(text: string): sys.Mac {
  const mac = sys.Mac.parse(text);
  if (mac.isMulticast || mac.isZero) {
    throw new TapdError('invalid_mac', `MAC ${mac} is ${mac.isZero ? 'all zero' : 'multicast'}; use a unicast address such as 52:54:00:12:34:56`);
  }
  return mac;
}

function checkMtu(net: Network, mtu: number, bridgeMtu: number): void {
  if (mtu < bridgeMtu) {
    throw new TapdError('mtu_too_small', `MTU ${mtu} is below bridge ${net.bridge}'s ${bridgeMtu}; frames from the LAN would not fit your VM's port`);
  }
}

function checkQuota(ctx: DaemonContext, p: Plan): void {
  const { leases } = ctx;
  if (leases.size >= ctx.policy.limits.maxLeases) {
    throw new TapdError('limit', `tapd has its maximum of ${ctx.policy.limits.maxLeases} leases; try again later`);
  }
  const { maxLeasesPerUser, maxLeasesPerNetwork } = p.permit;
  if (maxLeasesPerNetwork !== undefined && leases.countFor(p.subject.uid, p.net.name) >= maxLeasesPerNetwork) {
    throw new TapdError('quota', `you already hold ${maxLeasesPerNetwork} of ${maxLeasesPerNetwork} leases allowed on network ${p.net.name}; stop a VM first`);
  }
  if (maxLeasesPerUser !== undefined && leases.countFor(p.subject.uid) >= maxLeasesPerUser) {
    throw new TapdError('quota', `you already hold ${maxLeasesPerUser} of ${maxLeasesPerUser} leases allowed to you; stop a VM first`);
  }
  if (p.mac && leases.macInUse(p.mac.toString())) {
    throw new TapdError('mac_in_use', `MAC ${p.mac} is in use by another lease; choose another or let tapd pick one`);
  }
  checkPortFree(ctx, p.port);
}

/** One logical port, one lease: a second binding would move the port away from the first VM. */
function checkPortFree(ctx: DaemonContext, port: string | undefined): void {
  if (port !== undefined && ctx.leases.portInUse(port)) {
    throw new TapdError('port_in_use', `logical port ${port} is bound by another lease; stop that VM first or choose another port`);
  }
}

/** QEMU's prefix for guests (locally administered by convention). */
const GUEST_MAC_PREFIX = [0x52, 0x54, 0x00];

/**
 * The open. `beforeHook` tells a waiting client how long the admin's hook may take. Kernel
 * failures (SystemError) pass through: the server logs them and answers `internal`.
 */
export async function open(ctx: DaemonContext, peer: Peer, req: OpenRequest, beforeHook: BeforeHook, steps: Steps): Promise<Opened> {
  const p = await plan(ctx, peer, req);
  steps.mark('decide');
  const { net } = p;
  const limits = ctx.policy.limits;
  // Check and take the slot in one synchronous step: plan()'s check was before an await, and
  // other opens may have run since.
  checkQuota(ctx, p);
  let mac = p.mac;
  while (!mac || ctx.leases.macInUse(mac.toString())) mac = sys.Mac.random(GUEST_MAC_PREFIX);
  checkPortFree(ctx, p.port);
  const slot = ctx.leases.reserve(p.subject.uid, net.name, mac.toString(), net.mode === 'macvtap' ? 'mvt' : 'tap', p.port);
  steps.mark('reserve');
  if (net.mode === 'macvtap') return openMacvtap(ctx, peer, req, p, slot, mac, (lease) => runUpHook(ctx, net.up!, lease), beforeHook, steps);
  let tap: sys.Tap | undefined;
  let ifindex = 0;
  let ovsPort = false;
  try {
    const bridge = net.mode === 'bridged' || net.mode === 'uplink' ? await ensureBridge(net, limits.hookTimeoutMs, ctx.log, () => beforeHook('the network\'s bridge script', limits.hookTimeoutMs)) : undefined;
    if (bridge && p.mtu !== undefined) checkMtu(net, p.mtu, bridge.mtu);
    const mtu = p.mtu ?? net.mtu ?? bridge?.mtu ?? 1500;
    steps.mark('bridge');
    tap = sys.createTap({ name: sys.IfName.parse(slot.ifname), owner: p.subject.uid, queues: req.queues, vnetHdr: req.vnetHdr });
    ifindex = sys.getIndex(tap.name);
    steps.mark('create');
    // Address, MTU, master (the attach) and up: one RTM_SETLINK, so one step.
    if (bridge && net.vlan !== undefined) {
      // Its VLAN before it is up: no frame of the default VLAN ever reaches the port.
      sys.setLink(ifindex, tap.name.value, { address: mac.hostSide(), mtu, master: bridge.ifindex });
      setPortVlan(net, bridge.name, ifindex, tap.name.value);
      sys.setLink(ifindex, tap.name.value, { up: true });
    } else {
      sys.setLink(ifindex, tap.name.value, { address: mac.hostSide(), mtu, master: bridge?.ifindex, up: true });
    }
    if (bridge) {
      if (net.isolated) sys.setPortIsolated(ifindex, tap.name.value, true);
      // A bridge whose MTU nobody set follows its smallest port: never let a lease move it.
      if (sys.getMtu(bridge.name) !== bridge.mtu) sys.setMtu(bridge.name, bridge.mtu);
    }
    steps.mark('configure');
    checkNobodyElseAttached(tap, ifindex, p.subject.uid, req.queues);
    steps.mark('verify');
    if (net.ovs && p.port !== undefined) {
      // Set before the call: a failure after the add (a timed-out transaction) still gets the undo.
      ovsPort = true;
      await attachLeasePort(ctx, net, { id: slot.id, ifname: slot.ifname, mac: slot.mac, port: p.port });
      steps.mark('ovs');
    }
    const lease: Omit<Lease, 'started'> = {
      id: slot.id, ownerUid: slot.ownerUid, pid: emulatorPid(peer, req), network: net.name, bridge: bridge?.name.value ?? net.ovs?.bridge ?? null, mac: slot.mac,
      mtu, queues: req.queues, vnetHdr: req.vnetHdr, ifname: slot.ifname, ifindex, upRan: true,
      ...(bridge && net.vlan !== undefined ? { vlan: net.vlan } : {}),
      ...(slot.port === undefined ? {} : { port: slot.port }), ...(net.ovs ? { ovsdb: net.ovs.socket } : {}),
      ...(req.bridgeHelper ? { macUnknown: true as const } : {}),
    };
    if (net.up) {
      beforeHook('the network\'s up hook', limits.hookTimeoutMs);
      await runUpHook(ctx, net.up, lease);
      steps.mark('hook');
    }
    const active = ctx.leases.activate(slot, { ...lease, started: new Date().toISOString() });
    steps.mark('journal');
    const fds = tap.fds;
    return {
      lease: active,
      fds,
      delivered: (ok) => {
        // The emulator holds the fds now, or nobody does and the device goes with ours.
        for (const fd of fds) closeAsync(fd, () => {});
        ctx.log.info({ event: ok ? 'lease_start' : 'lease_undelivered', lease: active.id, uid: active.ownerUid, peer_uid: peer.uid, peer_pid: peer.pid,
          network: net.name, ifname: active.ifname, ifindex, mac: active.mac, result: ok ? 'granted' : 'undelivered', reason: p.permit.reason, steps_us: steps.us },
        ok ? 'lease started' : 'reply not delivered; lease ends');
      },
    };
  } catch (err) {
    // The one undo: take the port off the switch (the slot, and its logical port, stays taken
    // until it is gone, so a retry cannot race the removal), free the slot, delete the device
    // (closing our fds alone would leave it to anyone who attached a queue of their own), close
    // our fds.
    if (ovsPort && net.ovs) await removeLeasePort(ctx, { id: slot.id, ifname: slot.ifname, ovsdb: net.ovs.socket, network: net.name });
    ctx.leases.cancel(slot);
    if (tap) {
      try {
        if (ifindex > 0) sys.deleteLink(ifindex, tap.name.value);
      } catch (cleanupErr) {
        ctx.log.error({ event: 'device_delete_failed', ifname: tap.name.value, reason: String((cleanupErr as Error).message) }, 'could not delete the device of a failed open');
      }
      for (const fd of tap.fds) closeAsync(fd, () => {});
    }
    throw err;
  }
}

/**
 * Until TUNSETOWNER, a multiqueue TAP takes queues from anyone who names it (a single-queue one
 * answers EBUSY). If someone did, the kernel counts more queues than ours, detached ones
 * included: refuse, and the undo deletes the device under the intruder.
 */
function checkNobodyElseAttached(tap: sys.Tap, ifindex: number, owner: number, queues: number): void {
  const state = sys.getLink(ifindex)?.tun;
  if (!state || (state.multiQueue && state.queues !== queues) || state.owner !== owner) {
    throw new Error(`TAP ${tap.name} has ${state?.queues} queues and owner ${state?.owner}, expected ${queues} and ${owner}: another process attached to it`);
  }
}

async function runUpHook(ctx: DaemonContext, script: string, lease: Omit<Lease, 'started'>): Promise<void> {
  try {
    await runHook({ script, args: [lease.ifname], env: hookEnv(lease, 'up'), timeoutMs: ctx.policy.limits.hookTimeoutMs }, ctx.log);
  } catch {
    // What went wrong is in our log (the hook record); the peer gets what it can act on.
    throw new TapdError('hook_failed', `the network's up hook failed, so ${lease.ifname} was removed; ask an admin to check the tapd log`);
  }
}

/** The environment of up and down hooks: the ifindex tells two leases apart even if names repeated. */
export function hookEnv(lease: Omit<Lease, 'started'>, event: 'up' | 'down'): Record<string, string> {
  return {
    TAPD_EVENT: event,
    TAPD_IFNAME: lease.ifname,
    TAPD_IFINDEX: String(lease.ifindex),
    TAPD_NETWORK: lease.network,
    TAPD_BRIDGE: lease.bridge ?? '',
    TAPD_MAC: lease.mac,
    TAPD_MTU: String(lease.mtu),
    TAPD_OWNER_UID: String(lease.ownerUid),
    TAPD_LEASE_ID: lease.id,
  };
}

export function leaseInfo(l: Lease): LeaseInfo {
  return {
    id: l.id, ifname: l.ifname, ifindex: l.ifindex, mac: l.macUnknown ? null : l.mac, network: l.network, bridge: l.bridge,
    mtu: l.mtu, queues: l.queues, vnet_hdr: l.vnetHdr, owner_uid: l.ownerUid, pid: l.pid, started: l.started,
    ...(l.kind === 'macvtap' ? { kind: 'macvtap' as const } : {}), ...(l.vlan !== undefined ? { vlan: l.vlan } : {}),
    ...(l.port === undefined ? {} : { port: l.port }),
  };
}

