// Unit tests of issue 12's tapctl additions that need no daemon: -device properties, models
// passed through, ages, the networks table, an unknown MAC.
import { describe, expect, it } from 'vitest';
import { parseDeviceProp, parseModel, parseNicSpec, resolveNic, tapNicArgs } from '../../src/cli/qemu-args.js';
import { formatAge, formatLeases, formatNetworks, formatStatus } from '../../src/cli/format.js';
import { resolveExecutable } from '../../src/cli/launch.js';

const MAC = '52:54:00:aa:bb:cc';

describe('-device properties and models', () => {
  it('dev.KEY=VALUE in --nic and --device-opt go on the -device, last, replacing ours in place', () => {
    const spec = parseNicSpec('b=lan,model=virtio-net-pci,queues=2,dev.bootindex=1,dev.addr=0x5,dev.vectors=4');
    expect(spec.deviceProps).toEqual([['bootindex', '1'], ['addr', '0x5'], ['vectors', '4']]);
    const nic = resolveNic(spec, 0);
    expect(tapNicArgs({ nic, mac: MAC, childFds: [3, 4] })).toEqual([
      '-netdev', 'tap,id=net0,fds=3:4', '-device', `virtio-net-pci,netdev=net0,mac=${MAC},mq=on,vectors=4,bootindex=1,addr=0x5`,
    ]);
  });

  it.each([
    ['netdev=x', /tapctl sets "netdev" itself/],
    ['mq=off', /tapctl sets "mq" itself \(use --queues\)/],
    ['bootindex', /needs a value/],
    ['bootindex=1,addr=2', /without commas/],
    ['1x=2', /not a QEMU property name/],
  ])('refuses --device-opt %j', (spec, message) => {
    expect(() => parseDeviceProp(spec)).toThrow(message);
  });

  it('refuses a dev. key given twice', () => {
    expect(() => parseNicSpec('dev.addr=1,dev.addr=2')).toThrow(/"dev.addr" given twice/);
  });

  it('a model tapctl does not list is passed through; virtio by name', () => {
    expect(parseModel('e1000-82999xx')).toBe('e1000-82999xx');
    expect(resolveNic({ model: 'virtio-net-ccw' }, 0)).toMatchObject({ model: 'virtio-net-ccw', vnetHdr: true });
    expect(resolveNic({ model: 'virtio-net-ccw', queues: 2 }, 0).queues).toBe(2);
    expect(() => resolveNic({ model: 'sungem', queues: 2 }, 0)).toThrow(/need a virtio model/);
    expect(() => parseModel('e1000,addr=5')).toThrow(/not a QEMU device name/);
  });

  it('vhost with the default header is fine (check --vhost used to be refused)', () => {
    expect(resolveNic({ vhost: true }, 0)).toMatchObject({ vhost: true, vnetHdr: true });
  });
});

describe('output', () => {
  it('ages', () => {
    expect([0, 42, 60, 192, 3599, 3600, 7500, 86399, 86400, 97200].map(formatAge))
      .toEqual(['0s', '42s', '1m00s', '3m12s', '59m59s', '1h00m', '2h05m', '23h59m', '1d00h', '1d03h']);
    expect(formatAge(-5)).toBe('0s');
  });

  it('a lease whose guest MAC tapd does not know shows "unknown"', () => {
    const text = formatLeases([{
      id: 'abc', ifname: 'tap0', ifindex: 5, mac: null as unknown as string, network: 'lan', bridge: null, mtu: 1500, queues: 1,
      vnet_hdr: true, owner_uid: 7, pid: 42, started: '2026-01-01T00:00:00.000Z',
    }], String, Date.parse('2026-01-01T00:00:05Z'));
    expect(text.split('\n')[1]).toMatch(/^abc\s+tap0\s+lan\s+-\s+unknown\s+7\s+42\s+5s$/);
  });

  it('the networks table', () => {
    const text = formatNetworks([
      { name: 'lan', mode: 'bridged', bridge: 'br0', grants: { queues: 4, mac: true, mtu: false, vhost: true }, leases_per_network: 2, leases_total: 8, polkit: true, held: 1 },
      { name: 'host', mode: 'hostonly', bridge: null, grants: { queues: 1, mac: false, mtu: false, vhost: false }, leases_per_network: null, leases_total: null, polkit: false, held: 0 },
    ]);
    expect(text).toBe([
      'NAME  MODE      BRIDGE  GRANTS                           QUOTA            HELD',
      'lan   bridged   br0     queues 4,mac,vhost,polkit asked  2 here,8 in all  1',
      'host  hostonly  -       queues 1                         -                0',
      '',
    ].join('\n'));
    expect(formatNetworks([])).toBe('no networks you may use\n');
  });

  it('status prints the daemon\'s memory on one row, heap apart from the rest', () => {
    const text = formatStatus({
      version: '0.1.0', uptime_s: 3725, connections: 3,
      memory: { rss_kb: 62874, heap_used_kb: 9318, heap_total_kb: 12288, external_kb: 2150, array_buffers_kb: 205 },
    });
    const rows = text.split('\n');
    expect(rows).toContain('uptime       1h 2m 5s');
    expect(rows).toContain('memory       61.4 MB resident; V8 heap 9.1 MB used of 12.0 MB; external 2.1 MB (buffers 0.2 MB)');
    // Something that is not the daemon's memory object is shown as it came, not dropped.
    expect(formatStatus({ memory: { rss_kb: 'x' } })).toContain('memory  {"rss_kb":"x"}');
  });
});

describe('finding the emulator', () => {
  it('PATH search as execvp, with the shell\'s statuses', () => {
    expect(resolveExecutable('sh', '/nonexistent:/bin')).toBe('/bin/sh');
    expect(() => resolveExecutable('no-such-emulator-here', '/bin')).toThrow(/not found in PATH/);
    expect(() => resolveExecutable('/etc', undefined)).toThrow(/is a directory/);
    expect(() => resolveExecutable('/etc/passwd', undefined)).toThrow(/permission denied or not executable/);
  });
});
