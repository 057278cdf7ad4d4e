#!/usr/bin/env node
// tapd-bridge-helper: a drop-in for qemu-bridge-helper that needs no setuid bit. QEMU runs it
// with one end of a socketpair as --fd=N and waits for exactly what qemu-bridge-helper's
// send_fd() sends: one byte (0) carrying one SCM_RIGHTS fd, the TAP. We get that TAP from tapd,
// as the user QEMU runs as, so tapd's policy decides (not a bridge.conf plus root).
import { fstatSync } from 'node:fs';
import { DEFAULT_SOCKET, openTapSync } from '../client/client.js';
import * as sys from '../sys/index.js';
import { HELPER_USAGE, parseHelperArgs } from './bridge-helper-args.js';
import { errorLine } from './exit-codes.js';
import { TapdError } from '../errors/tapd-error.js';

function main(argv: string[]): number {
  const args = parseHelperArgs(argv);
  if (args.help) {
    process.stdout.write(`${HELPER_USAGE}\n`);
    return 0;
  }
  let isSocket = false;
  try {
    isSocket = fstatSync(args.fd).isSocket();
  } catch {
    // not open: reported below
  }
  if (!isSocket) {
    throw new TapdError('usage', `--fd=${args.fd} is not an open socket; QEMU runs this helper itself (-netdev bridge,br=BR,helper=PATH)`);
  }
  const socket = args.socket ?? (process.env.TAPD_SOCKET || DEFAULT_SOCKET);
  let fds: number[] = [];
  try {
    try {
      fds = openTapSync(socket, { network: args.bridge, vnet_hdr: args.useVnet }).fds;
    } catch (err) {
      throw new TapdError('refused', `no TAP on ${args.bridge}: ${errorLine(err)}`, { cause: err });
    }
    const sent = sys.sendWithFds(args.fd, Buffer.from([0]), [fds[0]!], { action: `pass the TAP to QEMU on fd ${args.fd}` });
    if (sent !== 1) throw new TapdError('send_failed', `QEMU's socket took ${sent} bytes instead of 1`);
    return 0;
  } finally {
    // QEMU has its own copy now; ours would only keep the device alive after QEMU exits.
    sys.closeAll(fds);
    sys.closeFd(args.fd);
  }
}

let status: number;
try {
  status = main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`tapd-bridge-helper: ${errorLine(err)}\n`);
  status = 1;
}
process.exit(status);
