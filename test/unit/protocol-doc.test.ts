// docs/protocol.md's error code table lists exactly the codes a peer can receive.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import { PEER_ERROR_CODES } from '../../src/errors/codes.js';
import { ROOT } from '../helpers/netns.js';

it('the error code table equals PEER_ERROR_CODES, one row each, each with a meaning', () => {
  const doc = readFileSync(path.join(ROOT, 'docs/protocol.md'), 'utf8');
  const section = doc.slice(doc.indexOf('\n## Error codes'));
  expect(section.length).toBeGreaterThan(20);
  const rows = section.split('\n').filter((l) => /^\| `/.test(l)).map((l) => l.split('|').map((c) => c.trim()));
  const codes = rows.map((r) => r[1]!.match(/^`([a-z_]+)`$/)?.[1]);
  expect(codes.every((c) => c !== undefined)).toBe(true);
  expect(new Set(codes).size).toBe(codes.length);
  expect([...codes].sort()).toEqual([...PEER_ERROR_CODES].sort());
  for (const r of rows) expect(r[2]!.length).toBeGreaterThan(10);
});
