// A small OVN deployment in network namespaces (needs root; Debian's openvswitch-switch,
// ovn-central, ovn-host, ethtool):
//
//   <c> "central"   bridge ul 198.19.0.1/24; ovsdb-server NB (unix) and SB (unix + ptcp:6642 on
//                   198.19.0.1), ovn-northd
//      | veth ul-a            | veth ul-b          (the underlay, MTU 9000)
//   <a> hypervisor a       <b> hypervisor b: each its own ovsdb-server (conf.db from
//                   vswitch.ovsschema), ovs-vswitchd on the userspace datapath (no kernel module
//                   here): br-phy (netdev) holds eth0 and 198.19.0.1x on its internal port, so
//                   Geneve leaves through it; br-int (netdev) for OVN; ovn-controller with
//                   system-id hv-a/hv-b, encap geneve on 198.19.0.1x, remote tcp:198.19.0.1:6642
//
// NB: logical switch ls0 (198.18.64.0/24) with ports lp-a (52:54:00:0a:00:0a 198.18.64.10) and
// lp-b (52:54:00:0a:00:0b 198.18.64.11), both on OVN's native DHCP (router 198.18.64.1).
//
// Every daemon runs in the foreground as our child (no --detach: a detached daemon is reparented
// to PID 1, which need not reap it), with its own run dir under one temp dir (OVS_RUNDIR,
// OVS_DBDIR, OVN_RUNDIR, --pidfile, --unixctl, --log-file), and is stopped by pid in stop().
//
// Found on this machine (kernel 6.18, OVS 3.1, OVN 23.03):
// - the veths' transmit checksum offload must be off (ethtool -K tx off): the userspace datapath
//   reads them with AF_PACKET and forwards CHECKSUM_PARTIAL packets with their checksums unfinished,
//   so TCP between the central and the hypervisors' br-phy never connects;
// - for the same reason a guest's NIC must not offload checksums (virtio-net-pci csum=off): frames
//   read from its TAP by AF_PACKET carry partial checksums and the far guest drops them. (With the
//   kernel datapath, i.e. openvswitch.ko on a real hypervisor, neither is needed.)
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Netns, tempDir, until } from './netns.js';

export const OVN_SUBNET = '198.18.64.0/24';
export const OVN_ROUTER = '198.18.64.1';
export const OVN_SWITCH = 'ls0';
export const OVN_PORTS = {
  a: { name: 'lp-a', mac: '52:54:00:0a:00:0a', ip: '198.18.64.10' },
  b: { name: 'lp-b', mac: '52:54:00:0a:00:0b', ip: '198.18.64.11' },
} as const;
const CENTRAL_IP = '198.19.0.1';
const VSWITCH_SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';
const NB_SCHEMA = '/usr/share/ovn/ovn-nb.ovsschema';
const SB_SCHEMA = '/usr/share/ovn/ovn-sb.ovsschema';

export interface Hypervisor {
  /** "a" or "b" */
  id: 'a' | 'b';
  /** OVN chassis name (Open_vSwitch external_ids:system-id). */
  chassis: string;
  ns: Netns;
  dir: string;
  /** This hypervisor's ovsdb-server socket: what tapd would be given. */
  dbSock: string;
  encapIp: string;
  vsctl(args: string[]): string;
  appctl(target: 'ovs-vswitchd' | 'ovn-controller', args: string[]): string;
}

export interface OvnLab {
  dir: string;
  central: Netns;
  nbSock: string;
  sbSock: string;
  hv: { a: Hypervisor; b: Hypervisor };
  nbctl(args: string[]): string;
  sbctl(args: string[]): string;
  /** ms each phase of the setup took (for the test's log, never asserted). */
  timings: Record<string, number>;
  /** The last lines of every daemon's log (for failure messages). */
  logs(lines?: number): string;
  /** The pids of every daemon we started (stop() ends them). */
  pids(): number[];
  /** Stops every daemon by pid, deletes the namespaces and the temp dir. Idempotent. */
  stop(): Promise<void>;
}

interface Daemon {
  name: string;
  proc: ChildProcess;
  log: string;
}

function must(cmd: string, args: string[], env?: Record<string, string>): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 90_000, env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr || r.stdout}`);
  return r.stdout;
}

export async function startOvnLab(prefix = 'ovn'): Promise<OvnLab> {
  const dir = tempDir(prefix);
  const daemons: Daemon[] = [];
  const namespaces: Netns[] = [];
  const timings: Record<string, number> = {};
  let t = performance.now();
  const phase = (name: string) => {
    const now = performance.now();
    timings[name] = Math.round(now - t);
    t = now;
  };
  let stopped = false;

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    // Controllers first (so nothing recreates what the switch drops), databases last.
    for (const d of [...daemons].reverse()) {
      if (d.proc.exitCode !== null || d.proc.signalCode !== null) continue;
      const gone = new Promise<void>((r) => d.proc.once('exit', () => r()));
      d.proc.kill('SIGTERM');
      const killer = setTimeout(() => d.proc.kill('SIGKILL'), 5_000);
      await gone;
      clearTimeout(killer);
    }
    for (const ns of namespaces) ns.destroy();
    rmSync(dir, { recursive: true, force: true });
  };

  /** Starts `cmd` in the foreground in `ns`; `ip netns exec` execs it, so the child's pid is the daemon's. */
  const daemon = (ns: Netns, name: string, runDir: string, cmd: string, args: string[]): void => {
    const log = path.join(runDir, `${name}.log`);
    const proc = spawn('ip', ['netns', 'exec', ns.name, cmd, ...args,
      `--pidfile=${path.join(runDir, `${name}.pid`)}`, `--log-file=${log}`, '--no-chdir'], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, OVS_RUNDIR: runDir, OVS_DBDIR: runDir, OVS_LOGDIR: runDir, OVN_RUNDIR: runDir, OVN_DBDIR: runDir, OVN_LOGDIR: runDir },
    });
    let err = '';
    proc.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    proc.once('exit', (code, sig) => {
      if (!stopped) writeFileSync(`${log}.exit`, `exited ${code ?? sig}\n${err}`);
    });
    daemons.push({ name, proc, log });
  };

  const waitSocket = async (p: string, what: string) => {
    if (!(await until(() => existsSync(p), 20_000, 20))) throw new Error(`${what} did not create ${p}\n${lab.logs()}`);
  };

  const lab: OvnLab = {
    dir,
    central: undefined as unknown as Netns,
    nbSock: path.join(dir, 'central', 'nb.sock'),
    sbSock: path.join(dir, 'central', 'sb.sock'),
    hv: {} as OvnLab['hv'],
    nbctl: (args) => must('ovn-nbctl', ['--timeout=60', `--db=unix:${lab.nbSock}`, ...args]),
    sbctl: (args) => must('ovn-sbctl', ['--timeout=60', `--db=unix:${lab.sbSock}`, ...args]),
    timings,
    logs(lines = 15) {
      return daemons.map((d) => {
        let text = '';
        try {
          text = readFileSync(d.log, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
          if (existsSync(`${d.log}.exit`)) text += `\n${readFileSync(`${d.log}.exit`, 'utf8')}`;
        } catch {
          text = '(no log)';
        }
        return `--- ${d.name} (pid ${d.proc.pid}):\n${text}`;
      }).join('\n');
    },
    pids: () => daemons.map((d) => d.proc.pid).filter((p): p is number => p !== undefined),
    stop,
  };

  try {
    // Underlay.
    const central = Netns.create(`${prefix}c`);
    namespaces.push(central);
    lab.central = central;
    central.run('ip', ['link', 'add', 'ul', 'mtu', '9000', 'type', 'bridge']);
    central.run('ip', ['link', 'set', 'ul', 'up']);
    central.run('ip', ['addr', 'add', `${CENTRAL_IP}/24`, 'dev', 'ul']);
    const hvNs: Record<'a' | 'b', Netns> = { a: Netns.create(`${prefix}a`), b: Netns.create(`${prefix}b`) };
    namespaces.push(hvNs.a, hvNs.b);
    for (const id of ['a', 'b'] as const) {
      // Made inside the central namespace, its peer sent to the hypervisor's: nothing in the root one.
      central.run('ip', ['link', 'add', `ul-${id}`, 'mtu', '9000', 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', '9000', 'netns', hvNs[id].name]);
      central.run('ip', ['link', 'set', `ul-${id}`, 'master', 'ul', 'up']);
      central.run('ethtool', ['-K', `ul-${id}`, 'tx', 'off']);
      hvNs[id].run('ip', ['link', 'set', 'eth0', 'up']);
      hvNs[id].run('ethtool', ['-K', 'eth0', 'tx', 'off']);
    }
    phase('underlay');

    // Central: NB and SB databases, northd.
    const cdir = path.join(dir, 'central');
    mkdirSync(cdir);
    must('ovsdb-tool', ['create', path.join(cdir, 'nb.db'), NB_SCHEMA]);
    must('ovsdb-tool', ['create', path.join(cdir, 'sb.db'), SB_SCHEMA]);
    daemon(central, 'ovsdb-server-nb', cdir, 'ovsdb-server', [path.join(cdir, 'nb.db'), `--remote=punix:${lab.nbSock}`, `--unixctl=${path.join(cdir, 'nb.ctl')}`]);
    daemon(central, 'ovsdb-server-sb', cdir, 'ovsdb-server', [path.join(cdir, 'sb.db'), `--remote=punix:${lab.sbSock}`, `--remote=ptcp:6642:${CENTRAL_IP}`, `--unixctl=${path.join(cdir, 'sb.ctl')}`]);
    await waitSocket(lab.nbSock, 'the NB ovsdb-server');
    await waitSocket(lab.sbSock, 'the SB ovsdb-server');
    daemon(central, 'ovn-northd', cdir, 'ovn-northd', [`--ovnnb-db=unix:${lab.nbSock}`, `--ovnsb-db=unix:${lab.sbSock}`, `--unixctl=${path.join(cdir, 'northd.ctl')}`]);
    phase('central');

    // Hypervisors.
    let n = 10;
    for (const id of ['a', 'b'] as const) {
      const ns = hvNs[id];
      const hdir = path.join(dir, `hv-${id}`);
      mkdirSync(hdir);
      const dbSock = path.join(hdir, 'db.sock');
      const encapIp = `198.19.0.${++n}`;
      const vsctl = (args: string[]) => must('ovs-vsctl', ['--timeout=60', `--db=unix:${dbSock}`, ...args]);
      must('ovsdb-tool', ['create', path.join(hdir, 'conf.db'), VSWITCH_SCHEMA]);
      daemon(ns, 'ovsdb-server', hdir, 'ovsdb-server', [path.join(hdir, 'conf.db'), `--remote=punix:${dbSock}`, `--unixctl=${path.join(hdir, 'ovsdb-server.ctl')}`]);
      await waitSocket(dbSock, `hv-${id}'s ovsdb-server`);
      vsctl(['--no-wait', 'init']);
      daemon(ns, 'ovs-vswitchd', hdir, 'ovs-vswitchd', [`unix:${dbSock}`, `--unixctl=${path.join(hdir, 'ovs-vswitchd.ctl')}`]);
      // Without --no-wait, ovs-vsctl waits for ovs-vswitchd to apply it.
      vsctl(['add-br', 'br-phy', '--', 'set', 'bridge', 'br-phy', 'datapath_type=netdev', '--', 'add-port', 'br-phy', 'eth0']);
      vsctl(['add-br', 'br-int', '--', 'set', 'bridge', 'br-int', 'datapath_type=netdev', 'fail-mode=secure', 'other-config:disable-in-band=true']);
      ns.run('ip', ['link', 'set', 'br-phy', 'mtu', '9000', 'up']);
      ns.run('ip', ['addr', 'add', `${encapIp}/24`, 'dev', 'br-phy']);
      vsctl(['set', 'open_vswitch', '.',
        `external_ids:system-id=hv-${id}`, `external_ids:hostname=hv-${id}`,
        `external_ids:ovn-remote=tcp:${CENTRAL_IP}:6642`, 'external_ids:ovn-encap-type=geneve',
        `external_ids:ovn-encap-ip=${encapIp}`, 'external_ids:ovn-bridge=br-int',
        'external_ids:ovn-bridge-datapath-type=netdev']);
      // ovn-controller 23.03 has no --unixctl: its socket is OVN_RUNDIR/ovn-controller.<pid>.ctl.
      daemon(ns, 'ovn-controller', hdir, 'ovn-controller', [`unix:${dbSock}`]);
      const hv: Hypervisor = {
        id, chassis: `hv-${id}`, ns, dir: hdir, dbSock, encapIp, vsctl,
        appctl(target, args) {
          const ctl = target === 'ovs-vswitchd' ? path.join(hdir, 'ovs-vswitchd.ctl') : path.join(hdir, `ovn-controller.${daemons.find((d) => d.log === path.join(hdir, 'ovn-controller.log'))?.proc.pid}.ctl`);
          return must('ovs-appctl', ['--timeout=30', '-t', ctl, ...args]);
        },
      };
      lab.hv[id] = hv;
    }
    phase('hypervisors');

    // The logical network.
    lab.nbctl(['ls-add', OVN_SWITCH]);
    for (const p of Object.values(OVN_PORTS)) {
      lab.nbctl(['lsp-add', OVN_SWITCH, p.name, '--', 'lsp-set-addresses', p.name, `${p.mac} ${p.ip}`]);
    }
    lab.nbctl(['dhcp-options-create', OVN_SUBNET]);
    const dhcp = lab.nbctl(['--bare', '--columns=_uuid', 'find', 'dhcp_options', `cidr="${OVN_SUBNET}"`]).trim();
    if (!/^[0-9a-f-]{36}$/.test(dhcp)) throw new Error(`no single DHCP_Options row for ${OVN_SUBNET}: ${dhcp}`);
    lab.nbctl(['dhcp-options-set-options', dhcp, 'lease_time=3600', `router=${OVN_ROUTER}`, `server_id=${OVN_ROUTER}`, 'server_mac=02:00:00:0a:00:01', 'mtu=1400']);
    for (const p of Object.values(OVN_PORTS)) lab.nbctl(['lsp-set-dhcpv4-options', p.name, dhcp]);

    // Both chassis registered, each with a Geneve tunnel to the other, and northd's flows on both.
    const ready = () => {
      const chassis = lab.sbctl(['--bare', '--columns=name', 'list', 'Chassis']).split(/\s+/).filter(Boolean).sort();
      if (chassis.join(' ') !== 'hv-a hv-b') return false;
      return (['a', 'b'] as const).every((id) => lab.hv[id].vsctl(['list-ports', 'br-int']).includes('ovn-'));
    };
    if (!(await until(ready, 60_000, 200))) throw new Error(`the chassis did not come up with tunnels:\n${lab.sbctl(['show'])}\n${lab.logs()}`);
    lab.nbctl(['--wait=hv', 'sync']);
    phase('chassis');
    return lab;
  } catch (err) {
    await stop();
    throw err;
  }
}
