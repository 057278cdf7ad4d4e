import { TapdError } from '../errors/tapd-error.js';

/**
 * The policy said no. `message` is safe for the peer (no existence oracle); `logReason` is the
 * whole story, for our log only.
 */
export class DeniedError extends TapdError {
  constructor(message: string, readonly logReason?: string) {
    super('denied', message);
  }
}
