// The ovs network kind and the `ports` rule option in tapd.conf, and the `port` request field:
// parsed strictly, decided after the caller may use the network (no existence oracle), default deny.
import { describe, expect, it } from 'vitest';
import { checkConfig, DEFAULT_DENY_REASON, loadPolicy, type OpenIntent, type Policy, type Subject } from '../../src/daemon/policy/index.js';
import { portMatches } from '../../src/daemon/policy/policy.js';
import { decodeRequest } from '../../src/protocol/messages.js';
import { TapdError } from '../../src/errors/tapd-error.js';
import { POLICY_OPTS as OPTS, policyFiles } from '../helpers/policy-files.js';
const ALICE: Subject = { uid: 1001, gid: 1001, groups: [100], pid: 1 }; // in kvm
const BOB: Subject = { uid: 1002, gid: 1002, groups: [100], pid: 1 }; // in kvm
const NOBODY: Subject = { uid: 65534, gid: 65534, groups: [], pid: 1 };

const write = policyFiles('ovspolicy');
const load = (content: string): Policy => loadPolicy(write(content), OPTS);
function problems(content: string): string[] {
  const p = write(content);
  return checkConfig(p, OPTS).problems.map((x) => x.slice(p.length + 1));
}

const CONF = `
network ovn ovs-bridge br-int ovn-wait 5s
network plain ovs-bridge br-vm ovsdb /run/other/db.sock
network lan bridge br0
permit alice on ovn ports alice-*,shared mac
permit bob on ovn
permit @kvm on lan
permit alice on plain ports *
`;

function open(p: Policy, s: Subject, network: string, over: Partial<OpenIntent> = {}) {
  const n = p.resolve(network);
  if (!n) throw new Error(`no ${network}`);
  return p.decide(s, { network: n, wantsMac: false, wantsMtu: false, queues: 1, vnetHdr: false, vhost: false, ...over });
}

describe('network NAME ovs-bridge BR', () => {
  it('parses: bridge, default socket, ovn-wait; the OVS bridge is no alias for -b', () => {
    const p = load(CONF);
    expect(p.networks.get('ovn')).toMatchObject({ mode: 'ovs', ovs: { bridge: 'br-int', socket: '/run/openvswitch/db.sock', ovnWaitMs: 5000 } });
    expect(p.networks.get('ovn')?.bridge).toBeUndefined();
    expect(p.networks.get('plain')).toMatchObject({ mode: 'ovs', ovs: { bridge: 'br-vm', socket: '/run/other/db.sock' } });
    expect(p.networks.get('plain')?.ovs?.ovnWaitMs).toBeUndefined();
    expect(p.resolve('br-int')).toBeUndefined();
  });

  it.each([
    ['network n ovs-bridge br-int bridge br0', '"bridge" cannot be used with "ovs-bridge"'],
    ['network n ovs-bridge br-int isolated', '"isolated" cannot be used with "ovs-bridge"'],
    ['network n ovs-bridge br-int hostonly', '"hostonly" cannot be used with "ovs-bridge"'],
    ['network n bridge br0 ovn-wait 5s', '"ovn-wait" is for Open vSwitch networks'],
    ['network n hostonly ovsdb /run/x.sock', '"ovsdb" is for Open vSwitch networks'],
    ['network n ovs-bridge br-int ovn-wait 1m', '"ovn-wait" 1m is out of range'],
    ['network n ovs-bridge br-int ovsdb run/db.sock', 'absolute path of a Unix socket'],
    ['network n ovs-bridge', '"ovs-bridge" needs an Open vSwitch bridge name'],
    ['network n ovs-bridge br-int\npermit alice on n ports lp,a=b', 'bad port pattern "a=b"'],
    ['network n ovs-bridge br-int\npermit alice on n ports lp*x', 'bad port pattern "lp*x"'],
    ['network n ovs-bridge br-int\npermit alice on n ports', '"ports" needs logical port names'],
    ['network lan bridge br0\npermit alice on lan ports lp-a', 'option "ports" is for ovs-bridge networks'],
  ])('%j is refused: %s', (conf, message) => {
    expect(problems(conf).join('\n')).toContain(message);
  });

  it('ports patterns: exact, prefix, every port', () => {
    expect(portMatches('lp-a', 'lp-a')).toBe(true);
    expect(portMatches('lp-a', 'lp-ab')).toBe(false);
    expect(portMatches('alice-*', 'alice-1')).toBe(true);
    expect(portMatches('alice-*', 'alice-')).toBe(true);
    expect(portMatches('alice-*', 'bob-1')).toBe(false);
    expect(portMatches('*', 'anything')).toBe(true);
  });
});

describe('deciding an open on an ovs network', () => {
  const p = () => load(CONF);

  it('grants a port the deciding rule names, and says so in the grants', () => {
    const d = open(p(), ALICE, 'ovn', { port: 'alice-vm1' });
    expect(d.allowed).toBe(true);
    expect(d.allowed && d.grants?.ports).toEqual(['alice-*', 'shared']);
    expect(open(p(), ALICE, 'ovn', { port: 'shared' }).allowed).toBe(true);
    expect(open(p(), ALICE, 'plain', { port: 'whatever' }).allowed).toBe(true);
  });

  it('no port, a port not granted, a rule without ports: denied with the reason, after the permit matched', () => {
    const none = open(p(), ALICE, 'ovn');
    expect(none).toMatchObject({ allowed: false });
    expect(!none.allowed && none.reason).toMatch(/ovn is an Open vSwitch network: name the logical port/);
    const other = open(p(), ALICE, 'ovn', { port: 'bob-vm1' });
    expect(!other.allowed && other.reason).toMatch(/does not grant logical port bob-vm1 \(it grants alice-\*,shared\)/);
    const bob = open(p(), BOB, 'ovn', { port: 'alice-vm1' });
    expect(!bob.allowed && bob.reason).toMatch(/does not grant logical port alice-vm1 \(it grants no ports/);
  });

  it('no existence oracle: a user no rule permits hears the default deny, port or not', () => {
    for (const port of [undefined, 'alice-vm1', 'nope']) {
      const d = open(p(), NOBODY, 'ovn', port === undefined ? {} : { port });
      expect(d).toMatchObject({ allowed: false, reason: DEFAULT_DENY_REASON });
    }
  });

  it('a port on a network that is not ovs is refused (after the permit)', () => {
    const d = open(p(), ALICE, 'lan', { port: 'alice-vm1' });
    expect(!d.allowed && d.reason).toMatch(/lan is not an Open vSwitch network/);
  });
});

describe('the port request field', () => {
  const req = (port: unknown) => decodeRequest({ v: 1, op: 'open', network: 'ovn', port });
  it('is decoded strictly', () => {
    expect(req('lp-a.1:x@y+z_')).toMatchObject({ port: 'lp-a.1:x@y+z_' });
    expect(decodeRequest({ v: 1, op: 'open', network: 'ovn' })).not.toHaveProperty('port');
    for (const bad of ['', 'a b', 'a,b', 'a=b', 'é', 'x'.repeat(65), 'a"b', 'a\nb', 5, null, ['a']]) {
      const e = (() => {
        try {
          req(bad);
        } catch (err) {
          return err;
        }
        return undefined;
      })();
      expect(e, JSON.stringify(bad)).toBeInstanceOf(TapdError);
      expect((e as TapdError).code).toBe('bad_request');
      expect((e as TapdError).message).toContain('field "port"');
    }
  });
});
