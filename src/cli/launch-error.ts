import { TapdError } from '../errors/tapd-error.js';

/**
 * tapctl could not start the emulator or command: 125 (tapctl itself failed), 126 (found but not
 * executable) or 127 (not found), the convention of env(1), timeout(1) and nice(1).
 */
export class LaunchError extends TapdError {
  readonly exitCode: 125 | 126 | 127;

  constructor(exitCode: 125 | 126 | 127, message: string, options?: { cause?: unknown }) {
    super('launch_failed', message, options);
    this.exitCode = exitCode;
  }
}
