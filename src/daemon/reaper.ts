// Ending leases. A lease ends when its TAP is gone (its last fd closed, or revoked), and tapd
// ends it itself when the fd holder tampers with the device: makes it persistent (it would
// outlive the emulator), gives it another owner or a group (others could attach queues), or
// changes its MAC (it could take over another VM's address on the bridge). Then the down hook
// runs once, and the name is free again only after it has.
import * as sys from '../sys/index.js';
import type { DaemonContext } from './context.js';
import { runHook } from './hooks.js';
import type { Lease } from './leases.js';
import { adoptMacvtap, forgetMacvtap, startMacvtapWatch } from './macvtap.js';
import { hookEnv } from './open.js';
import { removeLeasePort } from './ovs.js';

/** Why a live lease's device is no longer what tapd handed out, or undefined if it still is. */
export function tampered(lease: Lease, link: sys.LinkState): string | undefined {
  if (lease.kind === 'macvtap') {
    // The fd holder can do one thing to the device: set its MAC (SIOCSIFHWADDR on a queue fd,
    // drivers/net/tap.c tap_ioctl); a macvtap's MAC is the address the NIC accepts frames for.
    if (link.kind !== 'macvtap') return 'the device is no longer a macvtap';
    if (link.address && !link.address.equals(sys.Mac.parse(lease.mac))) return `its holder changed the device's MAC to ${link.address} (SIOCSIFHWADDR)`;
    return undefined;
  }
  const tun = link.tun;
  if (!tun) return 'the device is no longer a TAP';
  if (tun.persist) return 'its holder made the device persistent (TUNSETPERSIST)';
  if (tun.owner !== lease.ownerUid) return `its holder changed the device's owner to ${tun.owner} (TUNSETOWNER)`;
  if (tun.group !== -1) return `its holder gave the device group ${tun.group} (TUNSETGROUP)`;
  const expected = sys.Mac.parse(lease.mac).hostSide();
  if (link.address && !link.address.equals(expected)) return `its holder changed the device's MAC to ${link.address} (SIOCSIFHWADDR)`;
  return undefined;
}

/** Subscribe first, then reconcile recorded leases, so no change falls between the two. */
export function watchLeases(ctx: DaemonContext): sys.LinkWatch {
  const watch = new sys.LinkWatch();
  watch.on('gone', (ifindex) => {
    const lease = ctx.leases.byIfindex(ifindex);
    if (lease) void endLease(ctx, lease, 'device gone');
  });
  // A report is the device's state when the kernel sent it, and every later change (the
  // holder's TUNSET* and SIOCSIFHWADDR included) sends another. So a report that looks right
  // needs no second look; one that looks wrong may be older than our own configuration (the
  // MAC before our RTM_SETLINK), so the device is judged as it is now. One RTM_GETLINK per
  // report was most of the daemon's time under concurrent opens. Reports that came together
  // (one read of the socket, an open's several) are judged once, at the end of this loop turn.
  const toJudge = new Set<number>();
  watch.on('tun', (report) => {
    const lease = ctx.leases.byIfindex(report.ifindex);
    if (!lease || reportLooksRight(lease, report)) return;
    if (toJudge.size === 0) {
      setImmediate(() => {
        const ifindexes = [...toJudge];
        toJudge.clear();
        for (const ifindex of ifindexes) {
          const l = ctx.leases.byIfindex(ifindex);
          if (l) judge(ctx, l);
        }
      });
    }
    toJudge.add(report.ifindex);
  });
  watch.on('changed', (ifindex) => {
    const lease = ctx.leases.byIfindex(ifindex);
    if (lease) judge(ctx, lease);
  });
  watch.on('overflow', () => sweep(ctx, 'link events lost'));
  startMacvtapWatch((lease, why) => void endLease(ctx, lease, why, { deleteDevice: true }), () => {
    ctx.log.error({ event: 'macvtap_events_lost' }, 'macvtap open/close events lost; leases of macvtap devices may outlive their VMs until revoked');
  });
  watch.on('error', (err) => {
    ctx.log.error({ event: 'link_watch_failed', reason: err.message }, 'link watch failed; sweeping every second');
    setInterval(() => sweep(ctx, 'polling'), 1000).unref();
  });
  watch.start();
  for (const lease of ctx.leases.loadRecorded()) {
    ctx.leases.adopt(lease);
    ctx.log.info({ event: 'lease_recovered', lease: lease.id, ifname: lease.ifname, uid: lease.ownerUid }, 'lease recorded by an earlier run');
  }
  ctx.leases.persist();
  sweep(ctx, 'startup reconcile');
  for (const lease of ctx.leases.all()) {
    if (lease.kind !== 'macvtap' || !sys.linkAlive(lease.ifindex, lease.ifname)) continue;
    let held: boolean | undefined;
    try {
      held = adoptMacvtap(lease);
    } catch {
      held = false;
    }
    if (held === false) void endLease(ctx, lease, 'no process holds the macvtap device', { deleteDevice: true });
    else if (held === undefined) {
      ctx.log.warn({ event: 'macvtap_unwatched', lease: lease.id, ifname: lease.ifname },
        'cannot see who holds this macvtap device (another user\'s /proc/PID/fd); it stays until revoked or its device is deleted');
    }
  }
  return watch;
}

/** Ends every lease whose device is gone (by index and name: indexes can be reused) or tampered with. */
export function sweep(ctx: DaemonContext, why: string): void {
  for (const lease of ctx.leases.all()) {
    if (!sys.linkAlive(lease.ifindex, lease.ifname)) void endLease(ctx, lease, why);
    else judge(ctx, lease);
  }
}

function reportLooksRight(lease: Lease, report: sys.TunReport): boolean {
  // A report without the address cannot show the MAC is right: that one is read afresh too.
  if (lease.kind === 'macvtap' || report.ifname !== lease.ifname || !report.address) return false;
  const state: sys.LinkState = { ifindex: report.ifindex, ifname: report.ifname, tun: report.tun, address: sys.Mac.parse(report.address) };
  return tampered(lease, state) === undefined;
}

function judge(ctx: DaemonContext, lease: Lease): void {
  const link = sys.getLink(lease.ifindex);
  if (!link || link.ifname !== lease.ifname) {
    void endLease(ctx, lease, 'device gone');
    return;
  }
  const why = tampered(lease, link);
  if (why) void endLease(ctx, lease, why, { deleteDevice: true });
}

/**
 * Ends a lease once (later calls for the same lease do nothing): deletes the device if asked
 * (tampering, revoke), frees the quota slot, runs the down hook, then frees the name.
 */
export async function endLease(ctx: DaemonContext, lease: Lease, why: string, opts: { deleteDevice?: boolean } = {}): Promise<void> {
  if (!ctx.leases.end(lease.id)) return;
  // A macvtap device outlives its fds: whatever ended the lease, the device goes too.
  if (lease.kind === 'macvtap') {
    forgetMacvtap(lease);
    opts = { ...opts, deleteDevice: true };
  }
  const audit = { event: 'lease_end', lease: lease.id, uid: lease.ownerUid, network: lease.network, ifname: lease.ifname, ifindex: lease.ifindex, mac: lease.mac, reason: why };
  if (opts.deleteDevice && sys.linkAlive(lease.ifindex, lease.ifname)) {
    try {
      sys.deleteLink(lease.ifindex, lease.ifname);
    } catch (err) {
      ctx.log.error({ ...audit, event: 'device_delete_failed', reason: String((err as Error).message) }, 'could not delete the device');
    }
  }
  ctx.log.info(audit, 'lease ended');
  const net = ctx.policy.networks.get(lease.network);
  try {
    // Before the down hook, as the device is gone before it: the port would name a dead TAP.
    if (lease.ovsdb !== undefined) await removeLeasePort(ctx, { ...lease, ovsdb: lease.ovsdb });
    if (lease.upRan && net?.down) {
      await runHook({ script: net.down, args: [lease.ifname], env: hookEnv(lease, 'down'), timeoutMs: ctx.policy.limits.hookTimeoutMs }, ctx.log);
    }
  } catch (err) {
    ctx.log.error({ ...audit, event: 'down_hook_failed', reason: (err as Error).message }, 'down hook failed');
  } finally {
    ctx.leases.retired(lease.id);
  }
}
