// Hot-plug into a running QEMU over its QMP socket: `tapctl attach` opens a lease and hands its
// fds to QEMU (getfd with SCM_RIGHTS, then netdev_add and device_add); `tapctl detach` removes
// the device and the netdev, which closes QEMU's fds and so ends the lease. QEMU's own error
// messages are shown as QEMU gave them.
import type { Command } from 'commander';
import { openTapSync } from '../client/client.js';
import { TapdError } from '../errors/tapd-error.js';
import type { LeaseInfo } from '../protocol/messages.js';
import { C } from '../sys/constants.js';
import { closeAll, recvWithFds, sendWithFds, type Received } from '../sys/fdpass.js';
import { closeFd, connectUnix } from '../sys/unix.js';
import { EXIT } from './exit-codes.js';
import { DEFAULT_MODEL, openRequest, parseId, parseMac, parseModel, parseQueues, resolveNic } from './qemu-args.js';

const QMP_TIMEOUT_MS = 10_000;
/** device_del only asks the guest; DEVICE_DELETED comes when it let go of the device. */
const UNPLUG_TIMEOUT_MS = 30_000;

type Json = Record<string, unknown>;

/** QEMU answered a command with an error: its class and its words. */
export class QmpError extends TapdError {
  constructor(readonly command: string, readonly errorClass: string, readonly desc: string) {
    super('refused', `QEMU refused ${command}: ${desc}`);
  }
}

/**
 * One QMP session on a Unix socket, synchronous (libc socket with receive timeouts; libuv never
 * reads it, so SCM_RIGHTS reach QEMU intact). Events are kept for waitEvent().
 */
export class Qmp {
  private buf = '';
  private readonly events: Json[] = [];
  private seq = 0;

  private constructor(private readonly fd: number, readonly path: string) {}

  static connect(path: string): Qmp {
    let fd: number;
    try {
      fd = connectUnix(path, QMP_TIMEOUT_MS);
    } catch (err) {
      throw new TapdError('refused', `cannot connect to QEMU's QMP socket ${path}: ${(err as Error).message}; start QEMU with -qmp unix:${path},server,wait=off`);
    }
    const q = new Qmp(fd, path);
    try {
      const greeting = q.readMessage(Date.now() + QMP_TIMEOUT_MS);
      if (!('QMP' in greeting)) throw new TapdError('protocol', `${path} did not greet like QMP`);
      q.execute('qmp_capabilities');
      return q;
    } catch (err) {
      q.close();
      throw err;
    }
  }

  close(): void {
    closeFd(this.fd);
  }

  private readMessage(deadline: number): Json {
    for (;;) {
      const nl = this.buf.indexOf('\n');
      if (nl >= 0) {
        const line = this.buf.slice(0, nl).trim();
        this.buf = this.buf.slice(nl + 1);
        if (line === '') continue;
        return JSON.parse(line) as Json;
      }
      if (Date.now() > deadline) throw new TapdError('timeout', `QEMU did not answer on ${this.path}`);
      let r: Received;
      try {
        r = recvWithFds(this.fd, 64 * 1024, 0, { action: `read QMP ${this.path}` });
      } catch (err) {
        if (err instanceof Error && 'errno' in err && (err as { errno: number }).errno === C.EAGAIN) continue;
        throw err;
      }
      if (r.length === 0) throw new TapdError('protocol', `QEMU closed ${this.path}`);
      this.buf += r.data.toString('utf8');
    }
  }

  /** Runs one command (with fds riding on it, for getfd) and returns its "return" value. */
  execute(command: string, args?: Json, fds: readonly number[] = []): unknown {
    const id = `tapctl-${++this.seq}`;
    const msg = Buffer.from(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    let off = sendWithFds(this.fd, msg, fds, { action: `send ${command} to QEMU` });
    while (off < msg.length) off += sendWithFds(this.fd, msg.subarray(off), [], { action: `send ${command} to QEMU` });
    const deadline = Date.now() + QMP_TIMEOUT_MS;
    for (;;) {
      const m = this.readMessage(deadline);
      if ('event' in m) {
        this.events.push(m);
        continue;
      }
      if (m.id !== id) continue;
      if ('error' in m) {
        const e = m.error as { class?: string; desc?: string };
        throw new QmpError(command, e.class ?? 'GenericError', e.desc ?? JSON.stringify(m.error));
      }
      return m.return;
    }
  }

  /** Waits for an event (seen before or arriving now) that `match` accepts. */
  waitEvent(name: string, match: (data: Json) => boolean, timeoutMs: number): Json | undefined {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.events.findIndex((e) => e.event === name && match((e.data ?? {}) as Json));
      if (i >= 0) return this.events.splice(i, 1)[0];
      if (Date.now() > deadline) return undefined;
      try {
        const m = this.readMessage(Math.min(deadline, Date.now() + 1000));
        if ('event' in m) this.events.push(m);
      } catch (err) {
        if (err instanceof TapdError && err.code === 'timeout') continue;
        throw err;
      }
    }
  }
}

export interface AttachOptions {
  qmp: string;
  network: string;
  model?: string;
  mac?: string;
  id?: string;
  queues?: string;
}

export interface Attached {
  id: string;
  lease: LeaseInfo;
}

/** Open a lease, give its fds to QEMU, add the netdev and the device. Undoes all of it on failure. */
export function attach(socket: string, o: AttachOptions): Attached {
  const nic = resolveNic({
    network: o.network,
    ...(o.model !== undefined ? { model: parseModel(o.model) } : {}),
    ...(o.mac !== undefined ? { mac: parseMac(o.mac) } : {}),
    ...(o.queues !== undefined ? { queues: parseQueues(o.queues) } : {}),
  }, 0);
  // Connect first: no lease for a QEMU that is not there.
  const qmp = Qmp.connect(o.qmp);
  let fds: number[] = [];
  const names: string[] = [];
  let netdevAdded = false;
  let id = o.id !== undefined ? parseId(o.id) : '';
  try {
    const opened = openTapSync(socket, openRequest(nic));
    fds = opened.fds;
    if (id === '') id = `tapd${opened.lease.id.slice(0, 8)}`;
    fds.forEach((fd, i) => {
      const name = `${id}-fd${i}`;
      qmp.execute('getfd', { fdname: name }, [fd]);
      names.push(name);
    });
    qmp.execute('netdev_add', { type: 'tap', id, ...(names.length === 1 ? { fd: names[0] } : { fds: names.join(':') }) });
    netdevAdded = true;
    // QEMU owns the named fds now (netdev_add took them out of its getfd list).
    names.length = 0;
    const device: Json = { driver: nic.model ?? DEFAULT_MODEL, id, netdev: id, mac: opened.lease.mac };
    if (nic.queues > 1) Object.assign(device, { mq: true, vectors: 2 * nic.queues + 2 });
    qmp.execute('device_add', device);
    return { id, lease: opened.lease };
  } catch (err) {
    if (netdevAdded) tryQmp(qmp, 'netdev_del', { id });
    for (const name of names) tryQmp(qmp, 'closefd', { fdname: name });
    throw err;
  } finally {
    // Ours: QEMU has its own copies; closing ours leaves QEMU the only holder.
    closeAll(fds);
    qmp.close();
  }
}

function tryQmp(qmp: Qmp, command: string, args: Json): void {
  try {
    qmp.execute(command, args);
  } catch {
    // best effort while undoing
  }
}

/** device_del, wait for the guest to let go (DEVICE_DELETED), netdev_del: QEMU closes the fds. */
export function detach(qmpPath: string, id: string): void {
  const qmp = Qmp.connect(qmpPath);
  try {
    qmp.execute('device_del', { id });
    const gone = qmp.waitEvent('DEVICE_DELETED', (d) => d.device === id, UNPLUG_TIMEOUT_MS);
    if (!gone) throw new TapdError('timeout', `the guest did not release device ${id} within ${UNPLUG_TIMEOUT_MS / 1000} s; the netdev (and the lease) stay`);
    qmp.execute('netdev_del', { id });
  } finally {
    qmp.close();
  }
}

/** Registers `attach` and `detach` on tapctl's program (the rest of tapctl stays as it is). */
export function registerHotplug(program: Command, act: <A extends unknown[]>(fn: (...a: A) => number | Promise<number>) => (...a: A) => Promise<void>,
  socketOf: (cmd: Command) => string, defaultNetwork: () => string): void {
  program.command('attach')
    .description('hot-plug a NIC into a running QEMU: a lease from tapd, its fds to QEMU over QMP, netdev_add + device_add')
    .requiredOption('--qmp <socket>', 'QEMU\'s QMP socket (QEMU started with -qmp unix:SOCKET,server,wait=off)')
    .option('-b, --network <name>', 'network to join (default $TAPD_NETWORK, else lan)')
    .option('--model <model>', `NIC model (default ${DEFAULT_MODEL})`)
    .option('--mac <mac>', 'the guest MAC (default: tapd picks one)')
    .option('--queues <n>', 'queues (virtio models)')
    .option('--id <id>', 'id of the netdev and the device (default tapd + 8 hex digits of the lease)')
    .addHelpText('after', `
Prints "attached ID ..." and the lease; the lease ends when the device is detached (tapctl detach)
or QEMU exits. Example:  tapctl attach --qmp /run/user/1000/vm.qmp -b lan --id nic1`)
    .action(act((o: AttachOptions & { network?: string }, cmd: Command) => {
      const r = attach(socketOf(cmd), { ...o, network: o.network ?? defaultNetwork() });
      process.stdout.write(`attached ${r.id}: ${r.lease.ifname} on ${r.lease.network}, MAC ${r.lease.mac}, lease ${r.lease.id}\n`);
      return EXIT.OK;
    }));
  program.command('detach')
    .description('hot-unplug a NIC that tapctl attach added: device_del, wait for the guest, netdev_del (the lease ends)')
    .requiredOption('--qmp <socket>', 'QEMU\'s QMP socket')
    .argument('<id>', 'the id tapctl attach printed')
    .action(act((id: string, o: { qmp: string }) => {
      detach(o.qmp, id);
      process.stdout.write(`detached ${id}\n`);
      return EXIT.OK;
    }));
}
