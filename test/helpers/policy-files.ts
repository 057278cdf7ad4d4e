// Config files for policy unit tests: written to a temp dir of the test file's own, read with the
// fixture passwd and group files, ownership checks off (the files are the test runner's).
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import type { LoadOptions } from '../../src/daemon/policy/index.js';
import { ROOT } from './netns.js';

const FIXTURES = join(ROOT, 'test/fixtures/policy');
export const POLICY_OPTS: LoadOptions = { passwdFile: join(FIXTURES, 'passwd'), groupFile: join(FIXTURES, 'group'), checkOwnership: false };

/** Call at the top of a test file: returns write(content) → the path of a new config file. */
export function policyFiles(prefix: string): (content: string) => string {
  let dir = '';
  let seq = 0;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), `tapd-${prefix}-`));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return (content) => {
    const p = join(dir, `t${++seq}.conf`);
    writeFileSync(p, content);
    chmodSync(p, 0o644);
    return p;
  };
}
