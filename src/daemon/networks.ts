// Making a network ready and putting a TAP on it. Kernel work only; policy is decided before.
import { randomBytes } from 'node:crypto';
import { close as closeAsync } from 'node:fs';
import * as sys from '../sys/index.js';
import { TapdError } from '../errors/tapd-error.js';
import type { Network } from './policy/types.js';
import { runHook } from './hooks.js';
import type { Logger } from './log.js';

/** Serializes bridge set-up per network, so two first opens do not both create the bridge. */
const setupLocks = new Map<string, Promise<void>>();

/**
 * bridged: the bridge must exist and be a bridge (or is created, when the network says `create`).
 * uplink: on first use create the bridge, enslave the NIC, bring both up, and run the admin's
 * bridge script once (it moves the NIC's addresses and routes to the bridge).
 * hostonly: nothing to do.
 */
export async function ensureNetwork(net: Network, hookTimeoutMs: number, log: Logger): Promise<void> {
  if (net.mode === 'hostonly') return;
  const prior = setupLocks.get(net.name) ?? Promise.resolve();
  const mine = prior.then(() => setUp(net, hookTimeoutMs, log));
  const settled = mine.catch(() => {});
  setupLocks.set(net.name, settled);
  try {
    await mine;
  } finally {
    if (setupLocks.get(net.name) === settled) setupLocks.delete(net.name);
  }
}

async function setUp(net: Network, hookTimeoutMs: number, log: Logger): Promise<void> {
  const bridge = sys.IfName.parse(net.bridge!);
  if (sys.exists(bridge)) {
    if (!sys.isBridge(bridge)) {
      throw new TapdError('network_unavailable', `network ${net.name}: ${bridge} exists but is not a bridge; fix the config`);
    }
    return;
  }
  if (net.mode === 'bridged' && !net.createBridge) {
    throw new TapdError('network_unavailable', `network ${net.name}: bridge ${bridge} does not exist; an admin must create it`);
  }
  // Check the NIC before touching anything, so a typo in the config changes nothing.
  const nic = net.mode === 'uplink' ? sys.IfName.parse(net.uplink!) : undefined;
  if (nic && !sys.exists(nic)) throw new TapdError('network_unavailable', `network ${net.name}: uplink NIC ${nic} does not exist`);
  sys.createBridge(bridge);
  log.info({ event: 'bridge_created', network: net.name, bridge: bridge.value }, 'bridge created');
  try {
    if (nic) {
      // The bridge takes the NIC's MTU and MAC so the host's address on the LAN stays the same.
      sys.setMtu(bridge, sys.getMtu(nic));
      sys.setMac(bridge, sys.getMac(nic));
      sys.addPort(bridge, nic, { mtu: sys.getMtu(nic) });
    } else {
      // A fixed MAC, so VMs coming and going never change the bridge's address.
      sys.setMac(bridge, randomLocalMac());
    }
    sys.setUp(bridge);
  } catch (err) {
    // Our own steps failed: take the bridge away again, which also frees the NIC as we found it.
    try {
      sys.deleteBridge(bridge);
    } catch (cleanupErr) {
      log.error({ event: 'bridge_cleanup_failed', bridge: bridge.value, reason: String(cleanupErr) }, 'could not remove bridge');
    }
    throw err;
  }
  if (nic && net.bridgeScript) {
    try {
      await runHook({
        script: net.bridgeScript,
        args: [bridge.value, nic.value],
        env: { TAPD_EVENT: 'bridge-up', TAPD_NETWORK: net.name, TAPD_BRIDGE: bridge.value, TAPD_UPLINK: nic.value },
        timeoutMs: hookTimeoutMs,
      }, log);
    } catch {
      // The admin's script may have moved addresses and routes already; deleting the bridge now
      // would take them with it. Leave both as the script left them for the admin to see.
      throw new TapdError('network_unavailable',
        `network ${net.name}: the bridge script for ${bridge} failed; an admin must check the tapd log and the host's addresses on ${bridge} and ${nic}`);
    }
  }
}

/** A random unicast, locally administered MAC. */
function randomLocalMac(): sys.Mac {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfc) | 0x02;
  return sys.Mac.fromBytes(b);
}

export interface TapRequest {
  net: Network;
  mac: sys.Mac;
  mtu?: number;
  queues: number;
  vnetHdr: boolean;
}

export interface MadeTap {
  tap: sys.Tap;
  ifindex: number;
  mtu: number;
}

/** Creates the TAP, sets MTU and host-side MAC, attaches it to the bridge, brings it up. */
export function makeTap(req: TapRequest): MadeTap {
  const tap = sys.createTap({ queues: req.queues, vnetHdr: req.vnetHdr });
  try {
    const hostMac = req.mac.hostSide();
    if (req.net.bridge !== undefined && req.net.mode !== 'hostonly') {
      const bridge = sys.IfName.parse(req.net.bridge);
      sys.addPort(bridge, tap.name, { mtu: req.mtu ?? req.net.mtu, hostMac });
    } else {
      if (req.mtu ?? req.net.mtu) sys.setMtu(tap.name, (req.mtu ?? req.net.mtu)!);
      sys.setMac(tap.name, hostMac);
    }
    const ifindex = sys.getIndex(tap.name);
    if (req.net.isolated && req.net.mode !== 'hostonly') sys.setPortIsolated(ifindex, tap.name.value, true);
    sys.setUp(tap.name);
    return { tap, ifindex, mtu: sys.getMtu(tap.name) };
  } catch (err) {
    releaseFds(tap.fds);
    throw err;
  }
}

/**
 * Closes TAP fds off the event loop: the last close deletes the device, which takes the kernel
 * ~16 ms, and no other client should wait for that.
 */
export function releaseFds(fds: readonly number[]): void {
  for (const fd of fds) closeAsync(fd, () => {});
}
