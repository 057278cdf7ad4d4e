/**
 * The base of every error tapd raises on purpose: `code` is a stable machine-readable word
 * (e.g. `config_invalid`) that travels in protocol replies; `message` is for humans and says
 * what failed and what to do. Subclasses live one per file (e.g. `policy/policy-error.ts`).
 *
 * The class itself is defined once, in src/errors/tapd-error.ts, and re-exported here so
 * that `instanceof TapdError` holds whichever path an error was imported from.
 */
export { TapdError } from '../errors/tapd-error.js';
