// The bench, end to end: `TAPD_BENCH_QUICK=1 bash scripts/bench.sh` writes every figure (a finite
// number each), prints the table, 64 clients at once get no errors, and nothing it made is left:
// its namespace, temp dirs, processes, /etc/qemu/bridge.conf as it was.
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, expect, it } from 'vitest';
import { ROOT, tempDir } from '../helpers/netns.js';
import { missingFigures, OPEN_STEPS, type BenchResults } from '../bench/report.js';

const run = promisify(execFile);
const BRIDGE_CONF = '/etc/qemu/bridge.conf';
const work = tempDir('benchtest');

afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Everything of a bench run's that could outlive it: namespaces, temp dirs, processes. */
function benchTraces(): string[] {
  const netns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith('tapd-bench-')).map((n) => `namespace ${n}`);
  const dirs = ['/tmp', '/dev/shm'].flatMap((d) => readdirSync(d).filter((f) => f.startsWith('tapd-bench-')).map((f) => `temp ${d}/${f}`));
  const procs = spawnSync('pgrep', ['-af', 'tapd-bench-'], { encoding: 'utf8' }).stdout.split('\n')
    .filter((l) => l && !l.includes('pgrep')).map((l) => `process ${l}`);
  return [...netns, ...dirs, ...procs];
}

const confBefore = () => (existsSync(BRIDGE_CONF) ? readFileSync(BRIDGE_CONF, 'utf8') : null);

it('a quick bench run writes every figure, prints the table and leaves nothing behind', async () => {
  const out = path.join(work, 'results.json');
  const before = benchTraces();
  const conf = confBefore();
  const r = await run('bash', ['scripts/bench.sh'], {
    cwd: ROOT, env: { ...process.env, TAPD_BENCH_QUICK: '1', TAPD_BENCH_OUT: out }, timeout: 150_000, maxBuffer: 16 << 20,
  });
  const ns = /== bench \(namespace (tapd-bench-\w+)\)/.exec(r.stdout)?.[1];
  expect(ns, r.stdout).toBeDefined();

  const results = JSON.parse(readFileSync(out, 'utf8')) as BenchResults;
  expect(missingFigures(results)).toEqual([]);
  expect(results.notes).toEqual([]);
  // The bench's config allows 128 connections per user, so its 64 clients (one uid) are all served.
  expect(results.concurrency['64']).toMatchObject({ clients: 64, errors: 0 });
  expect(results.scale.after_teardown).toEqual({ tun_devices_left: 0, list_leases: 0, fresh_open_ok: true });
  // Every idle connection was held to the end (request-timeout raised for the section), and then let go.
  const idle = results.idle_connections;
  expect(idle).toMatchObject({ connections: idle.connections_goal, connect_failed: 0, refused: 0, daemon_fds_after: idle.daemon_fds_before });
  // One fd each (the socket; no pidfd for a peer that has sent nothing), and a few probes at most.
  expect(idle.daemon_fds_with! - idle.daemon_fds_before!).toBeGreaterThanOrEqual(idle.connections);
  expect(idle.daemon_fds_with! - idle.daemon_fds_before!).toBeLessThan(idle.connections + 8);
  // The daemon logged steps_us for every tapd open of section 1.
  expect(Object.keys(results.open_breakdown_us)).toEqual([...OPEN_STEPS, 'daemon_total', 'client_total', 'client_minus_daemon']);
  expect(results.open_breakdown_us.daemon_total!.n).toBe(results.methods.tapd!.open_ms.n);
  for (const h of ['1. Open latency', '1b. Where a tapd open', '4. Concurrency', '6. Lease end', '7. Idle connections', `results in ${out}`]) expect(r.stdout).toContain(h);
  expect(r.stdout).not.toMatch(/this machine/i);

  expect(benchTraces().filter((t) => !before.includes(t))).toEqual([]);
  expect(benchTraces().join('\n')).not.toContain(ns!);
  expect(confBefore()).toBe(conf);
}, 180_000);
