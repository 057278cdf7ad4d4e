#!/usr/bin/env -S node --jitless --no-expose-wasm --v8-pool-size=1 --max-semi-space-size=1
// tapd: the daemon. Runs in the foreground (systemd, or by hand for testing).
// The first line is the one place tapd's node flags live (install.sh's wrapper, the demo and the
// tests read them from here). --jitless: the daemon, which runs with CAP_NET_ADMIN, never maps
// memory writable and executable, so the service runs with MemoryDenyWriteExecute=yes; it also
// keeps RSS flat under load (no optimized code). It costs ~0.6-1 ms per open (interpreted JS;
// measured in docs/performance.md). The rest trims threads and the young generation.
import { Command, InvalidArgumentError, Option } from 'commander';
import { getgrnam } from '../common/accounts.js';
import { startDaemon } from '../daemon/main.js';
import { checkConfig, PolicyError } from '../daemon/policy/index.js';
import { formatProblem } from '../daemon/policy/problem.js';
import { VERSION } from '../version.js';

function octalMode(value: string): number {
  if (!/^0?[0-7]{3}$/.test(value)) throw new InvalidArgumentError('expected an octal mode such as 0660');
  return parseInt(value, 8);
}

function socketGid(name: string): number {
  const gid = getgrnam(name);
  if (gid === undefined) {
    process.stderr.write(`tapd: no group named ${name} (--socket-group)\n`);
    process.exit(1);
  }
  return gid;
}

const program = new Command('tapd')
  .description('The tapd daemon: hands out TAP devices to authorized local users over a Unix socket.')
  .version(VERSION)
  .option('--config <path>', 'policy and network configuration', '/etc/tapd/tapd.conf')
  .option('--socket <path>', 'Unix socket to bind (ignored under systemd socket activation)', '/run/tapd/tapd.sock')
  .option('--state-dir <dir>', 'where leases are recorded across restarts', '/run/tapd')
  .addOption(new Option('--log-level <level>', 'least severe level logged').choices(['fatal', 'error', 'warn', 'info', 'debug']).default('info'))
  .addOption(new Option('--log-format <format>', 'json (journald, programs), text (people), or auto: text on a terminal').choices(['auto', 'json', 'text']).default('auto'))
  .addOption(new Option('--socket-mode <mode>', 'mode of a socket tapd binds itself (access is decided by the policy)').argParser(octalMode).default(0o666, '0666'))
  .option('--socket-group <group>', 'group of a socket tapd binds itself')
  .option('--check-config', 'check the configuration and the hooks it names, print every problem as file:line:column, exit 0 or 1')
  .addHelpText('after', `
Examples:
  tapd --check-config --config /etc/tapd/tapd.conf
  tapd --config /etc/tapd/tapd.conf --socket /run/tapd/tapd.sock --state-dir /run/tapd

Everything tapd reads or runs (config, includes, ACL files, hooks, bridge scripts) and every
directory and symlink on the way to it must be owned by root (or tapd's own uid) and not
writable by group or others; a root-owned sticky directory such as /tmp only if what is in it
is root's. The state dir must be tapd's own (owned by its uid, mode 0700 or 0755): tapd refuses
to start otherwise. Never point --state-dir at a directory others can create in, such as /tmp.

Exit codes: 0 ok, 1 configuration or start-up error.`);

program.parse();
const opts = program.opts<{
  config: string; socket: string; stateDir: string; logLevel: string; logFormat: 'auto' | 'json' | 'text'; socketMode: number;
  socketGroup?: string; checkConfig?: boolean;
}>();

if (opts.checkConfig) {
  const result = checkConfig(opts.config, { strictHooks: true });
  // Like sshd -t: silence when the configuration is fine, every problem when it is not.
  for (const p of result.problems) process.stderr.write(`${p}\n`);
  process.exit(result.ok ? 0 : 1);
}

// No top-level await: the command is bundled as CommonJS (scripts/bundle.mjs).
void (async () => {
try {
  const daemon = await startDaemon({
    configPath: opts.config,
    socketPath: opts.socket,
    stateDir: opts.stateDir,
    logLevel: opts.logLevel,
    logFormat: opts.logFormat,
    socketMode: opts.socketMode,
    socketGid: opts.socketGroup === undefined ? undefined : socketGid(opts.socketGroup),
  });
  const stop = (signal: string) => {
    daemon.log.info({ event: 'signal', signal }, 'stopping');
    void daemon.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
} catch (err) {
  if (err instanceof PolicyError) {
    for (const p of err.problems) process.stderr.write(`${formatProblem(p)}\n`);
    process.stderr.write(`tapd: not starting: ${opts.config} has ${err.problems.length} problem(s); check it with tapd --check-config\n`);
  } else {
    process.stderr.write(`tapd: cannot start: ${(err as Error).message}\n`);
  }
  process.exit(1);
}
})();
