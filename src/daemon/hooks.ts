// Admin-owned scripts run at lease start and end, in QEMU's convention: `script IFNAME`.
import { spawn } from 'node:child_process';
import { lstatSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { TapdError } from '../errors/tapd-error.js';
import type { Logger } from './log.js';

const MAX_LOGGED_OUTPUT = 4096;

/**
 * The script and every directory above it must be owned by root and not writable by group or
 * others (root-owned sticky directories such as /tmp excepted): otherwise someone other than
 * root could choose what the daemon runs with CAP_NET_ADMIN.
 */
export function checkScriptTrusted(script: string): void {
  if (!path.isAbsolute(script)) throw new TapdError('hook_untrusted', `hook ${script} must be an absolute path`);
  const st = lstatSync(script, { throwIfNoEntry: false });
  if (!st) throw new TapdError('hook_untrusted', `hook ${script} does not exist`);
  if (!st.isFile()) throw new TapdError('hook_untrusted', `hook ${script} is not a regular file (symlinks are refused)`);
  if (st.uid !== 0) throw new TapdError('hook_untrusted', `hook ${script} is not owned by root; chown root ${script}`);
  if (st.mode & 0o022) throw new TapdError('hook_untrusted', `hook ${script} is writable by group or others; chmod go-w ${script}`);
  if (!(st.mode & 0o111)) throw new TapdError('hook_untrusted', `hook ${script} is not executable; chmod +x ${script}`);
  // Walk the real directories: a symlinked directory is only as safe as where it leads.
  for (let dir = realpathSync(path.dirname(script)); ; dir = path.dirname(dir)) {
    const d = statSync(dir);
    const sticky = (d.mode & 0o1000) !== 0;
    if (d.uid !== 0) throw new TapdError('hook_untrusted', `directory ${dir} of hook ${script} is not owned by root`);
    if (d.mode & 0o022 && !sticky) {
      throw new TapdError('hook_untrusted', `directory ${dir} of hook ${script} is writable by group or others`);
    }
    if (dir === '/') break;
  }
}

export interface HookRun {
  script: string;
  args: string[];
  /** TAPD_* variables; PATH is added. Nothing of the daemon's own environment is passed. */
  env: Record<string, string>;
  timeoutMs: number;
}

/**
 * Runs a hook with argv only (no shell), a fresh minimal environment, stdin from /dev/null,
 * stdout/stderr captured into the log, and no inherited fds (everything the daemon opens is
 * CLOEXEC). Killed, with its whole process group, after the timeout.
 */
export async function runHook(run: HookRun, log: Logger): Promise<void> {
  try {
    checkScriptTrusted(run.script);
  } catch (err) {
    log.error({ event: 'hook_refused', script: run.script, reason: (err as Error).message }, 'hook refused');
    throw err;
  }
  const env = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', ...run.env };
  const child = spawn(run.script, run.args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true, cwd: '/' });
  let output = '';
  const collect = (chunk: Buffer) => {
    if (output.length < MAX_LOGGED_OUTPUT) output += chunk.toString('utf8').slice(0, MAX_LOGGED_OUTPUT - output.length);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }, run.timeoutMs);
  const result = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; spawnError?: Error }>((resolve) => {
    child.once('error', (err) => resolve({ code: null, signal: null, spawnError: err }));
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  clearTimeout(timer);
  const fields = { event: 'hook', script: run.script, args: run.args, exit: result.code, signal: result.signal, output };
  if (result.spawnError) {
    log.warn({ ...fields, reason: result.spawnError.message }, 'hook could not start');
    throw new TapdError('hook_failed', `hook ${run.script} could not start`);
  }
  if (timedOut) {
    log.warn(fields, 'hook timed out');
    throw new TapdError('hook_failed', `hook ${run.script} did not finish within ${run.timeoutMs} ms`);
  }
  if (result.code !== 0) {
    log.warn(fields, 'hook failed');
    throw new TapdError('hook_failed', `hook ${run.script} exited with ${result.code ?? result.signal}`);
  }
  log.info(fields, 'hook ran');
}
