// End-to-end check of the test guest and the sandbox LAN, without tapd: a TAP made by root in the
// sandbox's host namespace (bridged to its uplink), QEMU run as nobody (65534) opening it by name.
// The guest must get a DHCP lease from the sandbox's dnsmasq and fetch the LAN's index.html.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureGuest, guestArgs, runGuest, type GuestRun } from '../helpers/guest.js';
import { LAN_INDEX_FIRST_LINE, LAN_ROUTER, startLan, type Lan } from '../helpers/lan.js';

const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

function explain(run: GuestRun, lan: Lan): string {
  return `serial:\n${run.serial}\n--- dnsmasq log:\n${lan.dnsmasqLog()}`;
}

function ipInDhcpRange(ip: string): boolean {
  const m = /^198\.18\.0\.(\d+)$/.exec(ip);
  return !!m && Number(m[1]) >= 100 && Number(m[1]) <= 199;
}

describe.skipIf(!isRoot)('test guest on the sandbox LAN (bridged TAP, unprivileged QEMU)', { timeout: 240_000 }, () => {
  let lan: Lan | undefined;

  beforeAll(async () => {
    ensureGuest();
    lan = await startLan(`tg${process.pid}`, { bridge: true });
  }, 600_000);

  afterAll(async () => {
    await lan?.stop();
  });

  async function boot(tap: string, mac: string, queues: number): Promise<GuestRun> {
    if (!lan) throw new Error('no sandbox LAN');
    await lan.addTap(tap, NOBODY, { multiQueue: queues > 1 });
    const qemu = [
      'qemu-system-x86_64',
      ...guestArgs({ model: 'virtio-net-pci', mac, queues }),
      '-netdev',
      `tap,id=n0,ifname=${tap},script=no,downscript=no${queues > 1 ? `,queues=${queues}` : ''}`,
    ];
    const run = await runGuest(lan.asUser(NOBODY, NOBODY, qemu), { timeoutMs: 180_000 });
    await lan.sh('ip -n "$1" link del "$2"', lan.hostNs, tap);
    return run;
  }

  it('virtio-net-pci gets a lease and fetches from the LAN', async () => {
    const mac = '52:54:00:12:34:56';
    const run = await boot('tap0', mac, 1);
    const r = run.result;
    const why = explain(run, lan as Lan);
    expect(run.timedOut, why).toBe(false);
    expect(r.nic, why).toMatchObject({ mac, driver: 'virtio_net' });
    expect(r.noLease, why).toBe(false);
    expect(r.lease, why).toBeDefined();
    expect(ipInDhcpRange(r.lease?.ip ?? ''), why).toBe(true);
    expect(r.lease?.prefix, why).toBe(24);
    expect(r.lease?.router, why).toBe(LAN_ROUTER);
    expect(r.fetch, why).toEqual({ ok: true, line: LAN_INDEX_FIRST_LINE });
    expect(r.done, why).toBe(true);
    expect(run.exitCode, why).toBe(0); // the guest powered off
    expect(lan?.leases()).toContain(`${mac} ${r.lease?.ip}`);
    console.log(`virtio-net-pci: NIC at ${run.at.NIC} ms, LEASE at ${run.at.LEASE} ms, DONE at ${run.at.DONE} ms`);
  });

  it('virtio-net-pci on a 4-queue multiqueue TAP', async () => {
    const mac = '52:54:00:12:34:57';
    const run = await boot('tap1', mac, 4);
    const r = run.result;
    const why = explain(run, lan as Lan);
    expect(r.nic, why).toMatchObject({ mac, driver: 'virtio_net' });
    expect(r.queues?.mq, why).toBe(true); // VIRTIO_NET_F_MQ negotiated (1 vCPU: 1 pair in use)
    expect(ipInDhcpRange(r.lease?.ip ?? ''), why).toBe(true);
    expect(r.fetch, why).toEqual({ ok: true, line: LAN_INDEX_FIRST_LINE });
    expect(r.done, why).toBe(true);
    console.log(`virtio-net-pci mq=4: LEASE at ${run.at.LEASE} ms`);
  });
});
