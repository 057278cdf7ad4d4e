// VLAN networks on a VLAN-filtering bridge: a lease's port carries only its network's VLAN
// (PVID, untagged), and an uplink network's NIC carries that VLAN tagged to the LAN.
import { readFileSync } from 'node:fs';
import * as sys from '../sys/index.js';
import { SystemError } from '../errors/system-error.js';
import { TapdError } from '../errors/tapd-error.js';
import type { Network } from './policy/types.js';

/** Refuses a VLAN network on a bridge that does not filter VLANs (every port would see every VLAN). */
export function checkVlanBridge(net: Network, bridge: sys.IfName): void {
  if (net.vlan === undefined || sys.vlanFiltering(bridge)) return;
  throw new TapdError('network_unavailable', `network ${net.name}: bridge ${bridge} does not filter VLANs, so VLAN ${net.vlan} would not be kept apart; ` +
    `an admin must turn it on (ip link set ${bridge} type bridge vlan_filtering 1) or let tapd create the bridge`);
}

/** A bridge tapd just created for a VLAN network filters VLANs from the start (before any port). */
export function enableVlanFiltering(net: Network, bridge: sys.IfName): void {
  try {
    sys.setVlanFiltering(sys.getIndex(bridge), bridge, true);
  } catch (err) {
    if (err instanceof SystemError && err.errno === sys.C.EOPNOTSUPP) {
      throw new TapdError('network_unavailable', `network ${net.name}: this kernel cannot filter VLANs on a bridge (built without CONFIG_BRIDGE_VLAN_FILTERING), so VLAN ${net.vlan} is not possible here`);
    }
    throw err;
  }
}

/** The bridge's default PVID: what every new port gets, untagged, before tapd changes it. */
function defaultPvid(bridge: sys.IfName): number {
  try {
    return Number(readFileSync(`/sys/class/net/${bridge.value}/bridge/default_pvid`, 'utf8').trim());
  } catch {
    return 1;
  }
}

/** A new port (not up yet): only the network's VLAN, as PVID and untagged; the default VLAN removed. */
export function setPortVlan(net: Network, bridge: sys.IfName, ifindex: number, port: string): void {
  const vid = net.vlan!;
  sys.addPortVlan(ifindex, port, vid, { pvid: true, untagged: true });
  const dflt = defaultPvid(bridge);
  if (dflt !== 0 && dflt !== vid) sys.delPortVlan(ifindex, port, dflt);
}

/** The uplink NIC carries the network's VLAN tagged (idempotent: adding it again changes nothing). */
export function tagUplink(net: Network): void {
  if (net.vlan === undefined || !net.uplink) return;
  sys.addPortVlan(sys.getIndex(net.uplink), net.uplink.value, net.vlan);
}
