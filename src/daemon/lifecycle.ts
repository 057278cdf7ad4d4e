// Ending leases: when a TAP disappears (its last fd closed), its lease ends, its down hook runs
// once, and its quota slot is free. Also after a restart: recorded leases whose device is gone end.
import * as sys from '../sys/index.js';
import type { DaemonContext } from './context.js';
import { hookEnv } from './handlers.js';
import { runHook } from './hooks.js';
import type { Lease } from './leases.js';

export class Lifecycle {
  private readonly watch = new sys.LinkWatch();

  constructor(private readonly ctx: () => DaemonContext) {}

  /** Subscribe first, then reconcile, so no deletion falls between the two. */
  start(): void {
    this.watch.on('gone', (ifindex) => {
      const lease = this.ctx().leases.byIfindex(ifindex);
      if (lease) void this.end(lease, 'device gone');
    });
    this.watch.on('overflow', () => this.sweep('link events lost'));
    this.watch.on('error', (err) => {
      this.ctx().log.error({ event: 'link_watch_failed', reason: err.message }, 'link watch failed; sweeping every second');
      setInterval(() => this.sweep('polling'), 1000).unref();
    });
    this.watch.start();
    const { leases, log } = this.ctx();
    for (const lease of leases.loadRecorded()) {
      leases.adopt(lease);
      log.info({ event: 'lease_recovered', lease: lease.id, ifname: lease.ifname, uid: lease.ownerUid }, 'lease recorded by an earlier run');
    }
    leases.persist();
    this.sweep('startup reconcile');
  }

  /** End every lease whose device no longer exists (by index and name: indexes can be reused). */
  sweep(why: string): void {
    for (const lease of this.ctx().leases.all()) {
      if (!sys.linkAlive(lease.ifindex, lease.ifname)) void this.end(lease, why);
    }
  }

  private async end(lease: Lease, why: string): Promise<void> {
    const ctx = this.ctx();
    if (!ctx.leases.end(lease.id)) return; // already ended
    const net = ctx.policy.networks.get(lease.network);
    const audit = { event: 'lease_end', lease: lease.id, uid: lease.ownerUid, network: lease.network, ifname: lease.ifname, mac: lease.mac, reason: why };
    ctx.log.info(audit, 'lease ended');
    if (lease.upRan && net?.down) {
      try {
        await runHook({ script: net.down, args: [lease.ifname], env: hookEnv(lease, 'down'), timeoutMs: ctx.policy.limits.hookTimeoutMs }, ctx.log);
      } catch (err) {
        ctx.log.warn({ ...audit, event: 'down_hook_failed', reason: (err as Error).message }, 'down hook failed');
      }
    }
  }

  async close(): Promise<void> {
    await this.watch.close();
  }
}
