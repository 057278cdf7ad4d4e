// macvtap leases: the network's NIC gets a macvtap device with the guest's MAC, and the client
// gets fds of its character device /dev/tapN. The device outlives its fds, so tapd watches the
// node's opens and final closes (inotify) and deletes the device when the last open file is
// released: the same lifecycle as a TAP, which the kernel deletes itself.
import { close as closeAsync, readdirSync, statSync } from 'node:fs';
import { TapdError } from '../errors/tapd-error.js';
import type { OpenRequest } from '../protocol/messages.js';
import * as sys from '../sys/index.js';
import type { DaemonContext, Peer } from './context.js';
import type { Lease, Reservation } from './leases.js';
import type { BeforeHook, Opened, Plan } from './open.js';
import type { Network } from './policy/types.js';
import type { Steps } from './steps.js';

/** The udev rule the package ships for the device nodes (systemd/70-tapd-macvtap.rules). */
export const UDEV_RULE = '/usr/lib/udev/rules.d/70-tapd-macvtap.rules';
/** How often queued open/close events are read (a non-blocking read; nothing when idle). */
const POLL_MS = 200;

interface Watched {
  lease: Lease;
  wd: number;
  /** Open files of the node, counted from events since the watch began. */
  live: number;
  /** Recovered from an earlier run: the count is unknown, so each close means a /proc scan. */
  recovered?: boolean;
}

const inotify = new sys.OpenCloseWatch();
const byWd = new Map<number, Watched>();
const byLease = new Map<string, Watched>();
let timer: NodeJS.Timeout | undefined;
let onLastClose: ((lease: Lease, why: string) => void) | undefined;
let onOverflow: (() => void) | undefined;

function unavailable(net: Network, what: string): TapdError {
  return new TapdError('network_unavailable', `network ${net.name}: ${what}`);
}

/** What an open would find (for `check` and plan): throws what the open would. */
export function inspectMacvtap(net: Network, mtu: number | undefined): void {
  const nic = net.lower!;
  if (!sys.exists(nic)) throw unavailable(net, `NIC ${nic} does not exist`);
  if (mtu !== undefined && mtu > sys.getMtu(nic)) {
    throw new TapdError('bad_request', `MTU ${mtu} is above NIC ${nic}'s ${sys.getMtu(nic)}; a macvtap device cannot exceed its NIC`);
  }
}

/** Called by the reaper once: how a lease whose last fd closed is ended. */
export function startMacvtapWatch(end: (lease: Lease, why: string) => void, overflow: () => void): void {
  onLastClose = end;
  onOverflow = overflow;
}

function ensureTimer(): void {
  if (!timer && byWd.size > 0) {
    timer = setInterval(poll, POLL_MS);
    timer.unref();
  } else if (timer && byWd.size === 0) {
    clearInterval(timer);
    timer = undefined;
  }
}

function poll(): void {
  const { events, overflow } = inotify.drain();
  for (const e of events.values()) {
    const w = byWd.get(e.wd);
    if (!w) continue;
    w.live += e.opened - e.closed;
    if (w.recovered ? e.closed > 0 && holders(w.lease) === 0 : w.live <= 0) onLastClose?.(w.lease, 'last fd closed');
  }
  if (overflow) onOverflow?.();
}

/** The lease ended (any way): stop watching its node. */
export function forgetMacvtap(lease: Lease): void {
  const w = byLease.get(lease.id);
  if (!w) return;
  byLease.delete(lease.id);
  byWd.delete(w.wd);
  inotify.remove(w.wd);
  ensureTimer();
}

function watch(lease: Lease, wd: number, live: number, recovered = false): void {
  const w: Watched = { lease, wd, live, recovered };
  byWd.set(wd, w);
  byLease.set(lease.id, w);
  ensureTimer();
}

/**
 * Open files of this lease's node held by any process, from /proc/PID/fd (needs root: under
 * the systemd unit, without CAP_SYS_PTRACE, other users' fds cannot be looked at, so the
 * answer is undefined). Only for leases recovered after a restart.
 */
function holders(lease: Lease): number | undefined {
  let node: sys.MacvtapNode;
  try {
    node = sys.macvtapNode(sys.IfName.parse(lease.ifname), lease.ifindex);
  } catch {
    return 0;
  }
  let n = 0;
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EACCES') return undefined;
      continue; // gone
    }
    for (const fd of fds) {
      try {
        if (sys.isNodeOf(statSync(`/proc/${pid}/fd/${fd}`), node)) n++;
      } catch {
        // closed meanwhile
      }
    }
  }
  return n;
}

/** A lease of an earlier run whose device still exists: watch it again; false if nobody holds it. */
export function adoptMacvtap(lease: Lease): boolean | undefined {
  const node = sys.macvtapNode(sys.IfName.parse(lease.ifname), lease.ifindex);
  const wd = inotify.add(node.path);
  const n = holders(lease);
  watch(lease, wd, n ?? 1, true);
  if (n === undefined) return undefined;
  return n > 0;
}

/**
 * The macvtap open: create on the NIC (down, the guest's MAC, the MTU), open the node `queues`
 * times, up, hook, record, reply. `slot` is reserved; on failure the device is deleted.
 */
export async function openMacvtap(ctx: DaemonContext, peer: Peer, req: OpenRequest, p: Plan, slot: Reservation, mac: sys.Mac,
  runUp: (lease: Omit<Lease, 'started'>) => Promise<void>, beforeHook: BeforeHook, steps: Steps): Promise<Opened> {
  const { net } = p;
  const name = sys.IfName.parse(slot.ifname);
  let ifindex = 0;
  let fds: number[] = [];
  let wd: number | undefined;
  try {
    inspectMacvtap(net, p.mtu);
    const mtu = p.mtu ?? net.mtu;
    sys.createMacvtap({ name, lower: sys.getIndex(net.lower!), mode: net.macvtapMode ?? 'bridge', address: mac, ...(mtu !== undefined ? { mtu } : {}) });
    ifindex = sys.getIndex(name);
    const node = sys.macvtapNode(name, ifindex);
    const st = sys.statNode(node);
    if (!st || !sys.isNodeOf(st, node)) {
      ctx.log.error({ event: 'macvtap_node_missing', network: net.name, ifname: name.value, node: node.path, device: `${node.major}:${node.minor}`,
        found: st ? 'another device' : 'nothing', udev_rule: UDEV_RULE },
      `${node.path} is not ${name.value}'s character device ${node.major}:${node.minor}; is udev running with ${UDEV_RULE}?`);
      throw unavailable(net, `the macvtap device node ${node.path} is missing; ask an admin to check the tapd log (udev rule ${UDEV_RULE})`);
    }
    // Watch before opening: every open and final close of this inode is counted, ours included.
    wd = inotify.add(node.path);
    try {
      fds = sys.openMacvtapQueues(node, req.queues, req.vnetHdr, st);
    } catch (err) {
      if (err instanceof Error && 'errno' in err && (err as { errno: number }).errno === sys.C.EACCES) {
        ctx.log.error({ event: 'macvtap_node_denied', network: net.name, node: node.path, udev_rule: UDEV_RULE }, `tapd may not open ${node.path}; ${UDEV_RULE} gives group tapd rw`);
        throw unavailable(net, `tapd may not open the macvtap device node ${node.path}; ask an admin to check the tapd log (udev rule ${UDEV_RULE})`);
      }
      throw err;
    }
    steps.mark('create');
    sys.setLink(ifindex, name.value, { up: true });
    const actualMtu = sys.getMtu(name);
    steps.mark('configure');
    const lease: Omit<Lease, 'started'> = {
      id: slot.id, ownerUid: slot.ownerUid, pid: peer.pid, network: net.name, bridge: null, mac: slot.mac,
      mtu: actualMtu, queues: req.queues, vnetHdr: req.vnetHdr, ifname: slot.ifname, ifindex, upRan: true, kind: 'macvtap',
    };
    if (net.up) {
      beforeHook('the network\'s up hook', ctx.policy.limits.hookTimeoutMs);
      await runUp(lease);
      steps.mark('hook');
    }
    const active = ctx.leases.activate(slot, { ...lease, started: new Date().toISOString() });
    steps.mark('journal');
    watch(active, wd, 0); // our opens are among the queued events
    wd = undefined;
    const mine = fds;
    return {
      lease: active,
      fds: mine,
      delivered: (ok) => {
        // Closing ours: if nobody took them, these are the last closes and the watch ends the lease.
        for (const fd of mine) closeAsync(fd, () => {});
        ctx.log.info({ event: ok ? 'lease_start' : 'lease_undelivered', lease: active.id, uid: active.ownerUid, peer_uid: peer.uid, peer_pid: peer.pid,
          network: net.name, ifname: active.ifname, ifindex, mac: active.mac, kind: 'macvtap', result: ok ? 'granted' : 'undelivered', reason: p.permit.reason, steps_us: steps.us },
        ok ? 'lease started' : 'reply not delivered; lease ends');
      },
    };
  } catch (err) {
    ctx.leases.cancel(slot);
    if (wd !== undefined) inotify.remove(wd);
    for (const fd of fds) closeAsync(fd, () => {});
    if (ifindex > 0 && sys.linkAlive(ifindex, name.value)) {
      try {
        sys.deleteLink(ifindex, name.value);
      } catch (cleanupErr) {
        ctx.log.error({ event: 'device_delete_failed', ifname: name.value, reason: String(cleanupErr) }, 'could not delete the macvtap device');
      }
    }
    throw err;
  }
}
