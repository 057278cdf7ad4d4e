// Making a network's bridge ready for a new port. Kernel work only; the policy has decided before.
import { readFileSync } from 'node:fs';
import * as sys from '../sys/index.js';
import { TapdError } from '../errors/tapd-error.js';
import type { Network } from './policy/types.js';
import { runHook } from './hooks.js';
import type { Logger } from './log.js';
import { checkVlanBridge, enableVlanFiltering, tagUplink } from './vlans.js';

/** A bridge ready to take a port. */
export interface ReadyBridge {
  name: sys.IfName;
  ifindex: number;
  /** The bridge's MTU before the new port (restored if the port changed it). */
  mtu: number;
}

/** Serializes bridge set-up per network, so two first opens do not both create the bridge. */
const setupLocks = new Map<string, Promise<unknown>>();
/** Bridges (by ifindex) whose MAC tapd has pinned: no port can change it any more. */
const pinned = new Set<number>();

/** What an open would find, without changing anything (for `check`): throws what the open would. */
export function inspectBridge(net: Network): { stp: boolean } {
  const bridge = net.bridge!;
  if (sys.exists(bridge)) {
    if (!sys.isBridge(bridge)) throw unavailable(net, `${bridge} exists but is not a bridge; fix the config`);
    checkVlanBridge(net, bridge);
    return { stp: stpOn(bridge) };
  }
  if (net.mode === 'bridged' && !net.createBridge) throw unavailable(net, `bridge ${bridge} does not exist; an admin must create it`);
  if (net.uplink && !sys.exists(net.uplink)) throw unavailable(net, `uplink NIC ${net.uplink} does not exist`);
  return { stp: false };
}

/**
 * bridged: the bridge must exist and be a bridge (or is created, when the network says `create`).
 * uplink: on first use create the bridge, enslave the NIC, bring both up, and run the admin's
 * bridge script once (it moves the NIC's addresses and routes to the bridge).
 * Either way the bridge's MAC is pinned: a Linux bridge whose address was never set explicitly
 * takes its lowest port's, and a TAP's holder may set its TAP's MAC (SIOCSIFHWADDR on the fd).
 */
export async function ensureBridge(net: Network, hookTimeoutMs: number, log: Logger, beforeScript: () => void = () => {}): Promise<ReadyBridge> {
  const prior = setupLocks.get(net.name) ?? Promise.resolve();
  const mine = prior.then(() => setUp(net, hookTimeoutMs, log, beforeScript));
  const settled = mine.catch(() => {});
  setupLocks.set(net.name, settled);
  try {
    return await mine;
  } finally {
    if (setupLocks.get(net.name) === settled) setupLocks.delete(net.name);
  }
}

function unavailable(net: Network, what: string): TapdError {
  return new TapdError('network_unavailable', `network ${net.name}: ${what}`);
}

function stpOn(bridge: sys.IfName): boolean {
  try {
    return readFileSync(`/sys/class/net/${bridge.value}/bridge/stp_state`, 'utf8').trim() !== '0';
  } catch {
    return false;
  }
}

async function setUp(net: Network, hookTimeoutMs: number, log: Logger, beforeScript: () => void): Promise<ReadyBridge> {
  const bridge = net.bridge!;
  // One lookup answers both "is it there" and, once it is, which device the port goes to.
  let ifindex = sys.indexOrZero(bridge);
  if (ifindex === 0) {
    await create(net, bridge, hookTimeoutMs, log, beforeScript);
    ifindex = sys.getIndex(bridge);
  } else if (!sys.isBridge(bridge)) {
    throw unavailable(net, `${bridge} exists but is not a bridge; fix the config`);
  }
  checkVlanBridge(net, bridge);
  tagUplink(net);
  if (!pinned.has(ifindex)) {
    if (!sys.macIsFixed(bridge)) {
      const mac = sys.getMac(bridge);
      sys.setMac(bridge, mac); // the same address, now set explicitly (addr_assign_type NET_ADDR_SET)
      log.info({ event: 'bridge_mac_pinned', network: net.name, bridge: bridge.value, mac: mac.toString() }, 'bridge MAC pinned');
    }
    pinned.add(ifindex);
  }
  return { name: bridge, ifindex, mtu: sys.getMtu(bridge) };
}

async function create(net: Network, bridge: sys.IfName, hookTimeoutMs: number, log: Logger, beforeScript: () => void): Promise<void> {
  if (net.mode === 'bridged' && !net.createBridge) throw unavailable(net, `bridge ${bridge} does not exist; an admin must create it`);
  // Check the NIC before touching anything, so a typo in the config changes nothing.
  const nic = net.uplink;
  if (nic && !sys.exists(nic)) throw unavailable(net, `uplink NIC ${nic} does not exist`);
  sys.createBridge(bridge);
  log.info({ event: 'bridge_created', network: net.name, bridge: bridge.value }, 'bridge created');
  try {
    // Before any port: a VLAN network's bridge filters VLANs from the start.
    if (net.vlan !== undefined) enableVlanFiltering(net, bridge);
    if (nic) {
      // The bridge takes the NIC's MTU and MAC so the host's address on the LAN stays the same.
      sys.setMtu(bridge, sys.getMtu(nic));
      sys.setMac(bridge, sys.getMac(nic));
      sys.addPort(bridge, nic, { mtu: sys.getMtu(nic) });
    } else {
      sys.setMac(bridge, sys.Mac.random());
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
    beforeScript();
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
      throw unavailable(net, `the bridge script for ${bridge} failed; an admin must check the tapd log and the host's addresses on ${bridge} and ${nic}`);
    }
  }
}
