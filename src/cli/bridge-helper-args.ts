// The command line QEMU gives a bridge helper (net/tap.c, net_bridge_run_helper):
//   HELPER --use-vnet --fd=N --br=BR            (helper= is a path: execv)
//   sh -c "HELPER ARGS --use-vnet --fd=N --br=BR" (helper= has a blank: extra words pass through;
//                                                 --br= is left out if ARGS already has one)
// Parsed strictly: anything else is an error, so a mistyped helper= string fails loudly.
import { UsageError } from './usage-error.js';

export interface HelperArgs {
  help: boolean;
  useVnet: boolean;
  /** QEMU's end of the socketpair. */
  fd: number;
  bridge: string;
  socket?: string;
}

const BRIDGE_RE = /^[A-Za-z0-9_.:@+-]{1,64}$/;

export const HELPER_USAGE = `Usage: tapd-bridge-helper [--use-vnet] --fd=N --br=BRIDGE [--socket=PATH]

QEMU's bridge helper, without setuid: asks tapd (as the user running QEMU) for a TAP on
BRIDGE (a tapd network, bridge or uplink NIC name) and hands it to QEMU on fd N.
QEMU runs it itself; use it as
  qemu-system-x86_64 -netdev bridge,id=n0,br=br0,helper=/usr/bin/tapd-bridge-helper \\
      -device virtio-net-pci,netdev=n0 ...
or with another tapd socket (a helper= with a blank runs through sh -c):
  -netdev "bridge,id=n0,br=br0,helper=/usr/bin/tapd-bridge-helper --socket=/run/tapd/tapd.sock"

  --use-vnet       open the TAP with the virtio-net header (QEMU always asks)
  --fd=N           the socket to send the TAP on (one byte and one SCM_RIGHTS fd)
  --br=BRIDGE      where to attach the TAP
  --socket=PATH    tapd's socket (default $TAPD_SOCKET, else /run/tapd/tapd.sock)

Exit status: 0 the TAP was sent, 1 it was not (the reason is on stderr; QEMU shows it).`;

export function parseHelperArgs(argv: readonly string[]): HelperArgs {
  let help = false;
  let useVnet = false;
  let fd: number | undefined;
  let bridge: string | undefined;
  let socket: string | undefined;
  const seen = new Set<string>();
  for (const arg of argv) {
    const eq = arg.indexOf('=');
    const name = eq < 0 ? arg : arg.slice(0, eq);
    const value = eq < 0 ? undefined : arg.slice(eq + 1);
    if (seen.has(name)) throw new UsageError(`${name} given twice`);
    seen.add(name);
    switch (name) {
      case '--help':
      case '-h':
        if (value !== undefined) throw new UsageError(`${name} takes no value`);
        help = true;
        break;
      case '--use-vnet':
        if (value !== undefined) throw new UsageError('--use-vnet takes no value');
        useVnet = true;
        break;
      case '--fd':
        if (value === undefined || !/^\d{1,9}$/.test(value)) throw new UsageError(`--fd=N needs a file descriptor number, got "${arg}"`);
        fd = Number(value);
        if (fd <= 2) throw new UsageError(`--fd=${fd} is standard input/output, not QEMU's socket`);
        break;
      case '--br':
        if (value === undefined || !BRIDGE_RE.test(value)) throw new UsageError(`--br=BRIDGE needs a bridge or network name, got "${arg}"`);
        bridge = value;
        break;
      case '--socket':
        if (value === undefined || value === '') throw new UsageError('--socket=PATH needs a path');
        socket = value;
        break;
      default:
        throw new UsageError(`unknown argument "${arg}" (expected --use-vnet, --fd=N, --br=BRIDGE, --socket=PATH or --help)`);
    }
  }
  if (help) return { help, useVnet, fd: fd ?? -1, bridge: bridge ?? '' };
  if (fd === undefined) throw new UsageError('missing --fd=N: QEMU runs this helper itself (-netdev bridge,br=BR,helper=PATH); see --help');
  if (bridge === undefined) throw new UsageError('missing --br=BRIDGE; see --help');
  const out: HelperArgs = { help, useVnet, fd, bridge };
  if (socket !== undefined) out.socket = socket;
  return out;
}
