/**
 * The base of every error tapd raises on purpose. `code` is stable and machine-readable
 * (it travels in protocol replies); `message` says what failed and what to do.
 */
export class TapdError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}
