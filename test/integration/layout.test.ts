// Every kernel number the TypeScript side hard-codes, checked against the C headers.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect, it } from 'vitest';
import { C, CMSG_LEN, CMSG_SPACE, LAYOUT } from '../../src/sys/constants.js';
import { ROOT } from '../helpers/netns.js';

it('constants.ts matches native/layout.c compiled against the system headers', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tapd-layout-'));
  try {
    const bin = path.join(dir, 'layout');
    execFileSync('gcc', ['-D_GNU_SOURCE', '-Wall', '-Werror', '-o', bin, path.join(ROOT, 'native/layout.c')]);
    const fromC = JSON.parse(execFileSync(bin, { encoding: 'utf8' })) as Record<string, number>;
    const fromTs: Record<string, number> = { ...C, ...LAYOUT, 'CMSG_LEN(0)': CMSG_LEN(0), 'CMSG_SPACE(4)': CMSG_SPACE(4) };
    // Same names on both sides: nothing unchecked, nothing missing.
    expect(Object.keys(fromTs).sort()).toEqual(Object.keys(fromC).sort());
    expect(fromTs).toEqual(fromC);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
