import type { ErrorCode } from './codes.js';

/**
 * The base of every error tapd raises on purpose. `code` is one of the closed set in codes.ts
 * (peer codes travel in protocol replies); `message` says what failed and what to do.
 */
export class TapdError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}
