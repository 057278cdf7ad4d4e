import { TapdError } from '../errors/tapd-error.js';

/** tapd answered with {error: {code, message}}; the message is written for the user. */
export class DaemonError extends TapdError {}
