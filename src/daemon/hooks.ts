// Admin-owned scripts run at lease start and end, in QEMU's convention: `script IFNAME`.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, judge, trustedOwners, walk } from '../common/trust.js';
import { TapdError } from '../errors/tapd-error.js';
import type { Logger } from './log.js';

const MAX_LOGGED_OUTPUT = 4096;

/**
 * What is wrong with a hook (or bridge script) path under the trust rule (src/common/trust.ts),
 * as sentences; empty when it is fine. `chain` judges only what leads to the script (directories
 * and symlinks: could someone other than root make this path name another file?) and lets it be
 * missing, as config load does; `full` also wants the script itself: an existing regular file
 * owned by root, not writable by group or others, executable, as run time and
 * `tapd --check-config` do.
 */
export function hookProblems(script: string, scope: 'chain' | 'full'): { problems: string[]; canonical: string } {
  const label = `hook ${script}`;
  if (!path.isAbsolute(script)) return { problems: [`${label} must be an absolute path`], canonical: script };
  const w = walk(script, { checkTarget: false, allowMissing: scope === 'chain' });
  const first = w.findings[0];
  if (first) {
    if (first.flaw === 'missing') return { problems: [`${label} does not exist (no ${first.path})`], canonical: w.path };
    return { problems: w.findings.map((f) => describe(f, label)), canonical: w.path };
  }
  const st = w.stat;
  if (scope === 'chain' || !st) return { problems: [], canonical: w.path };
  const shown = w.path === script ? label : `${label} (${w.path})`;
  if (!st.isFile()) return { problems: [`${shown} is not a regular file`], canonical: w.path };
  const problems: string[] = [];
  for (const f of judge(w.path, st)) {
    const owners = trustedOwners();
    if (f.flaw === 'owner') problems.push(`${shown} is not owned by root${owners.length > 1 ? ` or uid ${owners[1]}` : ''}; chown root ${w.path}`);
    else problems.push(`${shown} is writable by group or others; chmod go-w ${w.path}`);
  }
  if (!(st.mode & 0o111)) problems.push(`${shown} is not executable; chmod +x ${w.path}`);
  return { problems, canonical: w.path };
}

/**
 * Resolves a hook once and checks it under the trust rule; returns the canonical, symlink-free
 * path to execute. Every directory on that path is changeable only by root (or tapd), so
 * execve() of it reaches the file just checked: a symlink swapped by a user cannot redirect it.
 */
export function checkScriptTrusted(script: string): string {
  const { problems, canonical } = hookProblems(script, 'full');
  if (problems.length > 0) throw new TapdError('hook_untrusted', problems.join('; '));
  return canonical;
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
  let canonical: string;
  try {
    canonical = checkScriptTrusted(run.script); // again at every run: files change
  } catch (err) {
    log.error({ event: 'hook_refused', script: run.script, reason: (err as Error).message }, 'hook refused');
    throw err;
  }
  const env = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', ...run.env };
  const child = spawn(canonical, run.args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true, cwd: '/' });
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
    log.error({ ...fields, reason: result.spawnError.message }, 'hook could not start');
    throw new TapdError('hook_failed', `hook ${run.script} could not start`);
  }
  if (timedOut) {
    log.error(fields, 'hook timed out');
    throw new TapdError('hook_failed', `hook ${run.script} did not finish within ${run.timeoutMs} ms`);
  }
  if (result.code !== 0) {
    log.error(fields, 'hook failed');
    throw new TapdError('hook_failed', `hook ${run.script} exited with ${result.code ?? result.signal}`);
  }
  log.info(fields, 'hook ran');
}
