// VLANs on a VLAN-filtering Linux bridge: the bridge's vlan_filtering, a port's VLAN list.
import { readFileSync } from 'node:fs';
import { C, LAYOUT } from './constants.js';
import type { IfName } from './ifname.js';
import { ifinfomsg, nlattr, request } from './rtnetlink.js';

/**
 * /sys/class/net/BR/bridge/vlan_filtering (this network namespace's sysfs). A kernel built
 * without CONFIG_BRIDGE_VLAN_FILTERING has no such file: it never filters.
 */
export function vlanFiltering(bridge: IfName): boolean {
  try {
    return readFileSync(`/sys/class/net/${bridge.value}/bridge/vlan_filtering`, 'utf8').trim() === '1';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** Turns on VLAN filtering: RTM_NEWLINK on the existing bridge with IFLA_BR_VLAN_FILTERING (as `ip link set BR type bridge vlan_filtering 1`). */
export function setVlanFiltering(ifindex: number, bridge: IfName, on: boolean): void {
  const data = nlattr(C.IFLA_INFO_DATA | C.NLA_F_NESTED, nlattr(C.IFLA_BR_VLAN_FILTERING, Buffer.from([on ? 1 : 0])));
  const linkinfo = nlattr(C.IFLA_LINKINFO | C.NLA_F_NESTED, Buffer.concat([nlattr(C.IFLA_INFO_KIND, Buffer.from('bridge\0')), data]));
  request(C.RTM_NEWLINK, C.NLM_F_ACK, Buffer.concat([ifinfomsg(C.AF_UNSPEC, ifindex), linkinfo]), `set vlan_filtering on ${bridge}`, bridge.value);
}

function vlanInfo(vid: number, flags: number): Buffer {
  const b = Buffer.alloc(LAYOUT['sizeof struct bridge_vlan_info']);
  b.writeUInt16LE(flags, LAYOUT['bridge_vlan_info.flags']);
  b.writeUInt16LE(vid, LAYOUT['bridge_vlan_info.vid']);
  return nlattr(C.IFLA_AF_SPEC | C.NLA_F_NESTED, nlattr(C.IFLA_BRIDGE_VLAN_INFO, b));
}

export interface PortVlan {
  /** Frames without a tag entering the port belong to this VLAN. */
  pvid?: boolean;
  /** Frames of this VLAN leave the port without a tag. */
  untagged?: boolean;
}

/** Adds VLAN vid to a bridge port (`bridge vlan add dev PORT vid VID [pvid] [untagged]`). */
export function addPortVlan(ifindex: number, port: string, vid: number, o: PortVlan = {}): void {
  const flags = (o.pvid ? C.BRIDGE_VLAN_INFO_PVID : 0) | (o.untagged ? C.BRIDGE_VLAN_INFO_UNTAGGED : 0);
  request(C.RTM_SETLINK, C.NLM_F_ACK, Buffer.concat([ifinfomsg(C.AF_BRIDGE, ifindex), vlanInfo(vid, flags)]), `add VLAN ${vid} to bridge port ${port}`, port);
}

/** Removes VLAN vid from a bridge port (`bridge vlan del dev PORT vid VID`). */
export function delPortVlan(ifindex: number, port: string, vid: number): void {
  request(C.RTM_DELLINK, C.NLM_F_ACK, Buffer.concat([ifinfomsg(C.AF_BRIDGE, ifindex), vlanInfo(vid, 0)]), `remove VLAN ${vid} from bridge port ${port}`, port);
}
