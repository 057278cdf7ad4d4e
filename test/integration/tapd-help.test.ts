// tapd --help, as a command: modes are shown the way they are written (octal).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { expect, it } from 'vitest';
import { DIST } from '../helpers/netns.js';

it('tapd --help shows the socket mode in octal', () => {
  const r = spawnSync('node', [path.join(DIST, 'cli/tapd.js'), '--help'], { encoding: 'utf8' });
  expect(r.status).toBe(0);
  expect(r.stdout.replace(/\s+/g, ' ')).toMatch(/--socket-mode <mode> .*\(default: 0666\)/);
});
