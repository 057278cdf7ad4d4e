// Loading the native boundary: on glibc, ffi-rs gets its glibc-or-musl answer without the
// ~7 ms process.report.getReport() it would otherwise make at every process start, and the
// real getReport is back afterwards. Runs the built dist/ in a fresh node.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { expect, it } from 'vitest';
import { DIST } from '../helpers/netns.js';

const built = path.join(DIST, 'sys/libc.js');

it('loading src/sys/libc on glibc calls no process.report.getReport, and restores it', () => {
  const probe = `
    let calls = 0;
    const real = process.report.getReport;
    process.report.getReport = function (...a) { calls++; return real.apply(this, a); };
    const before = process.report.getReport;
    const libc = await import(${JSON.stringify(built)});
    if (typeof libc.sysClose !== 'function') throw new Error('libc has no sysClose');
    console.log(JSON.stringify({ calls, restored: process.report.getReport === before }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', probe], { encoding: 'utf8' });
  expect(r.stderr).toBe('');
  expect(JSON.parse(r.stdout)).toEqual({ calls: 0, restored: true });
});
