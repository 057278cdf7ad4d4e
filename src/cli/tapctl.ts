#!/usr/bin/env node
// tapctl: asks tapd for TAP devices and starts QEMU (or any command) with them; lists and checks
// leases. Runs as the user; under sudo it asks on the user's behalf and drops to the user before
// starting anything. docs/launching.md is the guide.
import { accessSync, constants as fsConstants } from 'node:fs';
import { Command, Option, type OptionValues } from 'commander';
import { DEFAULT_SOCKET, openTapSync, requestSync } from '../client/client.js';
import type { LeaseInfo } from '../protocol/messages.js';
import * as sys from '../sys/index.js';
import { VERSION } from '../version.js';
import { EXIT, EXIT_CODES_HELP, errorLine, exitCodeFor } from './exit-codes.js';
import { formatLeases, formatStatus } from './format.js';
import { closeOnExecAll } from './fd-hygiene.js';
import { launch } from './launch.js';
import { LaunchError } from './launch-error.js';
import { getpwuid } from '../common/accounts.js';
import { becomeUser, sudoUser, type SudoUser } from './privileges.js';
import {
  DEFAULT_MODEL, DEFAULT_NETWORK, assignChildFds, knownModels, openRequest, parseId, parseMac, parseModel,
  parseIfaceId, parseMtu, parseNetwork, parseNicSpec, parseQueues, qemuArgv, resolveNics, runArgv, userNetArgs,
  type Granted, type Nic, type NicOptions,
} from './qemu-args.js';
import { UsageError } from './usage-error.js';

const DEFAULT_QEMU = 'qemu-system-x86_64';

interface TapFlags extends OptionValues {
  network?: string;
  model?: string;
  mac?: string;
  mtu?: string;
  queues?: string;
  vhost?: boolean;
  vnetHdr?: boolean;
  id?: string;
  port?: string;
  nic: string[];
  verbose?: boolean;
}

interface QemuFlags extends TapFlags {
  qemu: string;
  userNet?: boolean;
  redir: string[];
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function socketOf(cmd: Command): string {
  return cmd.optsWithGlobals<{ socket: string }>().socket;
}

/** The NIC the plain flags describe. */
function primaryNic(o: TapFlags): NicOptions {
  const nic: NicOptions = {};
  if (o.network !== undefined) nic.network = parseNetwork(o.network);
  if (o.model !== undefined) nic.model = parseModel(o.model);
  if (o.mac !== undefined) nic.mac = parseMac(o.mac);
  if (o.mtu !== undefined) nic.mtu = parseMtu(o.mtu);
  if (o.queues !== undefined) nic.queues = parseQueues(o.queues);
  if (o.vhost !== undefined) nic.vhost = o.vhost;
  if (o.vnetHdr !== undefined) nic.vnetHdr = o.vnetHdr;
  if (o.id !== undefined) nic.id = parseId(o.id);
  if (o.port !== undefined) nic.port = parseIfaceId(o.port);
  return nic;
}

function defaultNetwork(): string {
  return process.env.TAPD_NETWORK || DEFAULT_NETWORK;
}

interface Opened {
  granted: Granted[];
  leases: LeaseInfo[];
  /** Our fds in child order (3, 4, ...). */
  fds: number[];
}

/** One `open` per NIC, in order. If one is refused, the TAPs already granted are closed (their leases end). */
function openAll(socket: string, nics: Nic[], asUid: number | undefined): Opened {
  const layout = assignChildFds(nics.map((n) => n.queues));
  const out: Opened = { granted: [], leases: [], fds: [] };
  try {
    nics.forEach((nic, i) => {
      const { lease, fds } = openTapSync(socket, openRequest(nic, asUid));
      out.fds.push(...fds);
      if (fds.length !== nic.queues) throw new LaunchError(125, `tapd sent ${fds.length} fds for ${nic.queues} queues`);
      out.leases.push(lease);
      out.granted.push({ nic, mac: lease.mac, childFds: layout[i]! });
    });
    return out;
  } catch (err) {
    sys.closeAll(out.fds.splice(0));
    throw err;
  }
}

/** QEMU 7.2 aborts (an assertion) when vhost=on cannot open /dev/vhost-net: say so before it does. */
function checkVhostAccess(): void {
  try {
    accessSync('/dev/vhost-net', fsConstants.R_OK | fsConstants.W_OK);
  } catch {
    throw new LaunchError(125, '--vhost: /dev/vhost-net is missing or not read-write for you (modprobe vhost_net, ask an admin for access, or drop --vhost)');
  }
}

function describeLease(l: LeaseInfo, g: Granted): string {
  const where = l.bridge ? `${l.network} (bridge ${l.bridge})` : l.network;
  return `${g.nic.id}: ${l.ifname} on ${where}, MAC ${l.mac}, ${l.queues} queue(s)${l.vnet_hdr ? ', vnet_hdr' : ''}, fd ${g.childFds.join(':')}, lease ${l.id}`;
}

/** After the TAPs are ours: become the sudo user (if any), run the final checks, start. */
async function startWith(opened: Opened, file: string, args: string[], sudo: SudoUser | undefined, o: TapFlags,
  env: NodeJS.ProcessEnv = process.env, extraCheck?: () => void): Promise<number> {
  try {
    if (sudo) becomeUser(sudo);
    if (o.verbose) opened.leases.forEach((l, i) => process.stderr.write(`tapctl: ${describeLease(l, opened.granted[i]!)}\n`));
    extraCheck?.();
  } catch (err) {
    sys.closeAll(opened.fds.splice(0));
    throw err;
  }
  return launch({ file, args, tapFds: opened.fds, env });
}

async function qemuCommand(userArgs: string[], o: QemuFlags, cmd: Command): Promise<number> {
  if (o.model === 'help') {
    process.stdout.write(`${knownModels().join('\n')}\n`);
    return EXIT.OK;
  }
  const sudo = sudoUser();
  if (o.userNet) {
    const tapOnly = (['network', 'mtu', 'queues', 'vhost', 'vnetHdr'] as const).filter((k) => o[k] !== undefined);
    if (tapOnly.length > 0 || o.nic.length > 0) {
      throw new UsageError('--user-net uses QEMU\'s own user-mode network (no tapd, no TAP): -b, --mtu, --queues, --vhost, --vnet-hdr and --nic do not apply');
    }
    const nic: { id: string; model: string; mac?: string } = {
      id: o.id === undefined ? 'net0' : parseId(o.id),
      model: o.model === undefined ? DEFAULT_MODEL : parseModel(o.model),
    };
    if (o.mac !== undefined) nic.mac = parseMac(o.mac);
    const args = [...userNetArgs(nic, o.redir), ...userArgs];
    if (sudo) becomeUser(sudo);
    if (o.verbose) process.stderr.write(`tapctl: ${o.qemu} ${args.join(' ')}\n`);
    return launch({ file: o.qemu, args, tapFds: [] });
  }
  if (o.redir.length > 0) throw new UsageError('--redir forwards ports of QEMU\'s user-mode network: add --user-net (a TAP needs no forwarding)');
  const nics = resolveNics(primaryNic(o), o.nic.map(parseNicSpec), defaultNetwork());
  const opened = openAll(socketOf(cmd), nics, sudo?.uid);
  const args = qemuArgv(opened.granted, userArgs);
  return startWith(opened, o.qemu, args, sudo, o, process.env, () => {
    if (nics.some((n) => n.vhost)) checkVhostAccess();
    if (o.verbose) process.stderr.write(`tapctl: ${o.qemu} ${args.join(' ')}\n`);
  });
}

async function runCommand(command: string[], o: TapFlags, cmd: Command): Promise<number> {
  const [file, ...userArgs] = command;
  if (file === undefined || file === '') throw new UsageError('run needs a command: tapctl run [options] -- COMMAND [ARGS...]');
  const specs = o.nic.map(parseNicSpec);
  if (specs.some((s) => s.model !== undefined)) throw new UsageError('run: the command chooses the NIC model; drop model= from --nic');
  // A command reading frames itself expects plain Ethernet: the virtio-net header only on request.
  const plain = (n: NicOptions): NicOptions => ({ ...n, vnetHdr: n.vnetHdr ?? (n.vhost ? true : false) });
  const primary = primaryNic(o);
  const nics = resolveNics(Object.keys(primary).length === 0 && specs.length > 0 ? {} : plain(primary), specs.map(plain), defaultNetwork());
  const sudo = sudoUser();
  const opened = openAll(socketOf(cmd), nics, sudo?.uid);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TAPCTL_FD: opened.granted[0]!.childFds.join(':'),
    TAPCTL_MAC: opened.leases[0]!.mac,
    TAPCTL_IFNAME: opened.leases[0]!.ifname,
    TAPCTL_MACS: opened.leases.map((l) => l.mac).join(' '),
    TAPCTL_IFNAMES: opened.leases.map((l) => l.ifname).join(' '),
  };
  return startWith(opened, file, runArgv(opened.granted, userArgs), sudo, o, env, () => {
    // becomeUser() set HOME/USER/LOGNAME in process.env after env was copied.
    for (const k of ['HOME', 'USER', 'LOGNAME']) env[k] = process.env[k];
  });
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

function ownerName(uid: number): string {
  return getpwuid(uid)?.name ?? String(uid);
}

function listCommand(o: { json?: boolean }, cmd: Command): number {
  const { body } = requestSync(socketOf(cmd), { op: 'list' });
  const leases = (body.leases ?? []) as LeaseInfo[];
  if (o.json) printJson(leases);
  else process.stdout.write(formatLeases(leases, ownerName));
  return EXIT.OK;
}

function statusCommand(o: { json?: boolean }, cmd: Command): number {
  const { body } = requestSync(socketOf(cmd), { op: 'status' });
  const status = (body.status ?? {}) as Record<string, unknown>;
  if (o.json) printJson(status);
  else process.stdout.write(formatStatus(status));
  return EXIT.OK;
}

function checkCommand(o: TapFlags & { json?: boolean }, cmd: Command): number {
  const nic = primaryNic(o);
  const [resolved] = resolveNics({ ...nic, vnetHdr: nic.vnetHdr ?? false }, [], defaultNetwork());
  const sudo = sudoUser();
  const { body } = requestSync(socketOf(cmd), { op: 'check', ...openRequest(resolved!, sudo?.uid) });
  const allowed = body.allowed === true;
  const reason = String(body.reason ?? '');
  if (o.json) printJson({ allowed, reason, ...(body.code === undefined ? {} : { code: body.code }) });
  else process.stdout.write(`${allowed ? 'allowed' : 'not allowed'}: ${reason}\n`);
  return allowed ? EXIT.OK : EXIT.REFUSED;
}

function reloadCommand(_o: unknown, cmd: Command): number {
  requestSync(socketOf(cmd), { op: 'reload' });
  process.stdout.write('tapd reloaded its policy\n');
  return EXIT.OK;
}

/** Runs an action; any error becomes one line on stderr and the documented exit status. */
function act<A extends unknown[]>(fn: (...a: A) => number | Promise<number>): (...a: A) => Promise<void> {
  return async (...a: A) => {
    let status: number;
    try {
      status = await fn(...a);
    } catch (err) {
      process.stderr.write(`tapctl: ${errorLine(err)}\n`);
      status = exitCodeFor(err);
    }
    process.exit(status);
  };
}

function addTapOptions(cmd: Command, what: 'qemu' | 'run' | 'check'): Command {
  cmd
    .option('-b, --network <name>', `network, bridge or uplink NIC to join (default $TAPD_NETWORK, else ${DEFAULT_NETWORK})`)
    .option('--mac <mac>', 'ask for this MAC (the policy must allow "mac"); default: tapd picks a unique 52:54:00:xx:xx:xx')
    .option('--mtu <n>', 'ask for this MTU (the policy must allow "mtu")')
    .option('--queues <n>', 'TAP queues for multiqueue virtio-net (the policy sets the most)')
    .option('--vhost', 'vhost-net acceleration (the policy must allow "vhost"; needs /dev/vhost-net)')
    .option('--port <name>', 'Open vSwitch networks: the OVN logical port (iface-id) to bind (the policy must grant it)');
  if (what === 'qemu') {
    cmd.option('--model <model>', `NIC model: virtio-net-pci (default), e1000, rtl8139, ne2k_pci, ... (--model help lists them)`);
  }
  if (what !== 'check') {
    cmd
      .option('--vnet-hdr', what === 'qemu' ? 'open the TAP with the virtio-net header (default for virtio models)' : 'open the TAP with the virtio-net header')
      .option('--no-vnet-hdr', 'open the TAP without the virtio-net header')
      .option('--id <id>', 'QEMU netdev id of the first NIC (default net0)')
      .option('--nic <spec>', 'one more NIC (repeatable): b=NAME,model=MODEL,mac=MAC,queues=N,mtu=N,vhost=on,vnet_hdr=on|off,id=ID,port=LP', collect, [])
      .option('-v, --verbose', 'print the leases and the command line on stderr');
  } else {
    cmd.option('--vnet-hdr', 'with the virtio-net header');
  }
  return cmd;
}

const program = new Command('tapctl')
  .description('Start VMs with real bridged networking through tapd, without root or setuid helpers.')
  .version(VERSION)
  .addOption(new Option('--socket <path>', 'tapd\'s socket').env('TAPD_SOCKET').default(DEFAULT_SOCKET))
  .showSuggestionAfterError()
  .configureOutput({
    outputError: (str, write) => {
      let line = str.replace(/^error: /, '').trimEnd();
      if (/unknown option|too many arguments/.test(line)) line += ' (put the emulator\'s or command\'s own arguments after --)';
      if (/missing required argument 'command'/.test(line)) line += ': tapctl run [options] -- COMMAND [ARGS...]';
      write(`tapctl: ${line}\n`);
    },
  })
  .addHelpText('after', `
Examples:
  tapctl qemu -b lan -- -m 512 -drive file=disk.qcow2 -nographic
  tapctl qemu -b lan --model e1000 --nic b=dmz,model=rtl8139 -- -m 512 -cdrom boot.iso
  tapctl qemu -b lan --queues 4 --vhost -- -smp 4 -m 1G disk.img
  tapctl run -b lan -- ./start-vm.sh -m 512          (runs: ./start-vm.sh -t 3 -m 512)
  tapctl qemu --user-net --redir tcp:5022::22 -- -m 512 disk.img
  tapctl check -b lan --queues 4
  tapctl list
  sudo tapctl qemu -b lan -- ...       (asks for $SUDO_UID, runs QEMU as that user, not root)

The socket is --socket, else $TAPD_SOCKET, else ${DEFAULT_SOCKET}.

${EXIT_CODES_HELP}`);

program.exitOverride((err) => {
  // Help and --version exit 0; commander's usage errors take our status for usage (1).
  process.exit(err.exitCode === 0 ? 0 : EXIT.REFUSED);
});

addTapOptions(
  program.command('qemu')
    .description('ask tapd for a TAP per NIC, then run QEMU with -netdev tap,fd=N and -device MODEL,...,mac=MAC')
    .argument('[qemu-args...]', 'QEMU\'s own arguments, after --'),
  'qemu',
)
  .option('--qemu <binary>', 'the emulator to run', DEFAULT_QEMU)
  .option('--user-net', 'no tapd: QEMU\'s user-mode network (-netdev user), for when no bridge is needed')
  .option('--redir <spec>', 'with --user-net (repeatable): forward a host port, old QEMU -redir syntax [tcp|udp]:HOSTPORT:[GUESTADDR]:GUESTPORT', collect, [])
  .addHelpText('after', `
tapctl adds, per NIC:   -netdev tap,id=ID,fd=3   -device MODEL,netdev=ID,mac=MAC
  --queues N (virtio):  -netdev tap,id=ID,fds=3:4:...  -device virtio-net-pci,...,mq=on,vectors=2N+2
  --vhost:              ,vhost=on on the -netdev
The TAP fds are the emulator's fds 3, 4, ... (nothing else is passed). virtio models get a TAP
with the virtio-net header (QEMU detects it from the fd); --no-vnet-hdr turns that off.
The MAC is the lease's: --mac if given, else one tapd picked.

--nic adds one more NIC per use; keys (all optional): b=NAME (network, default as -b),
model=MODEL, mac=MAC, queues=N, mtu=N, vhost=on, vnet_hdr=on|off, id=ID (default netK).
If only --nic is given, the plain flags add no NIC of their own.

Examples:
  tapctl qemu -b lan -- -m 512 -nographic -kernel bzImage -append console=ttyS0
  tapctl qemu --nic b=lan,model=e1000 --nic b=lab,model=virtio-net-pci,queues=2 -- -m 1G disk.img
  tapctl qemu --qemu qemu-system-aarch64 --model virtio-net-device -b lan -- -M virt ...
  tapctl qemu --user-net --redir tcp:5022::22 --redir udp:5353:10.0.2.15:53 -- disk.img

When tapctl is killed the VM keeps its network; when the VM exits its leases end. INT, TERM and
HUP sent to tapctl are passed on to QEMU; tapctl exits with QEMU's status (128+N for signal N).`)
  .action(act((args: string[], o: QemuFlags, cmd: Command) => qemuCommand(args, o, cmd)));

addTapOptions(
  program.command('run')
    .description('ask tapd for a TAP, then run COMMAND -t FD [ARGS...] with the TAP at fd FD (3)')
    .argument('<command...>', 'the command and its arguments, after --'),
  'run',
)
  .addHelpText('after', `
The classic convention of TAP launchers: the command gets "-t FD" in front of its own arguments,
so a start script that reads -t FD works unchanged (see scripts/qemu-start-example). Each --nic
adds another "-t FD"; a multiqueue TAP is "-t 3:4:5:6" (QEMU's fds= form). The TAP has no
virtio-net header unless --vnet-hdr (or --vhost) asks for one. The command also gets
TAPCTL_FD, TAPCTL_MAC and TAPCTL_IFNAME (first NIC), TAPCTL_MACS and TAPCTL_IFNAMES (all NICs).

Example:
  tapctl run -b lan -- scripts/qemu-start-example -m 512 -nographic disk.img
  # runs: scripts/qemu-start-example -t 3 -m 512 -nographic disk.img`)
  .action(act((command: string[], o: TapFlags, cmd: Command) => runCommand(command, o, cmd)));

program.command('list')
  .description('leases: yours (an admin sees everyone\'s)')
  .option('--json', 'print tapd\'s lease objects as JSON')
  .action(act((o: { json?: boolean }, cmd: Command) => listCommand(o, cmd)));

program.command('status')
  .description('tapd\'s version, uptime and counts')
  .option('--json', 'print as JSON')
  .action(act((o: { json?: boolean }, cmd: Command) => statusCommand(o, cmd)));

addTapOptions(
  program.command('check')
    .description('would tapd give you this TAP, and why (prints "allowed: ..." or "not allowed: ...")')
    .option('--json', 'print {allowed, reason, code} as JSON'),
  'check',
)
  .addHelpText('after', `
Exit status 0 when allowed, 1 when not. Example:  tapctl check -b lan --queues 4 --mac 52:54:00:12:34:56`)
  .action(act((o: TapFlags & { json?: boolean }, cmd: Command) => checkCommand(o, cmd)));

program.command('reload')
  .description('make tapd re-read its policy (root or a tapd admin)')
  .action(act((o: unknown, cmd: Command) => reloadCommand(o, cmd)));

// First thing, while /proc/self is still readable: after sudo's setuid the process is not dumpable
// and /proc/self/fd belongs to root. Fds opened later are Node's own, all close-on-exec.
closeOnExecAll();
await program.parseAsync();
