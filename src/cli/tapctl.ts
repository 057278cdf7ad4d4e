#!/usr/bin/env node
// tapctl: asks tapd for TAP devices and starts QEMU (or any command) with them; lists and checks
// leases. Runs as the user; under sudo it asks on the user's behalf and drops to the user before
// starting anything. docs/launching.md is the guide.
import { accessSync, constants as fsConstants, writeSync } from 'node:fs';
import { Command, Option, type OptionValues } from 'commander';
import { DEFAULT_SOCKET, openTapSync, requestSync, type OpenedTap, type Pending, type WireRequest } from '../client/client.js';
import type { LeaseInfo } from '../protocol/messages.js';
import { closeAll } from '../sys/fdpass.js';
import { closeOnExecAll } from '../sys/fds.js';
import { VERSION } from '../version.js';
import { EXIT, EXIT_CODES_HELP, errorLine, exitCodeFor } from './exit-codes.js';
import { formatLeases, formatNetworks, formatStatus, type NetworkInfo } from './format.js';
import { execEmulator } from './launch.js';
import { registerHotplug } from './qmp.js';
import { LaunchError } from './launch-error.js';
import { getpwuid, lookupUser } from '../common/accounts.js';
import { becomeUser, sudoUser, type SudoUser } from './privileges.js';
import {
  DEFAULT_MODEL, DEFAULT_NETWORK, assignChildFds, knownModels, openRequest, parseDeviceProp, parseId, parseIfaceId, parseMac,
  parseModel, parseMtu, parseNetwork, parseNicSpec, parseQueues, qemuArgv, resolveNics, runArgv, userNetArgs,
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
  deviceOpt: string[];
  verbose?: boolean;
  dryRun?: boolean;
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

/** One line on stderr, written at once (the process may exec right after). */
function say(line: string): void {
  writeSync(2, `tapctl: ${line}\n`);
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
  if (o.deviceOpt?.length) nic.deviceProps = o.deviceOpt.map((d) => parseDeviceProp(d));
  if (o.port !== undefined) nic.port = parseIfaceId(o.port);
  return nic;
}

function defaultNetwork(): string {
  return process.env.TAPD_NETWORK || DEFAULT_NETWORK;
}

/**
 * The NICs a command line describes, with every default applied: the one builder behind open,
 * check and --dry-run, so check asks exactly what the open would. `run` hands the TAP to a
 * program that reads frames itself, so its TAPs have no virtio-net header unless asked.
 */
function nicsOf(o: TapFlags, forRun: boolean): Nic[] {
  const specs = o.nic.map(parseNicSpec);
  const primary = primaryNic(o);
  if (!forRun) return resolveNics(primary, specs, defaultNetwork());
  if (specs.some((s) => s.model !== undefined)) throw new UsageError('run: the command chooses the NIC model; drop model= from --nic');
  if (specs.some((s) => s.deviceProps !== undefined) || primary.deviceProps) throw new UsageError('run: the command writes its own -device; drop --device-opt and dev.');
  const plain = (n: NicOptions): NicOptions => ({ ...n, vnetHdr: n.vnetHdr ?? (n.vhost ? true : false) });
  return resolveNics(Object.keys(primary).length === 0 && specs.length > 0 ? {} : plain(primary), specs.map(plain), defaultNetwork());
}

/** The request an open of `nic` sends; a check sends the same with op "check". */
function requestFor(op: 'open' | 'check', nic: Nic, asUid: number | undefined): WireRequest {
  return { op, ...openRequest(nic, asUid), progress: true };
}

function onPending(p: Pending): void {
  say(`tapd is running ${p.waiting_for} (up to ${Math.ceil(p.timeout_ms / 1000)} s)`);
}

interface Opened {
  granted: Granted[];
  leases: OpenedTap['lease'][];
  /** Our fds in child order (3, 4, ...). */
  fds: number[];
}

/** One `open` per NIC, in order. If one is refused, the TAPs already granted are closed (their leases end). */
function openAll(socket: string, nics: Nic[], asUid: number | undefined): Opened {
  const layout = assignChildFds(nics.map((n) => n.queues));
  const out: Opened = { granted: [], leases: [], fds: [] };
  try {
    nics.forEach((nic, i) => {
      const { op: _op, ...body } = requestFor('open', nic, asUid);
      const { lease, fds } = openTapSync(socket, body, { onPending });
      out.fds.push(...fds);
      if (fds.length !== nic.queues) throw new LaunchError(125, `tapd sent ${fds.length} fds for ${nic.queues} queues`);
      out.leases.push(lease);
      out.granted.push({ nic, mac: lease.mac, childFds: layout[i]! });
    });
    return out;
  } catch (err) {
    closeAll(out.fds.splice(0));
    throw err;
  }
}

interface CheckResult {
  nic: Nic;
  request: WireRequest;
  allowed: boolean;
  reason: string;
  code?: string;
  warnings: string[];
}

/** tapd's `check` for each NIC: what an open would answer, nothing created. */
function checkAll(socket: string, nics: Nic[], asUid: number | undefined): CheckResult[] {
  return nics.map((nic) => {
    const { body } = requestSync(socket, requestFor('check', nic, asUid));
    const r: CheckResult = {
      nic, request: requestFor('open', nic, asUid), allowed: body.allowed === true, reason: String(body.reason ?? ''),
      warnings: Array.isArray(body.warnings) ? body.warnings.map(String) : [],
    };
    if (typeof body.code === 'string') r.code = body.code;
    return r;
  });
}

function checkLines(results: CheckResult[]): string {
  const many = results.length > 1;
  return results.map((r) => {
    const who = many ? `${r.nic.id} (${r.nic.network}): ` : '';
    return [`${who}${r.allowed ? 'allowed' : 'not allowed'}: ${r.reason}`, ...r.warnings.map((w) => `${who}warning: ${w}`)].join('\n');
  }).join('\n') + '\n';
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

/** Shell-quoted, for printing a command line someone may paste. */
function shellLine(argv: readonly string[]): string {
  return argv.map((a) => (/^[A-Za-z0-9_./:=,@%+-]+$/.test(a) ? a : `'${a.replaceAll("'", "'\\''")}'`)).join(' ');
}

/**
 * --dry-run: ask `check` (never `open`) for each NIC, print the requests an open would send and
 * the command line it would run (fd numbers as they would be; MACs tapd would pick shown as such).
 */
function dryRun(socket: string, nics: Nic[], asUid: number | undefined, commandLine: (g: Granted[]) => string[]): number {
  const results = checkAll(socket, nics, asUid);
  const layout = assignChildFds(nics.map((n) => n.queues));
  const granted = nics.map((nic, i) => ({ nic, mac: nic.mac ?? 'MAC-FROM-TAPD', childFds: layout[i]! }));
  const lines = results.map((r) => `request: ${JSON.stringify({ v: 1, ...r.request })}`);
  process.stdout.write(`${lines.join('\n')}\n${checkLines(results)}command: ${shellLine(commandLine(granted))}\n`);
  return results.every((r) => r.allowed) ? EXIT.OK : EXIT.REFUSED;
}

/** With -v, tapd's warnings for these NICs (STP on the bridge...) before the open: check tells them, an open does not. */
function warnFirst(socket: string, nics: Nic[], asUid: number | undefined): void {
  for (const r of checkAll(socket, nics, asUid)) for (const w of r.warnings) say(`warning: ${w}`);
}

/** After the TAPs are ours: become the sudo user (if any), run the final checks, become the emulator. */
function startWith(opened: Opened, file: string, args: string[], sudo: SudoUser | undefined, o: TapFlags,
  env: NodeJS.ProcessEnv = process.env, extraCheck?: () => void): never {
  try {
    if (sudo) becomeUser(sudo);
    if (o.verbose) opened.leases.forEach((l, i) => say(describeLease(l, opened.granted[i]!)));
    extraCheck?.();
    return execEmulator({ file, args, tapFds: opened.fds, env });
  } catch (err) {
    closeAll(opened.fds.splice(0));
    throw err;
  }
}

function qemuCommand(userArgs: string[], o: QemuFlags, cmd: Command): number {
  if (o.model === 'help') {
    process.stdout.write(`${knownModels().join('\n')}\n(any other QEMU NIC model name is passed through)\n`);
    return EXIT.OK;
  }
  const sudo = sudoUser();
  if (o.userNet) {
    const tapOnly = (['network', 'mtu', 'queues', 'vhost', 'vnetHdr'] as const).filter((k) => o[k] !== undefined);
    if (tapOnly.length > 0 || o.nic.length > 0) {
      throw new UsageError('--user-net uses QEMU\'s own user-mode network (no tapd, no TAP): -b, --mtu, --queues, --vhost, --vnet-hdr and --nic do not apply');
    }
    const nic: { id: string; model: string; mac?: string; deviceProps?: [string, string][] } = {
      id: o.id === undefined ? 'net0' : parseId(o.id),
      model: o.model === undefined ? DEFAULT_MODEL : parseModel(o.model),
      deviceProps: o.deviceOpt.map((d) => parseDeviceProp(d)),
    };
    if (o.mac !== undefined) nic.mac = parseMac(o.mac);
    const args = [...userNetArgs(nic, o.redir), ...userArgs];
    if (o.dryRun) {
      process.stdout.write(`command: ${shellLine([o.qemu, ...args])}\n`);
      return EXIT.OK;
    }
    if (sudo) becomeUser(sudo);
    if (o.verbose) say(shellLine([o.qemu, ...args]));
    return execEmulator({ file: o.qemu, args, tapFds: [] });
  }
  if (o.redir.length > 0) throw new UsageError('--redir forwards ports of QEMU\'s user-mode network: add --user-net (a TAP needs no forwarding)');
  const nics = nicsOf(o, false);
  if (o.dryRun) return dryRun(socketOf(cmd), nics, sudo?.uid, (g) => [o.qemu, ...qemuArgv(g, userArgs)]);
  if (o.verbose) warnFirst(socketOf(cmd), nics, sudo?.uid);
  const opened = openAll(socketOf(cmd), nics, sudo?.uid);
  const args = qemuArgv(opened.granted, userArgs);
  return startWith(opened, o.qemu, args, sudo, o, process.env, () => {
    if (nics.some((n) => n.vhost)) checkVhostAccess();
    if (o.verbose) say(shellLine([o.qemu, ...args]));
  });
}

function runCommand(command: string[], o: TapFlags, cmd: Command): number {
  const [file, ...userArgs] = command;
  if (file === undefined || file === '') throw new UsageError('run needs a command: tapctl run [options] -- COMMAND [ARGS...]');
  const nics = nicsOf(o, true);
  const sudo = sudoUser();
  if (o.dryRun) return dryRun(socketOf(cmd), nics, sudo?.uid, (g) => [file, ...runArgv(g, userArgs)]);
  if (o.verbose) warnFirst(socketOf(cmd), nics, sudo?.uid);
  const opened = openAll(socketOf(cmd), nics, sudo?.uid);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TAPCTL_FD: opened.granted[0]!.childFds.join(':'),
    TAPCTL_MAC: opened.leases[0]!.mac,
    TAPCTL_IFNAME: opened.leases[0]!.ifname,
    TAPCTL_MACS: opened.leases.map((l) => l.mac).join(' '),
    TAPCTL_IFNAMES: opened.leases.map((l) => l.ifname).join(' '),
  };
  const args = runArgv(opened.granted, userArgs);
  return startWith(opened, file, args, sudo, o, env, () => {
    // becomeUser() set HOME/USER/LOGNAME in process.env after env was copied.
    for (const k of ['HOME', 'USER', 'LOGNAME']) env[k] = process.env[k];
    if (o.verbose) say(shellLine([file, ...args]));
  });
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

function ownerName(uid: number): string {
  return getpwuid(uid)?.name ?? String(uid);
}

/** --user NAME|UID → a uid (a name through NSS; a number as is, even without an account). */
function userArg(value: string, where: string): number {
  const found = lookupUser(value);
  if (found) return found.uid;
  if (/^\d{1,10}$/.test(value) && Number(value) <= 0xfffffffe) return Number(value);
  throw new UsageError(`${where}: no user named "${value}"`);
}

function listCommand(o: { json?: boolean; user?: string }, cmd: Command): number {
  const req: WireRequest = { op: 'list' };
  if (o.user !== undefined) req.user = userArg(o.user, '--user');
  const { body } = requestSync(socketOf(cmd), req);
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

function networksCommand(o: { json?: boolean; names?: boolean }, cmd: Command): number {
  const { body } = requestSync(socketOf(cmd), { op: 'networks' });
  const networks = (body.networks ?? []) as NetworkInfo[];
  if (o.json) printJson(networks);
  else if (o.names) process.stdout.write(networks.map((n) => `${n.name}\n`).join(''));
  else process.stdout.write(formatNetworks(networks));
  return EXIT.OK;
}

function checkCommand(o: TapFlags & { json?: boolean }, cmd: Command): number {
  const sudo = sudoUser();
  const results = checkAll(socketOf(cmd), nicsOf(o, false), sudo?.uid);
  if (o.json) {
    const out = results.map((r) => ({ allowed: r.allowed, reason: r.reason, ...(r.code === undefined ? {} : { code: r.code }), warnings: r.warnings }));
    printJson(out.length === 1 ? out[0] : out);
  } else {
    process.stdout.write(checkLines(results));
  }
  return results.every((r) => r.allowed) ? EXIT.OK : EXIT.REFUSED;
}

function revokeCommand(lease: string | undefined, o: { user?: string; network?: string; json?: boolean }, cmd: Command): number {
  const req: WireRequest = { op: 'revoke' };
  if (lease !== undefined) {
    if (!/^[0-9a-f]{1,16}$/.test(lease)) throw new UsageError(`revoke: "${lease}" is not a lease id (see tapctl list)`);
    req.lease = lease;
  }
  if (o.user !== undefined) req.user = userArg(o.user, '--user');
  if (o.network !== undefined) req.network = parseNetwork(o.network, '--network');
  if (req.lease === undefined && req.user === undefined && req.network === undefined) {
    throw new UsageError('revoke needs a lease id, --user or --network: tapctl revoke LEASE, tapctl revoke --user U --network N');
  }
  const { body } = requestSync(socketOf(cmd), req);
  const revoked = (body.revoked ?? []) as LeaseInfo[];
  if (o.json) printJson(revoked);
  else {
    for (const l of revoked) {
      process.stdout.write(`revoked ${l.id}: ${l.ifname} on ${l.network}, owner ${ownerName(l.owner_uid)}, pid ${l.pid}\n`);
    }
  }
  return EXIT.OK;
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
  if (what !== 'run') {
    cmd
      .option('--model <model>', 'NIC model: virtio-net-pci (default), e1000, rtl8139, ne2k_pci, ... (--model help lists them; others are passed to QEMU)')
      .option('--device-opt <key=value>', 'one more -device property of the first NIC (repeatable), e.g. bootindex=1, addr=0x5', collect, []);
  }
  cmd
    .option('--vnet-hdr', what === 'run' ? 'open the TAP with the virtio-net header' : 'open the TAP with the virtio-net header (default for virtio models)')
    .option('--no-vnet-hdr', 'open the TAP without the virtio-net header')
    .option('--id <id>', 'QEMU netdev id of the first NIC (default net0)')
    .option('--nic <spec>', `one more NIC (repeatable), KEY=VALUE,... with keys b, ${what === 'run' ? '' : 'model, '}mac, queues, mtu, vhost (on), vnet_hdr (on|off), id, port${what === 'run' ? '' : ', dev.PROP'}; e.g. b=lan,queues=4`, collect, []);
  if (what !== 'check') {
    cmd
      .option('--dry-run', 'ask tapd "check" instead of "open"; print the requests and the command line, start nothing')
      .option('-v, --verbose', 'print tapd\'s warnings (a check first), the leases and the command line on stderr');
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
  tapctl qemu -b lan --device-opt bootindex=1 --dry-run -- -m 512 disk.img
  tapctl run -b lan -- ./start-vm.sh -m 512          (runs: ./start-vm.sh -t 3 -m 512)
  tapctl qemu --user-net --redir tcp:5022::22 -- -m 512 disk.img
  tapctl networks
  tapctl check -b lan --queues 4
  tapctl list
  tapctl revoke 3876d1f7934e5048                    (root or a tapd admin)
  sudo tapctl qemu -b lan -- ...       (asks for $SUDO_UID, runs QEMU as that user, not root)

The socket is --socket, else $TAPD_SOCKET, else ${DEFAULT_SOCKET}.

${EXIT_CODES_HELP}`);

program.exitOverride((err) => {
  // Help and --version exit 0; commander's usage errors take our status for usage (1).
  process.exit(err.exitCode === 0 ? 0 : EXIT.REFUSED);
});

addTapOptions(
  program.command('qemu')
    .description('ask tapd for a TAP per NIC, then become QEMU with -netdev tap,fd=N and -device MODEL,...,mac=MAC')
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
  --device-opt K=V:     ,K=V on the first NIC's -device (dev.K=V in --nic for the others)
The TAP fds are the emulator's fds 3, 4, ... (nothing else is passed). virtio models get a TAP
with the virtio-net header (QEMU detects it from the fd); --no-vnet-hdr turns that off.
The MAC is the lease's: --mac if given, else one tapd picked. A model tapctl does not know is
passed to QEMU as written (QEMU says whether it exists).

--nic adds one more NIC per use; keys (all optional): b=NAME (network, default as -b),
model=MODEL, mac=MAC, queues=N, mtu=N, vhost=on, vnet_hdr=on|off, id=ID (default netK),
dev.PROP=VALUE (a -device property, e.g. dev.bootindex=1,dev.addr=0x5; repeatable).
If only --nic is given, the plain flags add no NIC of their own.

Examples:
  tapctl qemu -b lan -- -m 512 -nographic -kernel bzImage -append console=ttyS0
  tapctl qemu --nic b=lan,model=e1000 --nic b=lab,model=virtio-net-pci,queues=2,dev.bootindex=1 -- -m 1G disk.img
  tapctl qemu --qemu qemu-system-aarch64 --model virtio-net-device -b lan -- -M virt ...
  tapctl qemu --user-net --redir tcp:5022::22 --redir udp:5353:10.0.2.15:53 -- disk.img
  tapctl qemu -b lan --dry-run -- -m 512 disk.img    (check, print, start nothing)

tapctl becomes QEMU (exec): the lease's pid is QEMU's, signals go to QEMU itself, and the exit
status is QEMU's. When QEMU exits, its TAPs close and the leases end.`)
  .action(act((args: string[], o: QemuFlags, cmd: Command) => qemuCommand(args, o, cmd)));

addTapOptions(
  program.command('run')
    .description('ask tapd for a TAP, then become COMMAND -t FD [ARGS...] with the TAP at fd FD (3)')
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
  .description('leases: yours (an admin sees everyone\'s): ID IFNAME NETWORK BRIDGE MAC OWNER PID AGE')
  .option('--user <user>', 'only this user\'s leases (a name or uid; another user\'s: admins only)')
  .option('--json', 'print tapd\'s lease objects as JSON')
  .action(act((o: { json?: boolean; user?: string }, cmd: Command) => listCommand(o, cmd)));

program.command('networks')
  .description('the networks you may use: NAME MODE BRIDGE GRANTS QUOTA HELD')
  .option('--names', 'just the names, one per line (for shell completion)')
  .option('--json', 'print tapd\'s network objects as JSON')
  .action(act((o: { json?: boolean; names?: boolean }, cmd: Command) => networksCommand(o, cmd)));

program.command('status')
  .description('tapd\'s version, uptime, counts and hook timeout')
  .option('--json', 'print as JSON')
  .action(act((o: { json?: boolean }, cmd: Command) => statusCommand(o, cmd)));

addTapOptions(
  program.command('check')
    .description('would tapd give you this TAP, and why: the request "tapctl qemu" with these flags would send, as a check')
    .option('--json', 'print {allowed, reason, code, warnings} as JSON (an array with several NICs)'),
  'check',
)
  .addHelpText('after', `
Prints "allowed: REASON" or "not allowed: REASON", then "warning: ..." lines (e.g. STP on the
bridge: a new port forwards nothing for the forward delay). With --nic, one line per NIC.
Exit status 0 when allowed, 1 when not. Example:  tapctl check -b lan --queues 4 --vhost`)
  .action(act((o: TapFlags & { json?: boolean }, cmd: Command) => checkCommand(o, cmd)));

program.command('revoke')
  .description('end leases (root or a tapd admin): the TAP is deleted, the VM loses its network')
  .argument('[lease]', 'a lease id (tapctl list)')
  .option('--user <user>', 'leases of this user (a name or uid)')
  .option('--network <name>', 'leases on this network')
  .option('--json', 'print the revoked leases as JSON')
  .addHelpText('after', `
Every criterion given must match; at least one is needed. Examples:
  tapctl revoke 3876d1f7934e5048
  tapctl revoke --user alice --network lan
The emulator keeps running, but its TAP fd stops working (the device is gone); the network's
down hook runs. Exit status 1 when no lease matches.`)
  .action(act((lease: string | undefined, o: { user?: string; network?: string; json?: boolean }, cmd: Command) => revokeCommand(lease, o, cmd)));

program.command('reload')
  .description('make tapd re-read its policy (root or a tapd admin)')
  .action(act((o: unknown, cmd: Command) => reloadCommand(o, cmd)));

registerHotplug(program, act, socketOf, defaultNetwork);

// First thing, while /proc/self is still readable: after sudo's setuid the process is not dumpable
// and /proc/self/fd belongs to root. Fds opened later are Node's own, all close-on-exec.
closeOnExecAll();
// No top-level await: the command is bundled as CommonJS (scripts/bundle.mjs). act() handles its own errors.
void program.parseAsync();
