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

it('tapd refuses a log level it does not know, before it starts, and names the valid ones', () => {
  // The config path does not exist: were the level accepted, tapd would fail later on the config instead.
  const r = spawnSync('node', [path.join(DIST, 'cli/tapd.js'), '--log-level', 'verbose', '--config', '/nonexistent/tapd.conf'], { encoding: 'utf8' });
  expect(r.status).toBe(1);
  expect(r.stderr).toContain("argument 'verbose' is invalid");
  expect(r.stderr).toMatch(/fatal, error, warn, info, debug/);
  expect(r.stderr).not.toContain('tapd.conf');
});
