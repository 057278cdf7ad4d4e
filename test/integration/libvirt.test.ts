// libvirt session mode for real (issue 12): Debian's libvirtd, started by hand (no systemd) as an
// unprivileged user in the sandbox LAN's host namespace, with `bridge_helper` in that user's
// $XDG_CONFIG_HOME/libvirt/qemu.conf pointing at native/build/tapd-bridge-helper. `virsh start`
// of a domain with <interface type='bridge'><source bridge='br0'/> gets its TAP from a real
// tapd; the guest (test/guest, direct kernel boot) runs DHCP over it. A user the policy denies
// sees tapd's reason in virsh's error.
//
// Users: nobody (permitted on lan) and tapdlv, uid 64123, who exists only in libnss-extrausers
// files inside a private mount namespace of each of its commands (libvirtd insists on a passwd
// entry; nothing global changes; see test/integration/nss.test.ts). Needs root, a build, the
// libvirt packages of scripts/lib/deps.sh. TCG: the guest takes several seconds to boot.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureGuest, parseSerial } from '../helpers/guest.js';
import { LAN_INDEX_FIRST_LINE, LAN_ROUTER, startLan, type Lan } from '../helpers/lan.js';
import { DIST, NOBODY, Netns, ROOT, asUser, startTapd, tempDir, until, type DaemonHandle } from '../helpers/netns.js';

const HELPER = path.join(ROOT, 'native/build/tapd-bridge-helper');
const TAPCTL = path.join(DIST, 'cli/tapctl.js');
const LIBVIRTD = '/usr/sbin/libvirtd';
const VIRTLOGD = '/usr/sbin/virtlogd';
const VIRSH = '/usr/bin/virsh';
const QEMU_DRIVER = '/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so';
const NSS_EXTRAUSERS = '/usr/lib/libnss_extrausers.so.2';
const URI = 'qemu:///session';

const CONFIG = `
network lan bridge br0
permit @nogroup on lan leases 2
`;

interface Account { name: string; uid: number; gid: number; extrausers: boolean }
const ALLOWED: Account = { name: 'nobody', uid: NOBODY, gid: NOBODY, extrausers: false };
const DENIED: Account = { name: 'tapdlv', uid: 64123, gid: 64123, extrausers: true };

/** Everything this file needs, checked up front: a missing piece fails the file, saying which. */
function prerequisites(): void {
  if (process.getuid?.() !== 0) throw new Error('libvirt.test.ts needs root (namespaces, TAPs, other users): run it through scripts/test.sh');
  const missing = [HELPER, TAPCTL, LIBVIRTD, VIRTLOGD, VIRSH, QEMU_DRIVER, NSS_EXTRAUSERS, '/usr/bin/qemu-system-x86_64'].filter((p) => !existsSync(p));
  if (missing.length) {
    throw new Error(`missing ${missing.join(', ')}: run npm run build, and scripts/test.sh (deps.sh installs libvirt-daemon, libvirt-daemon-driver-qemu, libvirt-clients, libnss-extrausers)`);
  }
}

let dir: string;
let lan: Lan | undefined;
let ns: Netns;
let daemon: DaemonHandle | undefined;
const sessions: Session[] = [];

/** Pids of processes whose command line mentions `marker` (QEMU's names its files in our dir). */
function pidsMentioning(marker: string): number[] {
  const found: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(marker)) found.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

const alive = (pid: number) => existsSync(`/proc/${pid}`) && !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));

/**
 * One user's libvirt session: its own HOME and XDG dirs under `dir`, virtlogd and libvirtd
 * started by hand in the namespace as that user. Only libvirtd gets TAPD_SOCKET: the helper can
 * find the test tapd only through libvirtd's environment.
 */
class Session {
  readonly home: string;
  readonly env: Record<string, string>;
  private daemons: Array<{ name: string; proc: ChildProcess; exited: Promise<void> }> = [];
  /** QEMU pids seen (from libvirt's pid files), killed in stop() if still there. */
  private qemuPids = new Set<number>();

  constructor(readonly acct: Account, private readonly tapdSocket: string) {
    this.home = path.join(dir, `home-${acct.name}`);
    const xdg = { XDG_CONFIG_HOME: `${this.home}/.config`, XDG_CACHE_HOME: `${this.home}/.cache`, XDG_DATA_HOME: `${this.home}/.local/share`, XDG_RUNTIME_DIR: `${this.home}/run` };
    for (const d of Object.values(xdg)) mkdirSync(d, { recursive: true, mode: 0o700 });
    mkdirSync(`${xdg.XDG_CONFIG_HOME}/libvirt`, { mode: 0o700 });
    writeFileSync(`${xdg.XDG_CONFIG_HOME}/libvirt/qemu.conf`, `bridge_helper = "${HELPER}"\n`);
    spawnSync('chown', ['-R', `${acct.uid}:${acct.gid}`, this.home]);
    chmodSync(this.home, 0o700);
    // A clean environment, not ours: nothing of the test runner's leaks into libvirt.
    // LIBVIRT_AUTOSTART=0: virsh must never spawn a session daemon of its own.
    this.env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: this.home, USER: acct.name, LOGNAME: acct.name, LANG: 'C', LIBVIRT_AUTOSTART: '0', ...xdg };
  }

  get runDir(): string {
    return this.env.XDG_RUNTIME_DIR!;
  }

  /** argv that runs `argv` in the namespace as this user (tapdlv: with its extrausers entry). */
  argv(argv: string[]): string[] {
    const become = [...asUser({ uid: this.acct.uid, gid: this.acct.gid }), ...argv];
    if (!this.acct.extrausers) return ['ip', 'netns', 'exec', ns.name, ...become];
    const setup = [
      'set -e',
      `mount --bind ${dir}/nss/nsswitch.conf /etc/nsswitch.conf`,
      'mkdir -p /var/lib/extrausers',
      'mount -t tmpfs -o mode=0755 tmpfs /var/lib/extrausers',
      `cp ${dir}/nss/passwd ${dir}/nss/group /var/lib/extrausers/`,
      // exec: the pid spawn() returns stays the daemon's.
      'exec "$@"',
    ].join('\n');
    return ['ip', 'netns', 'exec', ns.name, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', setup, 'sh', ...become];
  }

  private async daemon(name: string, bin: string, socket: string, env: Record<string, string>): Promise<void> {
    // Output to a file, not a pipe: nothing can block on a full pipe while a spawnSync waits.
    const log = path.join(dir, `${name}-${this.acct.name}.log`);
    const fd = openSync(log, 'a');
    const [cmd, ...args] = this.argv([bin]);
    const proc = spawn(cmd!, args, { stdio: ['ignore', fd, fd], env });
    closeSync(fd);
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    this.daemons.push({ name, proc, exited });
    const up = await until(() => existsSync(socket) || proc.exitCode !== null, 30_000);
    if (!up || proc.exitCode !== null) throw new Error(`${name} as ${this.acct.name} did not start (no ${socket}):\n${readFileSync(log, 'utf8')}`);
    // `ip netns exec`, unshare, sh and setpriv all exec: the child's pid is the daemon's.
    expect(readFileSync(`/proc/${proc.pid}/comm`, 'utf8').trim()).toBe(name);
  }

  /** virtlogd first, so libvirtd never spawns (daemonizes) one we could not stop by pid. */
  async start(): Promise<void> {
    await this.daemon('virtlogd', VIRTLOGD, `${this.runDir}/libvirt/virtlogd-sock`, this.env);
    await this.daemon('libvirtd', LIBVIRTD, `${this.runDir}/libvirt/libvirt-sock`, { ...this.env, TAPD_SOCKET: this.tapdSocket });
  }

  get libvirtdPid(): number {
    return this.daemons.find((d) => d.name === 'libvirtd')!.proc.pid!;
  }

  /** virsh -c qemu:///session as this user (its environment has no TAPD_SOCKET). */
  async virsh(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
    const [cmd, ...rest] = this.argv([VIRSH, '-c', URI, ...args]);
    const child = spawn(cmd!, rest, { stdio: ['ignore', 'pipe', 'pipe'], env: this.env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    const status = await new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    clearTimeout(timer);
    this.noteQemu();
    return { status, stdout, stderr };
  }

  /** Records the pids in libvirt's pid files for running domains ($XDG_RUNTIME_DIR/libvirt/qemu/run). */
  noteQemu(): void {
    const run = `${this.runDir}/libvirt/qemu/run`;
    if (!existsSync(run)) return;
    for (const f of readdirSync(run)) {
      if (!f.endsWith('.pid') || f === 'driver.pid') continue;
      const pid = Number(readFileSync(path.join(run, f), 'utf8').trim());
      if (pid > 0) this.qemuPids.add(pid);
    }
  }

  /** A domain: the test guest by direct kernel boot, one bridge NIC on `bridge`, serial to a file. */
  domainXml(name: string, bridge: string): string {
    const img = ensureGuest();
    return `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${img.kernel}</kernel>
    <initrd>${img.initrd}</initrd>
    <cmdline>${img.cmdline} tapd.hold=600</cmdline>
  </os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <interface type='bridge'>
      <source bridge='${bridge}'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='${this.serialPath(name)}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
`;
  }

  serialPath(name: string): string {
    return `${this.home}/${name}.serial`;
  }

  serial(name: string): string {
    const p = this.serialPath(name);
    return existsSync(p) ? readFileSync(p, 'utf8') : '';
  }

  /** Defines `name` from domainXml (the file is written into this user's HOME). */
  async define(name: string, bridge: string): Promise<void> {
    const file = `${this.home}/${name}.xml`;
    writeFileSync(file, this.domainXml(name, bridge), { mode: 0o644 });
    const r = await this.virsh('define', file);
    if (r.status !== 0) throw new Error(`virsh define ${name} as ${this.acct.name} failed: ${r.stderr}`);
  }

  /** Every QEMU it ever had goes (SIGKILL, by pid), then libvirtd, then virtlogd (SIGTERM). */
  async stop(): Promise<void> {
    this.noteQemu();
    for (const pid of this.qemuPids) {
      if (alive(pid) && readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('qemu-system')) process.kill(pid, 'SIGKILL');
    }
    for (const d of [...this.daemons].reverse()) {
      if (d.proc.exitCode === null && d.proc.signalCode === null) d.proc.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const done = await Promise.race([d.exited.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 15_000)))]);
      clearTimeout(timer);
      if (!done) {
        d.proc.kill('SIGKILL');
        await d.exited;
      }
    }
  }
}

beforeAll(async () => {
  prerequisites();
  ensureGuest();
  dir = tempDir('libvirt');
  mkdirSync(`${dir}/nss`, { mode: 0o755 });
  writeFileSync(`${dir}/nss/nsswitch.conf`, 'passwd: files extrausers\ngroup: files extrausers\nshadow: files\n');
  writeFileSync(`${dir}/nss/passwd`, `${DENIED.name}:x:${DENIED.uid}:${DENIED.gid}:tapd libvirt test:${dir}/home-${DENIED.name}:/bin/sh\n`);
  writeFileSync(`${dir}/nss/group`, `${DENIED.name}:x:${DENIED.gid}:\n`);
  // The guest on br0 gets its address from the sandbox LAN's dnsmasq through the uplink.
  lan = await startLan(`tapdt-lv${process.pid}`, { bridge: true });
  ns = Netns.attach(lan.hostNs);
  daemon = await startTapd(ns, CONFIG);
}, 300_000);

afterAll(async () => {
  for (const s of sessions) await s.stop();
  await daemon?.stop();
  await lan?.stop();
  // Nothing of ours may outlive the file: a process still naming our dir is a leak (and is killed).
  const left = dir ? pidsMentioning(dir) : [];
  for (const pid of left) process.kill(pid, 'SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
  if (left.length) throw new Error(`processes left behind after stopping libvirt: ${left.join(', ')}`);
}, 120_000);

async function session(acct: Account): Promise<Session> {
  const s = new Session(acct, daemon!.socket);
  sessions.push(s);
  await s.start();
  return s;
}

interface ListedLease { id: string; ifname: string; network: string; bridge: string | null; mac: string | null; owner_uid: number; pid: number }

/** `tapctl list --json` as `acct`: that user's own leases, as the user sees them. */
function tapctlList(acct: Account): ListedLease[] {
  const r = ns.exec('node', [TAPCTL, '--socket', daemon!.socket, 'list', '--json'], { uid: acct.uid, gid: acct.gid });
  if (r.status !== 0) throw new Error(`tapctl list failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as ListedLease[];
}

const taps = () => ns.links().filter((l) => l.linkinfo?.info_kind === 'tun');

describe('libvirt session mode (qemu:///session) with bridge_helper = tapd-bridge-helper', { timeout: 300_000 }, () => {
  it('virsh start: the guest\'s NIC gets a TAP on br0 from tapd (lease for nobody on lan) and DHCP over it; virsh destroy ends the lease', async () => {
    const s = await session(ALLOWED);
    await s.define('tapdt-ok', 'br0');
    const started = await s.virsh('start', 'tapdt-ok');
    expect(started.status, `${started.stdout}${started.stderr}\n--- tapd:\n${daemon!.log()}`).toBe(0);

    // libvirt's view: the NIC, its TAP and the MAC libvirt generated for the guest.
    const iflist = await s.virsh('domiflist', 'tapdt-ok');
    const row = /^\s*(\S+)\s+bridge\s+br0\s+virtio\s+([0-9a-f:]{17})\s*$/m.exec(iflist.stdout);
    expect(row, iflist.stdout + iflist.stderr).not.toBeNull();
    const [, ifname, guestMac] = row!;

    // tapd's view, asked as the user: one lease on lan, the helper's parent (libvirtd) as its process.
    const leases = tapctlList(ALLOWED);
    expect(leases).toEqual([expect.objectContaining({ ifname, network: 'lan', bridge: 'br0', owner_uid: NOBODY, pid: s.libvirtdPid })]);
    const lease = leases[0]!;
    // QEMU never tells the helper the guest's MAC, so tapd does not claim one.
    expect(lease.mac).toBeNull();
    const link = ns.link(ifname!);
    expect(link?.master).toBe('br0');
    expect(link?.linkinfo?.info_kind).toBe('tun');

    // The guest: its NIC has libvirt's MAC, DHCP over the TAP gives it a LAN address, and the page comes.
    await until(() => /TAPD-GUEST (LEASE|NOLEASE|NONIC)/.test(s.serial('tapdt-ok')), 180_000, 200);
    await until(() => /TAPD-GUEST FETCH/.test(s.serial('tapdt-ok')), 30_000, 200);
    const guest = parseSerial(s.serial('tapdt-ok'));
    const why = `${s.serial('tapdt-ok')}\n--- dnsmasq:\n${lan!.dnsmasqLog()}`;
    expect(guest.nic, why).toMatchObject({ mac: guestMac, driver: 'virtio_net' });
    expect(guest.lease?.ip, why).toMatch(/^198\.18\.0\.1\d\d$/);
    expect(guest.lease?.router, why).toBe(LAN_ROUTER);
    expect(guest.fetch, why).toEqual({ ok: true, line: LAN_INDEX_FIRST_LINE });
    expect(lan!.leases(), why).toContain(`${guestMac} ${guest.lease!.ip}`);

    // Stopping the domain ends the lease (QEMU held the last fd) and the TAP goes.
    const destroyed = await s.virsh('destroy', 'tapdt-ok');
    expect(destroyed.status, destroyed.stderr).toBe(0);
    await daemon!.waitFor('lease_end', { lease: lease.id }, 30_000);
    expect(await until(() => tapctlList(ALLOWED).length === 0 && !ns.link(ifname!), 10_000)).toBe(true);
    expect(taps()).toEqual([]);
  });

  it('a user the policy denies: virsh start fails with tapd\'s reason in its error; no TAP, no QEMU', async () => {
    const s = await session(DENIED);
    await s.define('tapdt-denied', 'br0');
    const from = daemon!.events().length;
    const started = await s.virsh('start', 'tapdt-denied');
    expect(started.status).toBe(1);
    // libvirt quotes the helper's stderr line: tapd's own words, after the bridge name.
    expect(started.stderr).toContain('tapd-bridge-helper: no TAP on br0: no rule permits you on this network (default deny)');
    expect(started.stderr).toMatch(/^error: Failed to start domain 'tapdt-denied'$/m);
    const refused = daemon!.events().slice(from).filter((e) => e.event === 'request_refused');
    expect(refused).toEqual([expect.objectContaining({ op: 'open', peer_uid: DENIED.uid, result: 'denied' })]);
    expect(taps()).toEqual([]);
    const state = await s.virsh('domstate', 'tapdt-denied');
    expect(state.stdout.trim()).toBe('shut off');
    expect(pidsMentioning(s.home)).toEqual([]);
  });
});
