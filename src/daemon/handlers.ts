// The daemon's whole API: one row per request, saying who may call it. The server checks `who`
// before the handler runs; `policy` rows are decided by tapd.conf inside the handler.
//
//   op        who      does
//   open      policy   create a TAP on a network, reply with its fds (SCM_RIGHTS)
//   check     anyone   would this open be allowed, and why (the same plan, no side effects)
//   networks  anyone   the networks the caller may use, with what the deciding rule grants
//   list      anyone   the caller's leases (admins: everyone's, or one user's)
//   status    anyone   version, uptime, counts, hook timeout
//   revoke    admin    end leases: delete the device, run the down hook
//   reload    admin    re-read the policy (SIGHUP does the same)
import { TapdError } from '../errors/tapd-error.js';
import { PROTOCOL_VERSION, type Request, type OpenRequest, type ListRequest, type RevokeRequest } from '../protocol/messages.js';
import { VERSION } from '../version.js';
import type { DaemonContext, Peer } from './context.js';
import { leaseInfo, open, plan } from './open.js';
import { POLKIT_ACTION_ADMIN } from './polkit.js';
import { endLease } from './reaper.js';
import type { Steps } from './steps.js';

export type Who = 'anyone' | 'admin' | 'policy';

export interface Reply {
  body: object;
  /** TAP fds to pass with the reply. */
  fds?: number[];
  /** Called once the reply went out (true) or could not be sent (false). */
  sent?: (delivered: boolean) => void;
}

/** What a handler may say to the client before its reply (a `pending` frame). */
type Progress = (body: object) => void;

/** `steps` times the request (server.ts marks accept, read, decode and send; an open marks its own steps). */
type Row<K extends Request['op']> = { who: Who; run: (ctx: DaemonContext, peer: Peer, req: Extract<Request, { op: K }>, progress: Progress, steps: Steps) => Promise<Reply> };

const ok = (body: Record<string, unknown>): Reply => ({ body: { v: PROTOCOL_VERSION, ok: true, ...body } });

/** The table. Nothing else dispatches requests. */
export const HANDLERS: { [K in Request['op']]: Row<K> } = {
  open: { who: 'policy', run: handleOpen },
  check: { who: 'anyone', run: handleCheck },
  networks: { who: 'anyone', run: handleNetworks },
  list: { who: 'anyone', run: handleList },
  status: { who: 'anyone', run: handleStatus },
  revoke: { who: 'admin', run: handleRevoke },
  reload: { who: 'admin', run: handleReload },
};

/** root, an `admin` rule of tapd.conf, or polkit's org.tapd.admin. */
export async function isAdmin(ctx: DaemonContext, peer: Peer): Promise<boolean> {
  return ctx.policy.isAdmin(peer) || ctx.polkitAllows(peer, POLKIT_ACTION_ADMIN);
}

async function handleOpen(ctx: DaemonContext, peer: Peer, req: OpenRequest, progress: Progress, steps: Steps): Promise<Reply> {
  const before = (what: string, timeoutMs: number) => {
    if (req.progress) progress({ pending: { waiting_for: what, timeout_ms: timeoutMs } });
  };
  const o = await open(ctx, peer, req, before, steps);
  return { ...ok({ lease: leaseInfo(o.lease) }), fds: o.fds, sent: o.delivered };
}

async function handleCheck(ctx: DaemonContext, peer: Peer, req: OpenRequest): Promise<Reply> {
  try {
    const p = await plan(ctx, peer, req);
    return ok({ allowed: true, reason: p.permit.reason, warnings: p.warnings });
  } catch (err) {
    if (err instanceof TapdError && err.code !== 'system_error') return ok({ allowed: false, code: err.code, reason: err.message });
    throw err;
  }
}

async function handleNetworks(ctx: DaemonContext, peer: Peer): Promise<Reply> {
  const networks = [];
  for (const net of ctx.policy.networks.values()) {
    const d = ctx.policy.decide(peer, { network: net, wantsMac: false, wantsMtu: false, queues: 1, vnetHdr: false, vhost: false });
    if (!d.allowed) continue;
    networks.push({
      name: net.name, mode: net.mode, bridge: net.bridge?.value ?? null, ...(net.uplink ? { uplink: net.uplink.value } : {}),
      ...(net.lower ? { macvtap: net.lower.value, macvtap_mode: net.macvtapMode } : {}), ...(net.vlan ? { vlan: net.vlan } : {}),
      ...(net.ovs ? { ovs_bridge: net.ovs.bridge } : {}),
      grants: d.grants, leases_per_network: d.maxLeasesPerNetwork ?? null, leases_total: d.maxLeasesPerUser ?? null,
      polkit: d.askPolkit, held: ctx.leases.countFor(peer.uid, net.name),
    });
  }
  return ok({ networks });
}

async function handleList(ctx: DaemonContext, peer: Peer, req: ListRequest): Promise<Reply> {
  const admin = ctx.policy.isAdmin(peer);
  if (req.user !== undefined && req.user !== peer.uid && !(admin || (await isAdmin(ctx, peer)))) {
    throw new TapdError('forbidden', "only root or a tapd admin may list another user's leases");
  }
  const uid = req.user ?? (admin ? undefined : peer.uid);
  return ok({ leases: ctx.leases.all().filter((l) => uid === undefined || l.ownerUid === uid).map(leaseInfo) });
}

/** process.memoryUsage() in kB; the same figures are in /proc/PID/status, which anyone may read. */
function memoryKb(): Record<string, number> {
  const m = process.memoryUsage();
  const kb = (bytes: number) => Math.round(bytes / 1024);
  return { rss_kb: kb(m.rss), heap_used_kb: kb(m.heapUsed), heap_total_kb: kb(m.heapTotal), external_kb: kb(m.external), array_buffers_kb: kb(m.arrayBuffers) };
}

async function handleStatus(ctx: DaemonContext): Promise<Reply> {
  return ok({
    status: {
      version: VERSION, protocol: PROTOCOL_VERSION, uptime_s: Math.round((Date.now() - ctx.startedAt) / 1000),
      leases: ctx.leases.all().length, connections: ctx.connections.total, networks: ctx.policy.networks.size,
      hook_timeout_ms: ctx.policy.limits.hookTimeoutMs, memory: memoryKb(),
    },
  });
}

async function handleRevoke(ctx: DaemonContext, peer: Peer, req: RevokeRequest): Promise<Reply> {
  const hit = ctx.leases.all().filter((l) => (req.lease === undefined || l.id === req.lease)
    && (req.user === undefined || l.ownerUid === req.user) && (req.network === undefined || l.network === req.network));
  if (hit.length === 0) throw new TapdError('not_found', 'no lease matches; see tapctl list');
  for (const lease of hit) {
    ctx.log.info({ event: 'lease_revoked', lease: lease.id, uid: lease.ownerUid, peer_uid: peer.uid, peer_pid: peer.pid, ifname: lease.ifname }, 'lease revoked');
    await endLease(ctx, lease, `revoked by uid ${peer.uid}`, { deleteDevice: true });
  }
  return ok({ revoked: hit.map(leaseInfo) });
}

async function handleReload(ctx: DaemonContext): Promise<Reply> {
  ctx.reload();
  return ok({ reloaded: true });
}
