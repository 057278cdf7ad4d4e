// The lease journal: what a restarted daemon reads back.
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { LeaseTable } from '../../src/daemon/leases.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'tapd-leases-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function open(t: LeaseTable, uid: number, i: number) {
  const r = t.reserve(uid, 'lan', `52:54:00:00:00:${i.toString(16).padStart(2, '0')}`);
  return t.activate(r, { pid: 1, bridge: 'br0', mtu: 1500, queues: 1, vnetHdr: false, ifindex: 100 + i, started: 'now', upRan: false });
}

it('a restarted daemon reads back exactly the live leases, with their latest state', () => {
  const t = new LeaseTable(dir);
  const a = open(t, 1000, 1);
  const b = open(t, 1000, 2);
  t.update({ ...b, upRan: true });
  t.end(a.id);
  const back = new LeaseTable(dir).loadRecorded();
  expect(back.map((l) => [l.id, l.upRan])).toEqual([[b.id, true]]);
});

it('ignores a last line cut short by a crash, and refuses damage elsewhere', () => {
  const t = new LeaseTable(dir);
  const a = open(t, 1000, 1);
  const file = path.join(dir, 'leases.journal');
  appendFileSync(file, '{"end":"' + a.id.slice(0, 5));
  expect(new LeaseTable(dir).loadRecorded().map((l) => l.id)).toEqual([a.id]);
  writeFileSync(file, 'garbage\n' + readFileSync(file, 'utf8'));
  expect(() => new LeaseTable(dir).loadRecorded()).toThrow(/leases\.journal:1 is not valid JSON/);
});

it('compacts the journal as leases come and go, keeping the live ones', () => {
  const t = new LeaseTable(dir);
  const keep = open(t, 1000, 0);
  for (let i = 1; i <= 200; i++) t.end(open(t, 1000, i).id);
  const lines = readFileSync(path.join(dir, 'leases.journal'), 'utf8').trim().split('\n');
  expect(lines.length).toBeLessThan(80);
  expect(new LeaseTable(dir).loadRecorded().map((l) => l.id)).toEqual([keep.id]);
});

it('counts reservations against quotas and MACs until cancelled or activated', () => {
  const t = new LeaseTable(dir);
  const r = t.reserve(1000, 'lan', '52:54:00:00:00:aa');
  expect(t.countFor(1000, 'lan')).toBe(1);
  expect(t.countFor(1000)).toBe(1);
  expect(t.countFor(1001)).toBe(0);
  expect(t.macInUse('52:54:00:00:00:aa')).toBe(true);
  t.cancel(r);
  expect(t.countFor(1000)).toBe(0);
  expect(t.macInUse('52:54:00:00:00:aa')).toBe(false);
});

it('its indexes answer as a scan of every live, pending and ending lease would, through update, end, retire and cancel', () => {
  const t = new LeaseTable(dir);
  const a = open(t, 1000, 1);
  const b = open(t, 1000, 2);
  const c = open(t, 2000, 3);
  const r = t.reserve(1000, 'wan', '52:54:00:00:00:09', 'tap', 'port-9');
  expect([t.countFor(1000), t.countFor(1000, 'lan'), t.countFor(1000, 'wan'), t.countFor(2000), t.countFor(3000)]).toEqual([3, 2, 1, 1, 0]);
  expect([t.macInUse(a.mac), t.macInUse(r.mac), t.portInUse('port-9'), t.nameInUse(r.ifname)]).toEqual([true, true, true, true]);
  // An update that moves the lease to another ifindex: the old index no longer finds it.
  t.update({ ...b, ifindex: 500 });
  expect([t.byIfindex(102), t.byIfindex(500)?.id, t.byIfindex(101)?.id]).toEqual([undefined, b.id, a.id]);
  // Ended: its quota slot, MAC and ifindex are free at once; its name only once retired.
  t.end(a.id);
  expect([t.countFor(1000, 'lan'), t.macInUse(a.mac), t.byIfindex(101), t.nameInUse(a.ifname)]).toEqual([1, false, undefined, true]);
  t.retired(a.id);
  expect(t.nameInUse(a.ifname)).toBe(false);
  t.cancel(r);
  expect([t.countFor(1000), t.countFor(1000, 'wan'), t.macInUse(r.mac), t.portInUse('port-9'), t.nameInUse(r.ifname)]).toEqual([1, 0, false, false, false]);
  expect([t.countFor(2000), t.byIfindex(103)?.id, t.size]).toEqual([1, c.id, 2]);
});
