// Issue 14 in tapd.conf: `macvtap NIC [mode M]` networks and `vlan N` on bridged/uplink networks.
import { expect, it } from 'vitest';
import { checkConfig, loadPolicy } from '../../src/daemon/policy/index.js';
import { POLICY_OPTS as OPTS, policyFiles } from '../helpers/policy-files.js';

const write = policyFiles('vmpolicy');

function problems(content: string): string[] {
  const p = write(content);
  return checkConfig(p, OPTS).problems.map((x) => x.slice(p.length + 1));
}

it('parses macvtap networks: NIC, mode (default bridge), hooks, MTU', () => {
  const p = loadPolicy(write('network mv macvtap eth0\nnetwork mvp macvtap eth0 mode private up /etc/tapd/up mtu 1400\n'), OPTS);
  expect(p.networks.get('mv')).toMatchObject({ mode: 'macvtap', macvtapMode: 'bridge', isolated: false });
  expect(p.networks.get('mv')!.lower!.value).toBe('eth0');
  expect(p.networks.get('mv')!.bridge).toBeUndefined();
  expect(p.networks.get('mvp')).toMatchObject({ mode: 'macvtap', macvtapMode: 'private', up: '/etc/tapd/up', mtu: 1400 });
  // The NIC is no alias: two macvtap networks may share it, and -b eth0 means nothing.
  expect(p.resolve('eth0')).toBeUndefined();
});

it('rejects what a macvtap network cannot have, and a bad mode', () => {
  expect(problems('network mv macvtap eth0 bridge br0 isolated vlan 20\n')).toEqual([
    '1:25: "bridge" cannot be used with "macvtap" (a macvtap device sits on its NIC, on no bridge)',
    '1:36: "isolated" cannot be used with "macvtap" (a macvtap device sits on its NIC, on no bridge)',
    '1:45: "vlan" cannot be used with "macvtap" (a macvtap device sits on its NIC, on no bridge; for a VLAN, name the NIC\'s VLAN interface, e.g. macvtap eth0.20)',
  ]);
  expect(problems('network mv macvtap eth0 mode wild\n')).toEqual(['1:30: "mode" needs one of bridge, vepa, private, passthru, not "wild"']);
  expect(problems('network lan bridge br0 mode bridge\n')).toEqual(['1:24: "mode" is for macvtap networks (macvtap NIC mode bridge|vepa|private|passthru)']);
  expect(problems('network mv macvtap\n')).toEqual(['1:12: "macvtap" needs a network interface name']);
});

it('parses vlan N on bridged and uplink networks; VLAN networks share a bridge and an uplink', () => {
  const p = loadPolicy(write(`
network lan bridge br0
network v20 uplink eth1 bridge brv vlan 20
network v30 uplink eth1 bridge brv vlan 30
network lab20 bridge br0 vlan 20
`), OPTS);
  expect(p.networks.get('v20')).toMatchObject({ mode: 'uplink', vlan: 20 });
  expect(p.networks.get('v30')).toMatchObject({ mode: 'uplink', vlan: 30 });
  expect(p.networks.get('lab20')).toMatchObject({ mode: 'bridged', vlan: 20 });
  // The bridge's name means its non-VLAN network; VLAN networks answer to their own names.
  expect(p.resolve('br0')?.name).toBe('lan');
  expect(p.resolve('brv')).toBeUndefined();
  expect(p.resolve('eth1')).toBeUndefined();
  expect(p.resolve('v30')?.name).toBe('v30');
});

it('rejects a VLAN out of range, on a host-only network, and an uplink on two bridges', () => {
  expect(problems('network v bridge br0 vlan 4095\n')).toEqual(['1:27: "vlan" 4095 is out of range (expected a whole number from 1 to 4094)']);
  expect(problems('network v bridge br0 vlan 0\n')).toEqual(['1:27: "vlan" 0 is out of range (expected a whole number from 1 to 4094)']);
  expect(problems('network h hostonly vlan 5\n')).toEqual(['1:20: "vlan" cannot be used with "hostonly" (a host-only TAP is on no bridge)']);
  expect(problems('network a uplink eth1 bridge bra vlan 20\nnetwork b uplink eth1 bridge brb vlan 30\n')).toHaveLength(1);
  expect(problems('network a uplink eth1 bridge bra vlan 20\nnetwork b uplink eth1 bridge brb vlan 30\n')[0]).toMatch(/uplink eth1 is on bridge bra for network a .*; network b must name the same bridge/);
  expect(problems('network brv hostonly\nnetwork v bridge brv vlan 20\n')[0]).toMatch(/brv is already the name of network brv .*; it cannot also be the bridge of network v/);
});
