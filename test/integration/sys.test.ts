// The kernel layer, for real: TAPs, bridges and fd passing inside namespaces we create.
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { IfName, ifNameProblem } from '../../src/sys/ifname.js';
import { Mac } from '../../src/sys/mac.js';
import { captureOne, NOBODY, Netns, ROOT, tempDir, until } from '../helpers/netns.js';

const SCENARIOS = path.join(ROOT, 'test/fixtures/sys-scenarios.mjs');

const running = new Set<ChildProcess>();

/** A scenario process: read its JSON lines as they come, poke it to go on. */
class Scenario {
  readonly proc: ChildProcess;
  private out = '';
  private err = '';
  private taken = 0;

  constructor(ns: Netns, name: string, args: string[] = []) {
    this.proc = spawn('ip', ['netns', 'exec', ns.name, 'node', SCENARIOS, name, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    running.add(this.proc);
    this.proc.once('exit', () => running.delete(this.proc));
    this.proc.stdout!.on('data', (d: Buffer) => (this.out += d.toString()));
    this.proc.stderr!.on('data', (d: Buffer) => (this.err += d.toString()));
  }

  async next(): Promise<Record<string, unknown>> {
    const ok = await until(() => this.out.split('\n').length - 1 > this.taken || this.proc.exitCode !== null, 20_000);
    const lines = this.out.split('\n');
    if (!ok || lines.length - 1 <= this.taken) throw new Error(`scenario gave no output: ${this.err}`);
    return JSON.parse(lines[this.taken++]!) as Record<string, unknown>;
  }

  go(): void {
    this.proc.stdin!.write('\n');
  }

  async done(): Promise<number | null> {
    if (this.proc.exitCode === null) await new Promise((r) => this.proc.once('exit', r));
    return this.proc.exitCode;
  }
}

describe('interface names', () => {
  it.each([
    ['a', true], ['tap0', true], ['br-lan.10_x', true], ['a'.repeat(15), true],
    ['a'.repeat(16), false], ['', false], ['.', false], ['..', false], ['ta p', false], ['tap/0', false],
    ['tap%d', false], ['tap\0', false], ['tapé', false], ['br0\n', false], ['名前', false],
  ])('%j valid=%s', (name, valid) => {
    expect(ifNameProblem(name) === undefined).toBe(valid);
    if (valid) expect(IfName.parse(name).value).toBe(name);
    else expect(() => IfName.parse(name)).toThrow(/interface name/);
  });

  it('counts bytes, not characters: 8 two-byte letters are 16 bytes', () => {
    expect(ifNameProblem('é'.repeat(8))).toMatch(/longer than 15 bytes/);
  });

  it('templates need exactly one %d and the same character rules', () => {
    expect(IfName.parseTemplate('tap%d').value).toBe('tap%d');
    expect(() => IfName.parseTemplate('tap')).toThrow(/%d/);
    expect(() => IfName.parseTemplate('tap%d%d')).toThrow(/%d/);
    expect(() => IfName.parseTemplate('t/%d')).toThrow();
    expect(() => IfName.parseTemplate('a'.repeat(14) + '%d')).toThrow(/15 bytes/);
  });
});

describe('MAC addresses', () => {
  it('parses, classifies and derives the host side', () => {
    const m = Mac.parse('52:54:00:AB:cd:01');
    expect(m.toString()).toBe('52:54:00:ab:cd:01');
    expect(m.isMulticast).toBe(false);
    expect(Mac.parse('01:00:5e:00:00:01').isMulticast).toBe(true);
    expect(Mac.parse('00:00:00:00:00:00').isZero).toBe(true);
    expect(m.hostSide().toString()).toBe('fe:54:00:ab:cd:01');
    for (const bad of ['52:54:00:ab:cd', '52-54-00-ab-cd-01', '52:54:00:ab:cd:0g', '', '52:54:00:ab:cd:01:02']) {
      expect(() => Mac.parse(bad)).toThrow(/MAC address/);
    }
  });
});

describe('kernel layer in a namespace', () => {
  let ns: Netns;
  let peer: Netns;

  // A failed test can leave its scenario waiting for a go: end it here.
  afterEach(async () => {
    for (const p of running) {
      p.kill('SIGKILL');
      await new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r(null) : p.once('exit', r)));
    }
  });

  beforeAll(() => {
    ns = Netns.create('sys');
    peer = Netns.create('peer');
  });
  afterAll(() => {
    ns?.destroy();
    peer?.destroy();
  });

  it('creates TAPs from a template, by name, with vnet_hdr and 4 queues; EBUSY on an existing name; gone on last close', async () => {
    const s = new Scenario(ns, 'create-taps');
    interface Made { name: string; fds: number; tun: Array<{ name: string; flags: number }>; cloexec: number[] }
    const r = (await s.next()) as unknown as { template: Made; explicit: Made; mq: Made; busy: { errno: string; message: string } };
    expect(r.template.name).toMatch(/^tap\d+$/);
    expect(r.explicit.name).toBe('tapexplicit0');
    expect(r.mq.fds).toBe(4);
    for (const t of [r.template, r.explicit, r.mq]) {
      for (const info of t.tun) expect(info.name).toBe(t.name);
      expect(t.cloexec.every((f) => f === 1)).toBe(true);
    }
    // TUNGETIFF flags: IFF_TAP|IFF_NO_PI always; VNET_HDR and MULTI_QUEUE only where asked.
    expect(r.template.tun[0]!.flags & 0x1002).toBe(0x1002);
    expect(r.template.tun[0]!.flags & 0x4000).toBe(0);
    expect(r.explicit.tun[0]!.flags & 0x4000).toBe(0x4000);
    expect(r.mq.tun[0]!.flags & 0x100).toBe(0x100);
    expect(r.busy.errno).toBe('EBUSY');
    expect(r.busy.message).toBe('create TAP tapexplicit0: EBUSY (device or resource busy)');
    // What `ip` sees.
    const links = ns.links();
    const mq = links.find((l) => l.ifname === 'tapmq0')!;
    expect(mq.linkinfo?.info_kind).toBe('tun');
    expect(mq.linkinfo?.info_data).toMatchObject({ type: 'tap', pi: false, multi_queue: true, persist: false });
    expect(links.find((l) => l.ifname === 'tapexplicit0')!.linkinfo?.info_data).toMatchObject({ vnet_hdr: true, multi_queue: false });
    s.go();
    await s.next();
    // The kernel unregisters the device shortly after the last close.
    const taps = () => ns.links().map((l) => l.ifname).filter((n) => n.startsWith('tap'));
    await until(() => taps().length === 0, 5000, 50);
    expect(taps()).toEqual([]);
    s.go();
    expect(await s.done()).toBe(0);
  });

  it('creates a bridge, attaches with the bridge MTU and an 0xFE host-side MAC, detaches, deletes', async () => {
    ns.run('ip', ['link', 'add', 'vlow0', 'address', '02:00:00:00:00:10', 'type', 'veth', 'peer', 'name', 'vlow1']);
    const s = new Scenario(ns, 'bridge', ['brtest0', 'vlow0']);
    const r = await s.next();
    expect(r).toMatchObject({ isBridge: true, loIsBridge: false, missingIsBridge: false, missingIndex: 0, brIndexMatches: true, tapMtu: 1400, tapMac: 'fe:00:00:00:00:01' });
    // The bridge took its port's address, and a TAP with a lower guest MAC did not change it.
    expect(r.macBefore).toBe('02:00:00:00:00:10');
    expect(r.macAfter).toBe(r.macBefore);
    expect(ns.link(r.tap as string)!.master).toBe('brtest0');
    s.go();
    await s.next();
    expect(ns.link(r.tap as string)!.master).toBeUndefined();
    s.go();
    expect(await s.next()).toMatchObject({ deleted: true, exists: false });
    expect(await s.done()).toBe(0);
    expect(ns.link('brtest0')).toBeUndefined();
    ns.run('ip', ['link', 'del', 'vlow0']);
  });

  it('passes a TAP fd to a uid 65534 process that could not have made it; SO_PEERCRED names that process', async () => {
    const dir = tempDir('pass');
    const s = new Scenario(ns, 'pass-fd', [path.join(dir, 's.sock'), String(NOBODY)]);
    const next = s.next().finally(() => rmSync(dir, { recursive: true, force: true }));
    const r = (await next) as {
      cred: { uid: number; gid: number; pid: number }; groups: number[]; childPid: number; tapName: string; code: number;
      child: { uid: number; bytes: number; fds: number; truncated: boolean; info: { name: string }; cloexec: number; own: { errno: string } };
    };
    expect(r.code).toBe(0);
    expect(r.cred.uid).toBe(NOBODY);
    expect(r.cred.gid).toBe(NOBODY);
    expect(r.groups).toEqual([]);
    // setpriv execs node, so the connecting process is the child we spawned.
    expect(r.cred.pid).toBe(r.childPid);
    expect(r.child).toMatchObject({ uid: NOBODY, bytes: 1, fds: 1, truncated: false, cloexec: 1 });
    expect(r.child.info.name).toBe(r.tapName);
    // Refused either at open() (/dev/net/tun is 0600 on some systems) or at TUNSETIFF (EPERM).
    expect(['EPERM', 'EACCES']).toContain(r.child.own.errno);
  });

  it('keeps only the fds it asked for and reports MSG_CTRUNC', async () => {
    const s = new Scenario(ns, 'extra-fds');
    expect(await s.next()).toEqual({ fds: 1, truncated: true });
  });

  it('moves frames both ways between the TAP fd and a veth peer across the bridge', async () => {
    ns.run('ip', ['link', 'add', 'brio0', 'type', 'bridge']);
    ns.run('ip', ['link', 'add', 'vio0', 'type', 'veth', 'peer', 'name', 'vio1', 'netns', peer.name]);
    ns.run('ip', ['link', 'set', 'vio0', 'master', 'brio0', 'up']);
    ns.run('ip', ['link', 'set', 'brio0', 'up']);
    peer.run('ip', ['addr', 'add', '198.18.7.2/24', 'dev', 'vio1']);
    peer.run('ip', ['link', 'set', 'vio1', 'up']);
    const s = new Scenario(ns, 'frame-io', ['brio0']);
    await s.next();
    const capture = await captureOne(peer, 'vio1');
    s.go();
    await s.next();
    const seen = await capture.seen();
    expect(seen).toContain('52:54:00:00:00:42 > ff:ff:ff:ff:ff:ff, ethertype Unknown (0x88b5)');
    expect(seen).toContain('tapd-frame-out');
    // The other way: a UDP broadcast from the peer floods across the bridge to the TAP.
    const send = "const s=require('dgram').createSocket('udp4');s.bind(()=>{s.setBroadcast(true);" +
      "s.send('tapd-frame-in',9,'198.18.7.255',()=>s.close())})";
    expect(peer.exec('node', ['-e', send]).status).toBe(0);
    expect(await s.next()).toEqual({ received: true });
    await s.done();
    ns.run('ip', ['link', 'del', 'vio0']);
    ns.run('ip', ['link', 'del', 'brio0']);
  });
});
