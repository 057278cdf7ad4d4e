// src/sys/link-watch.ts against the kernel, in a namespace of our own: both ways of reading
// (libuv polling the socket on the event loop, and the worker-thread fallback) see a device
// go, and an overflowed socket is re-subscribed and reported, so the daemon's sweep runs and
// no later event is missed. A probe process in the namespace runs the watch and prints JSON.
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DIST, Netns, tempDir } from '../helpers/netns.js';

let ns: Netns;
let dir: string;
beforeAll(() => {
  ns = Netns.create('lw');
  dir = tempDir('lw');
});
afterAll(() => {
  ns?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/**
 * Starts a LinkWatch in the namespace, optionally floods it while the event loop is blocked (so
 * the kernel cannot deliver), then adds and deletes one bridge, and reports what it saw.
 */
function probe(opts: { thread?: boolean; rcvbuf?: number; flood?: number }): {
  mode: string; overflows: string[]; goneMarker: boolean; tunOrChanged: number; errors: string[];
} {
  const script = `
    import { spawnSync } from 'node:child_process';
    import { LinkWatch } from ${JSON.stringify(path.join(DIST, 'sys/link-watch.js'))};
    const ip = (...a) => { const r = spawnSync('ip', a, { encoding: 'utf8' }); if (r.status !== 0) throw new Error(r.stderr); return r.stdout; };
    const opts = ${JSON.stringify(opts)};
    const w = new LinkWatch({ thread: opts.thread, rcvbuf: opts.rcvbuf });
    const seen = { mode: '', overflows: [], gone: new Set(), tunOrChanged: 0, errors: [] };
    w.on('gone', (i) => seen.gone.add(i));
    w.on('tun', () => seen.tunOrChanged++);
    w.on('changed', () => seen.tunOrChanged++);
    w.on('overflow', (why) => seen.overflows.push(why));
    w.on('error', (e) => seen.errors.push(String(e)));
    w.start();
    seen.mode = w.mode;
    const tick = () => new Promise((r) => setTimeout(r, 50));
    if (opts.flood) {
      // spawnSync blocks the event loop: nothing reads the socket while the kernel fills it.
      const cmds = [];
      for (let i = 0; i < opts.flood; i++) cmds.push('link add fl' + i + ' type bridge', 'link del fl' + i);
      spawnSync('ip', ['-batch', '-'], { input: cmds.join('\\n') + '\\n' });
      for (let i = 0; i < 40 && seen.overflows.length === 0; i++) await tick();
    }
    await tick();
    ip('link', 'add', 'marker0', 'type', 'bridge');
    const ifindex = Number(JSON.parse(ip('-j', 'link', 'show', 'marker0'))[0].ifindex);
    ip('link', 'del', 'marker0');
    for (let i = 0; i < 100 && !seen.gone.has(ifindex); i++) await tick();
    await w.close();
    console.log(JSON.stringify({ mode: seen.mode, overflows: seen.overflows, goneMarker: seen.gone.has(ifindex), tunOrChanged: seen.tunOrChanged, errors: seen.errors }));
  `;
  // A file, not -e: the worker fallback inherits the process's execArgv.
  const file = path.join(dir, `probe-${Date.now()}-${Math.random().toString(16).slice(2)}.mjs`);
  writeFileSync(file, script);
  const r = ns.exec('node', [file]);
  if (r.status !== 0) throw new Error(`probe failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

it('on the event loop: a deleted device is reported by its ifindex', () => {
  const r = probe({});
  expect(r).toMatchObject({ mode: 'event-loop', overflows: [], goneMarker: true, errors: [] });
});

it('on the worker fallback: a deleted device is reported by its ifindex, and close() ends the worker', () => {
  const r = probe({ thread: true });
  expect(r).toMatchObject({ mode: 'worker', overflows: [], goneMarker: true, errors: [] });
});

it('an overflowed socket (events dropped by the kernel) is reported and re-subscribed: later events still arrive', () => {
  // A tiny buffer and 60 devices made and deleted while nobody reads: the kernel drops events (ENOBUFS).
  const r = probe({ rcvbuf: 4096, flood: 60 });
  expect(r.mode).toBe('event-loop');
  expect(r.errors).toEqual([]);
  expect(r.overflows.length).toBeGreaterThanOrEqual(1);
  expect(r.overflows[0]).toMatch(/ENOBUFS|No buffer space/i);
  expect(r.goneMarker).toBe(true);
});
