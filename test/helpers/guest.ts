// The tiny test guest (test/guest/): build it, make QEMU arguments for it, read its serial output.
//
// The guest prints lines starting with "TAPD-GUEST " on its serial console (see test/guest/init):
// NIC, QUEUES, LEASE/NOLEASE, FETCH ok|fail, SERVING, DONE; then it powers off, so QEMU exits.
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT: string = fileURLToPath(new URL('../../', import.meta.url));
export const GUEST_BUILD_SCRIPT: string = fileURLToPath(new URL('../guest/build.sh', import.meta.url));

export interface GuestImage {
  /** Uncompressed PVH vmlinux (what guestArgs boots). */
  kernel: string;
  /** initramfs.cpio.gz: busybox + NIC drivers + the test /init. */
  initrd: string;
  /** The original bzImage, should PVH boot ever be unavailable. */
  bzImage: string;
  /** e.g. "6.1.0-57-amd64" */
  kernelVersion: string;
  /** Base kernel command line (console=ttyS0 quiet loglevel=1 panic=-1 ipv6.disable=1). */
  cmdline: string;
}

/** Parses build.sh's `NAME='value'` lines (single-quoted shell words). */
function parseAssignments(out: string): Map<string, string> {
  const vars = new Map<string, string>();
  for (const line of out.split('\n')) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    if (!m || m[1] === undefined || m[2] === undefined) continue;
    let value = '';
    const raw = m[2];
    for (let i = 0; i < raw.length; ) {
      const c = raw[i] as string;
      if (c === "'") {
        const end = raw.indexOf("'", i + 1);
        if (end < 0) throw new Error(`unterminated quote in build.sh output: ${line}`);
        value += raw.slice(i + 1, end);
        i = end + 1;
      } else if (c === '\\' && i + 1 < raw.length) {
        value += raw[i + 1];
        i += 2;
      } else {
        value += c;
        i += 1;
      }
    }
    vars.set(m[1], value);
  }
  return vars;
}

let cachedImage: GuestImage | undefined;

/**
 * Builds the guest once (test/guest/build.sh, synchronously; a few seconds the first time on a
 * machine, instant once .cache/guest/ exists) and returns its paths. Cached per process.
 */
export function ensureGuest(): GuestImage {
  if (cachedImage) return cachedImage;
  const out = execFileSync('bash', [GUEST_BUILD_SCRIPT], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    timeout: 15 * 60_000,
  });
  const vars = parseAssignments(out);
  const get = (name: string): string => {
    const v = vars.get(name);
    if (!v) throw new Error(`test/guest/build.sh printed no ${name}:\n${out}`);
    return v;
  };
  cachedImage = {
    kernel: get('GUEST_KERNEL'),
    initrd: get('GUEST_INITRD'),
    bzImage: get('GUEST_BZIMAGE'),
    kernelVersion: get('GUEST_KERNEL_VERSION'),
    cmdline: get('GUEST_CMDLINE'),
  };
  return cachedImage;
}

/** QEMU NIC models the guest has drivers for. */
export type NicModel = 'virtio-net-pci' | 'e1000' | 'rtl8139' | 'ne2k_pci';

export interface GuestArgsOptions {
  /** QEMU -device model of the NIC. */
  model: NicModel | (string & {});
  /** Guest MAC, e.g. "52:54:00:12:34:56". */
  mac: string;
  /** Appended to the kernel command line, e.g. "tapd.serve=8080 tapd.hold=10". */
  extraCmdline?: string;
  /** id of the -netdev the caller adds (default "n0"). */
  netdev?: string;
  /** Queues of a multiqueue TAP (virtio-net-pci only): adds mq=on,vectors=2*queues+2. */
  queues?: number;
  /** Guest memory in MiB (default 256). */
  memoryMb?: number;
  /** Boot the bzImage instead of the PVH vmlinux (slower by ~3 s under TCG). */
  bzImage?: boolean;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/**
 * QEMU arguments (without the program name) for a TCG boot of the guest with its serial console
 * on stdio, including `-device <model>,netdev=<netdev>,mac=<mac>`, but NO -netdev: the caller adds
 * `-netdev tap,id=n0,...` (ifname=, or fd= for a TAP fd handed out by tapd).
 */
export function guestArgs(opts: GuestArgsOptions): string[] {
  if (!MAC_RE.test(opts.mac)) throw new Error(`bad MAC: ${opts.mac}`);
  const img = ensureGuest();
  const netdev = opts.netdev ?? 'n0';
  let device = `${opts.model},netdev=${netdev},mac=${opts.mac.toLowerCase()}`;
  const queues = opts.queues ?? 1;
  if (queues > 1) {
    if (opts.model !== 'virtio-net-pci') throw new Error(`multiqueue needs virtio-net-pci, not ${opts.model}`);
    device += `,mq=on,vectors=${2 * queues + 2}`;
  }
  const cmdline = opts.extraCmdline ? `${img.cmdline} ${opts.extraCmdline}` : img.cmdline;
  return [
    '-accel', 'tcg',
    '-m', String(opts.memoryMb ?? 256),
    '-nodefaults',
    '-nographic',
    '-serial', 'stdio',
    '-monitor', 'none',
    '-no-reboot',
    '-kernel', opts.bzImage ? img.bzImage : img.kernel,
    '-initrd', img.initrd,
    '-append', cmdline,
    '-device', device,
  ];
}

export interface SerialResult {
  /** TAPD-GUEST NIC <ifname> <mac> <driver> */
  nic?: { ifname: string; mac: string; driver: string };
  /** TAPD-GUEST QUEUES rx=<n> tx=<n>[ mq=0|1] (mq only for virtio) */
  queues?: { rx: number; tx: number; mq?: boolean };
  /** TAPD-GUEST LEASE <ip>/<prefix> router=<router>; router null when the lease had none. */
  lease?: { ip: string; prefix: number; router: string | null };
  /** TAPD-GUEST FETCH ok <first line> | TAPD-GUEST FETCH fail */
  fetch?: { ok: boolean; line: string };
  /** TAPD-GUEST SERVING <port> */
  serving?: number;
  /** TAPD-GUEST NONIC seen */
  noNic: boolean;
  /** TAPD-GUEST NOLEASE seen */
  noLease: boolean;
  /** TAPD-GUEST DONE seen */
  done: boolean;
  /** All TAPD-GUEST lines, from "TAPD-GUEST" on, in order. */
  lines: string[];
}

/** Reads the guest's lines out of its serial output (tolerates \r\n and firmware noise). */
export function parseSerial(text: string): SerialResult {
  const r: SerialResult = { noNic: false, noLease: false, done: false, lines: [] };
  for (const raw of text.split('\n')) {
    const at = raw.indexOf('TAPD-GUEST ');
    if (at < 0) continue;
    const line = raw.slice(at).replace(/\r+$/, '');
    r.lines.push(line);
    const rest = line.slice('TAPD-GUEST '.length);
    const sp = rest.indexOf(' ');
    const kind = sp < 0 ? rest : rest.slice(0, sp);
    const args = sp < 0 ? '' : rest.slice(sp + 1);
    let m: RegExpExecArray | null;
    switch (kind) {
      case 'NIC':
        if ((m = /^(\S+) (\S+) (\S+)$/.exec(args)) && m[1] && m[2] && m[3]) {
          r.nic = { ifname: m[1], mac: m[2], driver: m[3] };
        }
        break;
      case 'QUEUES':
        if ((m = /^rx=(\d+) tx=(\d+)(?: mq=([01]))?$/.exec(args))) {
          r.queues = { rx: Number(m[1]), tx: Number(m[2]) };
          if (m[3] !== undefined) r.queues.mq = m[3] === '1';
        }
        break;
      case 'LEASE':
        if ((m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+) router=(\S+)$/.exec(args)) && m[1] && m[3]) {
          r.lease = { ip: m[1], prefix: Number(m[2]), router: m[3] === 'none' ? null : m[3] };
        }
        break;
      case 'NOLEASE':
        r.noLease = true;
        break;
      case 'FETCH':
        if (args === 'fail') r.fetch = { ok: false, line: '' };
        else if (args === 'ok' || args.startsWith('ok ')) r.fetch = { ok: true, line: args.slice(3) };
        break;
      case 'SERVING':
        if (/^\d+$/.test(args)) r.serving = Number(args);
        break;
      case 'NONIC':
        r.noNic = true;
        break;
      case 'DONE':
        r.done = true;
        break;
    }
  }
  return r;
}

export interface GuestRun {
  /** Everything QEMU wrote to stdout and stderr (serial console included). */
  serial: string;
  result: SerialResult;
  /** ms from spawn to each TAPD-GUEST line, keyed by its kind (NIC, LEASE, FETCH, DONE, ...). */
  at: Record<string, number>;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** true when the run was killed after timeoutMs */
  timedOut: boolean;
  elapsedMs: number;
}

export interface RunGuestOptions {
  /** Kill the process group after this long (default 120 s). */
  timeoutMs?: number;
  /** Called with each serial line (\r stripped) as it arrives, and the spawned process's pid. */
  onLine?: (line: string, pid: number) => void;
  /** Extra environment for the command. */
  env?: NodeJS.ProcessEnv;
}

/**
 * Spawns argv (QEMU with guestArgs, possibly wrapped: see Lan.asUser) in its own process group,
 * collects the serial output and resolves when it exits; on timeout the whole group is killed.
 */
export function runGuest(argv: string[], opts: RunGuestOptions = {}): Promise<GuestRun> {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error('runGuest: empty argv');
  const t0 = performance.now();
  const child = spawn(cmd, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    env: opts.env ? { ...process.env, ...opts.env } : process.env,
  });
  let serial = '';
  let partial = '';
  const at: Record<string, number> = {};
  const onData = (chunk: Buffer): void => {
    const s = chunk.toString('utf8');
    serial += s;
    partial += s;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl).replace(/\r+$/, '');
      partial = partial.slice(nl + 1);
      const i = line.indexOf('TAPD-GUEST ');
      if (i >= 0) {
        const kind = line.slice(i + 11).split(' ')[0];
        if (kind && at[kind] === undefined) at[kind] = Math.round(performance.now() - t0);
      }
      opts.onLine?.(line, child.pid!);
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  let timedOut = false;
  const killGroup = (sig: NodeJS.Signals): void => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, sig);
    } catch {
      // already gone
    }
  };
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup('SIGTERM');
    setTimeout(() => killGroup('SIGKILL'), 3000).unref();
  }, opts.timeoutMs ?? 120_000);
  return new Promise((resolve, reject) => {
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (exitCode, signal) => {
      clearTimeout(timer);
      // Whatever is left of the group (nothing, normally) goes too.
      killGroup('SIGKILL');
      resolve({
        serial,
        result: parseSerial(serial),
        at,
        exitCode,
        signal,
        timedOut,
        elapsedMs: Math.round(performance.now() - t0),
      });
    });
  });
}
