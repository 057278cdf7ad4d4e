import { isPeerErrorCode } from '../errors/codes.js';
import { TapdError } from '../errors/tapd-error.js';

/** tapd answered with {error: {code, message}}; the message is written for the user. */
export class DaemonError extends TapdError {
  /** The code exactly as the daemon sent it (a newer daemon may send codes this client does not know). */
  readonly wireCode: string;

  constructor(wireCode: string, message: string) {
    super(isPeerErrorCode(wireCode) ? wireCode : 'protocol', message);
    this.wireCode = wireCode;
  }
}
