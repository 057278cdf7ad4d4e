import { TapdError } from '../errors/tapd-error.js';

/** The command line itself is wrong (bad option value, bad --nic spec, missing --). Exit status 1. */
export class UsageError extends TapdError {
  constructor(message: string) {
    super('usage', message);
  }
}
