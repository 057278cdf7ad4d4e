import { TapdError } from './tapd-error.js';

/** An interface name or template the kernel must never see. */
export class InvalidNameError extends TapdError {
  constructor(message: string) {
    super('invalid_name', message);
  }
}
