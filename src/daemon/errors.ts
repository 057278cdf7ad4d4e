/**
 * The one base class of every error tapd raises on purpose.
 *
 * `code` is a stable machine-readable word (e.g. `config_invalid`) that the daemon may put on
 * the wire and scripts may match; `message` is for humans and says what failed and what to do.
 * Subclasses live one per file (e.g. `policy/policy-error.ts`).
 */
export class TapdError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}
