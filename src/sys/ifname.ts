import { InvalidNameError } from '../errors/invalid-name-error.js';
import { C } from './constants.js';

/** Why a string is not a valid interface name, or undefined when it is. */
export function ifNameProblem(name: string): string | undefined {
  if (typeof name !== 'string' || name.length === 0) return 'is empty';
  // Byte length, not UTF-16 length: the kernel counts bytes (IFNAMSIZ includes the NUL).
  if (Buffer.byteLength(name, 'utf8') > C.IFNAMSIZ - 1) return `is longer than ${C.IFNAMSIZ - 1} bytes`;
  if (name === '.' || name === '..') return 'is "." or ".."';
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) return 'may contain only A-Z a-z 0-9 _ . -';
  return undefined;
}

/**
 * An interface name checked once, then passed to the kernel byte for byte.
 * Reject, never truncate: CVE-2019-13164 was a 16-byte bridge name cut after the ACL check.
 */
export class IfName {
  private constructor(readonly value: string) {}

  static parse(name: string): IfName {
    const problem = ifNameProblem(name);
    if (problem !== undefined) {
      throw new InvalidNameError(`interface name ${JSON.stringify(name)} ${problem}`);
    }
    return new IfName(name);
  }

  /** Like parse, for templates handed to TUNSETIFF: exactly one `%d` allowed in an otherwise valid name. */
  static parseTemplate(template: string): IfName {
    const parts = template.split('%d');
    if (parts.length !== 2) throw new InvalidNameError(`name template ${JSON.stringify(template)} must contain exactly one %d`);
    const problem = ifNameProblem(parts.join('0'));
    if (problem !== undefined || Buffer.byteLength(template) > C.IFNAMSIZ - 1) {
      throw new InvalidNameError(`name template ${JSON.stringify(template)} ${problem ?? `is longer than ${C.IFNAMSIZ - 1} bytes`}`);
    }
    return new IfName(template);
  }

  toString(): string {
    return this.value;
  }
}
