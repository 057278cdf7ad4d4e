import { TapdError } from './tapd-error.js';

/** A MAC address that is malformed or not allowed. */
export class InvalidMacError extends TapdError {
  constructor(message: string) {
    super('invalid_mac', message);
  }
}
