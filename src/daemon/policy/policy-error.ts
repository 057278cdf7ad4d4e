import { TapdError } from '../../errors/tapd-error.js';
import { formatProblem, type Problem } from './problem.js';

/** The configuration could not be loaded; `problems` lists every error found, not just the first. */
export class PolicyError extends TapdError {
  override readonly code = 'config_invalid';
  readonly problems: readonly Problem[];

  constructor(problems: readonly Problem[], options?: ErrorOptions) {
    const head = problems.length === 1 ? 'the tapd configuration has 1 error' : `the tapd configuration has ${problems.length} errors`;
    const lines = problems.map((p) => `  ${formatProblem(p)}`).join('\n');
    super('config_invalid', `${head}; fix it and check again with \`tapd --check-config\`:\n${lines}`, options);
    this.problems = problems;
  }
}
