import { TapdError } from '../errors/tapd-error.js';

/** What part of talking to Open vSwitch failed (for logs and tests; peers see only the code). */
export type OvsdbFailure =
  | 'connect' // the socket could not be reached, or it closed under us
  | 'timeout' // no reply in time
  | 'protocol' // the peer sent something that is not OVSDB JSON-RPC as we expect it
  | 'refused' // ovsdb-server answered with an error (bad request, constraint violation, ...)
  | 'bridge' // the named bridge is missing
  | 'port' // the port cannot be added (name taken) or ovs-vswitchd could not open it
  | 'ovn'; // ovn-controller did not install the port in time

/**
 * Every failure of src/daemon/ovsdb.ts. `message` says what failed and what to do; the database's
 * own words are kept in it (they are exact: "constraint violation", the column, the value), so
 * the daemon logs it whole and gives peers only the code.
 */
export class OvsdbError extends TapdError {
  readonly failure: OvsdbFailure;

  constructor(failure: OvsdbFailure, message: string, options?: { cause?: unknown }) {
    super('ovs_failed', message, options);
    this.failure = failure;
  }
}
