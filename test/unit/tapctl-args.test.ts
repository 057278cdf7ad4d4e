// Unit tests of tapctl's pure argv building (no daemon, no root).
import { describe, expect, it } from 'vitest';
import {
  assignChildFds, openRequest, parseNicSpec, parseRedir, qemuArgv, resolveNic, resolveNics, runArgv,
  tapNicArgs, translateRedir, userNetArgs, type Granted, type Nic,
} from '../../src/cli/qemu-args.js';
import { exitStatus } from '../../src/cli/launch.js';
import { formatDuration, formatLeases } from '../../src/cli/format.js';
import { UsageError } from '../../src/cli/usage-error.js';

const MAC = '52:54:00:aa:bb:cc';

function granted(nic: Nic, childFds: number[], mac = MAC): Granted {
  return { nic, mac, childFds };
}

describe('NIC defaults and rules', () => {
  it('defaults: virtio-net-pci on br0, one queue, vnet_hdr on, id net0', () => {
    expect(resolveNic({}, 0)).toEqual({ network: 'br0', model: 'virtio-net-pci', queues: 1, vhost: false, vnetHdr: true, id: 'net0', deviceProps: [] });
  });

  it('vnet_hdr is on for virtio models and off for the others unless asked', () => {
    for (const model of ['e1000', 'rtl8139', 'ne2k_pci', 'e1000e', 'pcnet']) {
      expect(resolveNic({ model }, 0).vnetHdr).toBe(false);
      expect(resolveNic({ model, vnetHdr: true }, 0).vnetHdr).toBe(true);
    }
    expect(resolveNic({ model: 'virtio-net-pci', vnetHdr: false }, 0).vnetHdr).toBe(false);
    expect(resolveNic({ model: 'virtio-net-device' }, 0).vnetHdr).toBe(true);
  });

  it('multiqueue and vhost need a virtio model; vhost needs the header', () => {
    expect(() => resolveNic({ model: 'e1000', queues: 2 }, 0)).toThrow(/queues need a virtio model/);
    expect(() => resolveNic({ model: 'rtl8139', vhost: true }, 1)).toThrow(/NIC 2: vhost-net works with virtio models only/);
    expect(() => resolveNic({ vhost: true, vnetHdr: false }, 0)).toThrow(/vhost-net needs the virtio-net header/);
    expect(resolveNic({ vhost: true }, 0)).toMatchObject({ vhost: true, vnetHdr: true });
  });

  it('the network default can be changed (TAPD_NETWORK)', () => {
    expect(resolveNic({}, 0, 'lan').network).toBe('lan');
    expect(resolveNic({ network: 'dmz' }, 0, 'lan').network).toBe('dmz');
  });
});

describe('--nic specs', () => {
  it('parses every key', () => {
    expect(parseNicSpec('b=lan,model=e1000,mac=52:54:00:AA:BB:CC,queues=1,mtu=9000,vhost=off,vnet_hdr=on,id=lan0')).toEqual({
      network: 'lan', model: 'e1000', mac: MAC, queues: 1, mtu: 9000, vhost: false, vnetHdr: true, id: 'lan0',
    });
    expect(parseNicSpec('br=br1')).toEqual({ network: 'br1' });
    expect(parseNicSpec('network=lab,vhost')).toEqual({ network: 'lab', vhost: true });
  });

  it.each([
    ['', /empty spec/],
    ['b=lan,colour=red', /unknown key "colour"/],
    ['b=lan,b=lab', /"b" given twice/],
    ['b=lan,br=lab', /"br" given twice/],
    ['model=virtio gpu', /not a QEMU device name/],
    ['mac=52:54:00:aa:bb', /not a MAC address/],
    ['mac=zz:54:00:aa:bb:cc', /not a MAC address/],
    ['queues=0', /from 1 to 16/],
    ['queues=17', /from 1 to 16/],
    ['queues=two', /from 1 to 16/],
    ['mtu=67', /from 68 to 65521/],
    ['vhost=maybe', /expected on or off/],
    ['id=0abc', /not a QEMU id/],
    ['b=', /"b" needs a value/],
    ['b=a,b', /"b" given twice/],
    ['b=br 0', /not a network, bridge or interface name/],
  ])('rejects %j', (spec, message) => {
    expect(() => parseNicSpec(spec)).toThrow(UsageError);
    expect(() => parseNicSpec(spec)).toThrow(message);
  });

  it('plain flags make the first NIC, each --nic one more; only --nic means no implicit NIC', () => {
    const nics = resolveNics({ network: 'lan' }, [parseNicSpec('b=dmz,model=e1000'), parseNicSpec('b=lab,queues=2')]);
    expect(nics.map((n) => [n.network, n.model, n.id, n.queues])).toEqual([
      ['lan', 'virtio-net-pci', 'net0', 1], ['dmz', 'e1000', 'net1', 1], ['lab', 'virtio-net-pci', 'net2', 2],
    ]);
    expect(resolveNics({}, [parseNicSpec('b=dmz')]).map((n) => n.network)).toEqual(['dmz']);
    expect(resolveNics({}, []).map((n) => n.network)).toEqual(['br0']);
  });

  it('ids and explicit MACs must be distinct', () => {
    expect(() => resolveNics({ id: 'a' }, [parseNicSpec('id=a')])).toThrow(/two NICs have id a/);
    expect(() => resolveNics({ network: 'lan' }, [parseNicSpec('id=net0')])).toThrow(/two NICs have id net0/);
    expect(() => resolveNics({ mac: MAC }, [parseNicSpec(`mac=${MAC.toUpperCase()}`)])).toThrow(/two NICs ask for MAC/);
  });
});

describe('the open request', () => {
  it('carries what tapd needs, nothing unset', () => {
    expect(openRequest(resolveNic({ network: 'lan' }, 0))).toEqual({ network: 'lan', queues: 1, vnet_hdr: true, vhost: false });
    expect(openRequest(resolveNic({ network: 'lan', model: 'e1000', mac: MAC, mtu: 1400 }, 0), 1000)).toEqual({
      network: 'lan', mac: MAC, mtu: 1400, queues: 1, vnet_hdr: false, vhost: false, as_uid: 1000,
    });
  });
});

describe('QEMU arguments', () => {
  it('lays fds out from 3, NIC by NIC', () => {
    expect(assignChildFds([1])).toEqual([[3]]);
    expect(assignChildFds([4, 1, 2])).toEqual([[3, 4, 5, 6], [7], [8, 9]]);
  });

  it.each([
    ['virtio-net-pci'], ['e1000'], ['rtl8139'], ['ne2k_pci'],
  ])('one queue, %s: -netdev tap,fd=3 and the model with the lease MAC', (model) => {
    const nic = resolveNic({ network: 'lan', model }, 0);
    expect(tapNicArgs(granted(nic, [3]))).toEqual(['-netdev', 'tap,id=net0,fd=3', '-device', `${model},netdev=net0,mac=${MAC}`]);
  });

  it('never writes vnet_hdr= (QEMU 7.2 rejects it next to fd=/fds= and probes the TAP instead)', () => {
    for (const vnetHdr of [true, false]) {
      const args = tapNicArgs(granted(resolveNic({ vnetHdr, queues: 2 }, 0), [3, 4]));
      expect(args.join(' ')).not.toMatch(/vnet_hdr/);
    }
  });

  it('multiqueue: fds=a:b:c:d, mq=on, vectors=2*queues+2; vhost=on', () => {
    const nic = resolveNic({ network: 'lan', queues: 4, vhost: true }, 0);
    expect(tapNicArgs(granted(nic, [3, 4, 5, 6]))).toEqual([
      '-netdev', 'tap,id=net0,fds=3:4:5:6,vhost=on',
      '-device', `virtio-net-pci,netdev=net0,mac=${MAC},mq=on,vectors=10`,
    ]);
    const dev = resolveNic({ model: 'virtio-net-device', queues: 2 }, 0);
    expect(tapNicArgs(granted(dev, [3, 4]))[3]).toBe(`virtio-net-device,netdev=net0,mac=${MAC},mq=on`);
  });

  it('an asked-for MTU reaches a virtio guest as host_mtu', () => {
    expect(tapNicArgs(granted(resolveNic({ mtu: 9000 }, 0), [3]))[3]).toBe(`virtio-net-pci,netdev=net0,mac=${MAC},host_mtu=9000`);
    expect(tapNicArgs(granted(resolveNic({ mtu: 9000, model: 'e1000' }, 0), [3]))[3]).toBe(`e1000,netdev=net0,mac=${MAC}`);
  });

  it('several NICs, then the user\'s arguments untouched', () => {
    const nics = resolveNics({ network: 'lan', queues: 2 }, [parseNicSpec('b=dmz,model=e1000,id=dmz0')]);
    const layout = assignChildFds(nics.map((n) => n.queues));
    const argv = qemuArgv(
      [granted(nics[0]!, layout[0]!, '52:54:00:00:00:01'), granted(nics[1]!, layout[1]!, '52:54:00:00:00:02')],
      ['-m', '512', '-netdev', 'user,id=x'],
    );
    expect(argv).toEqual([
      '-netdev', 'tap,id=net0,fds=3:4', '-device', 'virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,mq=on,vectors=6',
      '-netdev', 'tap,id=dmz0,fd=5', '-device', 'e1000,netdev=dmz0,mac=52:54:00:00:00:02',
      '-m', '512', '-netdev', 'user,id=x',
    ]);
  });

  it('checks fds against queues', () => {
    expect(() => tapNicArgs(granted(resolveNic({ queues: 2 }, 0), [3]))).toThrow(RangeError);
  });

  it('run: -t FD per NIC before the command\'s arguments; multiqueue as 3:4:5:6', () => {
    const nics = resolveNics({ queues: 4 }, [parseNicSpec('b=dmz')]);
    const layout = assignChildFds(nics.map((n) => n.queues));
    expect(runArgv(nics.map((n, i) => granted(n, layout[i]!)), ['-m', '64'])).toEqual(['-t', '3:4:5:6', '-t', '7', '-m', '64']);
    expect(runArgv([granted(resolveNic({}, 0), [3])], [])).toEqual(['-t', '3']);
  });
});

describe('-redir translation', () => {
  it.each([
    ['tcp:5022::22', 'hostfwd=tcp::5022-:22'],
    ['udp:5353:10.0.2.15:53', 'hostfwd=udp::5353-10.0.2.15:53'],
    [':8080::80', 'hostfwd=tcp::8080-:80'],
    ['tcp:65535:10.0.2.15:1', 'hostfwd=tcp::65535-10.0.2.15:1'],
  ])('%s → %s', (redir, hostfwd) => {
    expect(translateRedir(redir)).toBe(hostfwd);
  });

  it('parses the optional parts', () => {
    expect(parseRedir(':1::2')).toEqual({ proto: 'tcp', hostPort: 1, guestAddr: '', guestPort: 2 });
  });

  it.each([
    ['5022::22', /expected \[tcp\|udp\]:HOSTPORT/],
    ['tcp:5022:22', /expected/],
    ['tcp:5022::22:1', /expected/],
    ['sctp:5022::22', /protocol must be tcp or udp/],
    ['tcp:0::22', /host port: expected a whole number from 1 to 65535/],
    ['tcp:70000::22', /host port/],
    ['tcp:5022::', /guest port/],
    ['tcp::10.0.2.15:22', /host port/],
    ['tcp:5022:10.0.2.256:22', /not an IPv4 address/],
    ['tcp:5022:guest:22', /not an IPv4 address/],
    ['tcp:+22::22', /host port/],
  ])('rejects %j', (redir, message) => {
    expect(() => translateRedir(redir)).toThrow(UsageError);
    expect(() => translateRedir(redir)).toThrow(message);
  });

  it('builds -netdev user with every forward, and the device', () => {
    expect(userNetArgs({ id: 'net0', model: 'virtio-net-pci' }, ['tcp:5022::22', 'udp:5353:10.0.2.15:53'])).toEqual([
      '-netdev', 'user,id=net0,hostfwd=tcp::5022-:22,hostfwd=udp::5353-10.0.2.15:53',
      '-device', 'virtio-net-pci,netdev=net0',
    ]);
    expect(userNetArgs({ id: 'u', model: 'e1000', mac: MAC }, [])).toEqual(['-netdev', 'user,id=u', '-device', `e1000,netdev=u,mac=${MAC}`]);
  });
});

// tapd-bridge-helper's arguments: test/bridge-helper-native.test.ts (the helper is C now).

describe('output and statuses', () => {
  it('exit status: code as is, signal as 128+N', () => {
    expect(exitStatus(0, null)).toBe(0);
    expect(exitStatus(3, null)).toBe(3);
    expect(exitStatus(null, 'SIGTERM')).toBe(143);
    expect(exitStatus(null, 'SIGKILL')).toBe(137);
    expect(exitStatus(null, 'SIGINT')).toBe(130);
  });

  it('lease table and durations', () => {
    const text = formatLeases([{
      id: 'abc', ifname: 'tap0', ifindex: 5, mac: MAC, network: 'lan', bridge: 'br0', mtu: 1500, queues: 1,
      vnet_hdr: true, owner_uid: 65534, pid: 42, started: '2026-01-01T00:00:00.000Z',
    }], (uid) => (uid === 65534 ? 'nobody' : String(uid)), Date.parse('2026-01-01T00:03:12.500Z'));
    expect(text.split('\n')[0]).toMatch(/^ID\s+IFNAME\s+NETWORK\s+BRIDGE\s+MAC\s+OWNER\s+PID\s+AGE$/);
    expect(text.split('\n')[1]).toMatch(/^abc\s+tap0\s+lan\s+br0\s+52:54:00:aa:bb:cc\s+nobody\s+42\s+3m12s$/);
    expect(formatLeases([], String)).toBe('no leases\n');
    expect(formatDuration(3725)).toBe('1h 2m 5s');
    expect(formatDuration(90061)).toBe('1d 1h 1m 1s');
  });
});
