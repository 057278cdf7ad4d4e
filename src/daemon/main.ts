// Starting and stopping the daemon: socket (ours or systemd's), policy, lease table, link watch.
import { lstatSync, unlinkSync, chownSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ensureOwnDirectory } from '../common/trust.js';
import * as sys from '../sys/index.js';
import { TapdError } from '../errors/tapd-error.js';
import { encodeFrame } from '../protocol/frame.js';
import { errorReply } from '../protocol/messages.js';
import { serve } from './server.js';
import type { DaemonContext } from './context.js';
import { LeaseTable } from './leases.js';
import { watchLeases } from './reaper.js';
import { reconcileOvsPorts } from './ovs.js';
import { createLogger, flushLog, type LogFormat, type Logger } from './log.js';
import { polkitAllows } from './polkit.js';
import { loadPolicy, PolicyError } from './policy/index.js';
import { formatProblem } from './policy/problem.js';
import type { Policy } from './policy/types.js';
import { VERSION } from '../version.js';

export interface DaemonOptions {
  configPath: string;
  socketPath: string;
  stateDir: string;
  logLevel: string;
  /** json, text, or auto (text on a terminal). */
  logFormat?: LogFormat;
  /** Mode of a socket we bind ourselves (systemd's socket unit sets its own). */
  socketMode: number;
  /** Group of a socket we bind ourselves, if any. */
  socketGid?: number;
  /** Skip root-ownership checks of the config (tests only). */
  checkOwnership?: boolean;
}

export interface Daemon {
  log: Logger;
  close(): Promise<void>;
}

/** systemd socket activation: fd 3 when LISTEN_PID is us and LISTEN_FDS is 1. */
function activationFd(): number | undefined {
  if (process.env.LISTEN_PID !== String(process.pid) || process.env.LISTEN_FDS !== '1') return undefined;
  delete process.env.LISTEN_PID;
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_FDNAMES;
  // systemd passes it without FD_CLOEXEC; hooks must not inherit it.
  sys.fcntl(3, sys.C.F_SETFD, sys.C.FD_CLOEXEC, { action: 'mark the activation socket close-on-exec' });
  return 3;
}

/** Whether something accepts connections on this socket path. */
function listening(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

/** Before touching any state: refuse to run beside a live daemon; remove a dead one's socket. */
async function claimSocketPath(socketPath: string): Promise<void> {
  mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o755 });
  const st = lstatSync(socketPath, { throwIfNoEntry: false });
  if (!st?.isSocket()) return;
  if (await listening(socketPath)) throw new Error(`another tapd is already serving ${socketPath}`);
  unlinkSync(socketPath); // left by a daemon that did not exit cleanly
}

function listenOn(server: net.Server, opts: DaemonOptions, fd: number | undefined): Promise<'activated' | 'bound'> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    if (fd !== undefined) {
      server.listen({ fd }, () => resolve('activated'));
      return;
    }
    // The socket is created with 0777 & ~umask: setting the umask first leaves no window in which
    // it exists with looser permissions than configured.
    const old = process.umask(~opts.socketMode & 0o777);
    server.listen({ path: opts.socketPath, exclusive: true }, () => {
      process.umask(old);
      if (opts.socketGid !== undefined) chownSync(opts.socketPath, 0, opts.socketGid);
      resolve('bound');
    });
  });
}

/**
 * Under socket activation, a daemon that cannot start would leave its clients with ECONNRESET.
 * Instead, for a moment, answer what is queued on the socket with what happened and where to
 * look; then exit (systemd's start limit decides about the next try).
 */
async function answerBroken(fd: number, configPath: string): Promise<void> {
  const reply = encodeFrame(errorReply('config_invalid',
    `tapd cannot start: its configuration ${configPath} has errors; an admin can see them with \`tapd --check-config\` or \`journalctl -u tapd\``));
  const server = net.createServer((s) => {
    s.on('error', () => s.destroy());
    s.end(reply, () => s.destroy());
  });
  await new Promise<void>((resolve) => server.listen({ fd }, resolve));
  await new Promise((resolve) => setTimeout(resolve, 2000));
  await new Promise((resolve) => server.close(resolve));
}

export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  // Whatever fds we inherited beyond stdio must not reach the hooks.
  sys.closeOnExecAll();
  const fd = activationFd();
  if (fd === undefined) await claimSocketPath(opts.socketPath);
  // Before reading any state: the state dir must be ours alone (src/common/trust.ts), or we stop
  // here and say why; a directory someone else made first could feed us leases and links.
  const stateDir = ensureOwnDirectory(opts.stateDir);
  const log = createLogger(opts.logLevel, { format: opts.logFormat });
  const load = (): Policy => loadPolicy(opts.configPath, { checkOwnership: opts.checkOwnership ?? true });
  const leases = new LeaseTable(stateDir);
  let policy: Policy;
  try {
    policy = load();
  } catch (err) {
    if (fd !== undefined && err instanceof PolicyError) await answerBroken(fd, opts.configPath);
    throw err;
  }
  const ctx: DaemonContext = {
    policy,
    leases,
    log,
    startedAt: Date.now(),
    connections: { total: 0, byUid: new Map() },
    reload() {
      try {
        ctx.policy = load();
      } catch (err) {
        if (!(err instanceof PolicyError)) throw err;
        // One problem per line (PolicyError's message), and what the admin most needs to know.
        throw new TapdError('config_invalid', `${err.message}\nThe old policy stays in force.`, { cause: err });
      }
      log.info({ event: 'policy_reloaded', files: ctx.policy.files }, 'policy reloaded');
    },
    polkitAllows: (subject, action) => polkitAllows(subject, action),
  };
  const server = net.createServer({ pauseOnConnect: false });
  let lastActivity = Date.now();
  serve(server, ctx, () => (lastActivity = Date.now()));
  const watch = watchLeases(ctx);
  // Before the first open can start: lease ports on Open vSwitch whose lease is not live.
  await reconcileOvsPorts(ctx);
  const how = await listenOn(server, opts, fd);
  log.info({ event: 'started', version: VERSION, daemon_pid: process.pid, socket: how === 'activated' ? 'systemd' : opts.socketPath, leases: leases.all().length }, 'tapd ready');

  const onHup = () => {
    try {
      ctx.reload();
    } catch (err) {
      const problems = err instanceof PolicyError ? err.problems.map(formatProblem) : [(err as Error).message];
      log.error({ event: 'policy_reload_failed', problems }, 'reload failed; the old policy stays in force');
    }
  };
  process.on('SIGHUP', onHup);

  let idleTimer: NodeJS.Timeout | undefined;
  const closeAll = async () => {
    // Held until the last record is written: without it, a close step whose handle is unref'd
    // (the link watch) could let Node's loop drain and end the process before "tapd stopped".
    const keepAlive = setInterval(() => {}, 1000);
    process.off('SIGHUP', onHup);
    clearInterval(idleTimer);
    // Bounded: a close step that never calls back must not keep tapd from stopping.
    await within(new Promise<void>((resolve) => server.close(() => resolve())), 2000);
    await within(watch.close(), 2000);
    if (how === 'bound') {
      try {
        unlinkSync(opts.socketPath);
      } catch {
        // already gone
      }
    }
    log.info({ event: 'stopped' }, 'tapd stopped');
    await within(flushLog(log), 2000);
    clearInterval(keepAlive);
  };

  // Idle exit (socket activation starts us again): no lease, no connection, for idleExitMs.
  const idleMs = ctx.policy.limits.idleExitMs;
  if (idleMs > 0 && how === 'activated') {
    idleTimer = setInterval(() => {
      if (leases.size === 0 && ctx.connections.total === 0 && Date.now() - lastActivity >= idleMs) {
        log.info({ event: 'idle_exit' }, 'idle; exiting until the socket is used again');
        void closeAll().then(() => process.exit(0));
      }
    }, Math.min(idleMs, 1000));
  }
  return { log, close: closeAll };
}

/** Waits for `p`, or `ms` at most. */
function within(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]).finally(() => clearTimeout(timer));
}
