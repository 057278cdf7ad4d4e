// The policy module: /etc/tapd/tapd.conf in, a Policy out. See docs/policy.md.
import { compile } from './policy.js';
import { parseConfig, type ParseOptions } from './parser.js';
import { PolicyError } from './policy-error.js';
import { formatProblem } from './problem.js';
import type { Policy } from './types.js';

export { PolicyError } from './policy-error.js';
export { DEFAULT_DENY_REASON } from './policy.js';
export { DEFAULT_LIMITS } from './parser.js';
export type { Problem } from './problem.js';
export type * from './types.js';

export interface LoadOptions {
  /** Check that every file and directory is root-owned and not group/other-writable (default true). */
  checkOwnership?: boolean;
  /** Also refuse hooks that are missing or untrusted themselves (tapd --check-config); load checks the path to them. */
  strictHooks?: boolean;
  /** Where user names are looked up (default: NSS). For tests. */
  passwdFile?: string;
  /** Where group names are looked up (default: NSS). For tests. */
  groupFile?: string;
}

function parse(path: string, opts: LoadOptions = {}): { policy: Policy; problems: ReturnType<typeof parseConfig>['problems'] } {
  const o: ParseOptions = {
    checkOwnership: opts.checkOwnership ?? true,
    strictHooks: opts.strictHooks ?? false,
    // Without files: NSS (libc), as every other program on the host sees its users.
    ...(opts.passwdFile === undefined ? {} : { passwdFile: opts.passwdFile }),
    ...(opts.groupFile === undefined ? {} : { groupFile: opts.groupFile }),
  };
  const { config, problems } = parseConfig(path, o);
  const policy = compile(config, problems);
  return { policy, problems };
}

/**
 * Reads, checks and parses a tapd.conf (and what it includes). Throws PolicyError listing every
 * problem found, each as file:line:column; never returns a partial policy.
 */
export function loadPolicy(path: string, opts?: LoadOptions): Policy {
  const { policy, problems } = parse(path, opts);
  if (problems.length > 0) throw new PolicyError(problems);
  return policy;
}

/** For `tapd --check-config`: every problem, formatted `file:line:column: message`. */
export function checkConfig(path: string, opts?: LoadOptions): { ok: boolean; problems: string[] } {
  const { problems } = parse(path, opts);
  return { ok: problems.length === 0, problems: problems.map(formatProblem) };
}
