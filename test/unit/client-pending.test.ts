// The client library against a stand-in daemon on a real Unix socket: a `pending` frame moves
// the receive deadline to its timeout_ms plus a margin, and a reply that never comes is
// explained by what the daemon said it was waiting for.
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { request, type Pending } from '../../src/client/client.js';
import { encodeFrame } from '../../src/protocol/frame.js';

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

/** A server that answers the first request with `pending`, then after `replyAfterMs` (if given) with ok. */
function fakeDaemon(timeoutMs: number, replyAfterMs?: number): Promise<{ sock: string; requests: Record<string, unknown>[] }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tapd-client-'));
  const sock = path.join(dir, 's');
  const requests: Record<string, unknown>[] = [];
  const timers: NodeJS.Timeout[] = [];
  const server = net.createServer((c) => {
    c.once('data', (d) => {
      requests.push(JSON.parse(d.subarray(4).toString()) as Record<string, unknown>);
      c.write(encodeFrame({ v: 1, ok: true, pending: { waiting_for: "the network's up hook", timeout_ms: timeoutMs } }));
      if (replyAfterMs !== undefined) timers.push(setTimeout(() => c.end(encodeFrame({ v: 1, ok: true, allowed: true })), replyAfterMs));
    });
    c.on('error', () => {});
  });
  cleanup.push(() => {
    timers.forEach(clearTimeout);
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return new Promise((resolve) => server.listen(sock, () => resolve({ sock, requests })));
}

it('a pending frame extends the deadline past the client\'s own timeout', async () => {
  const d = await fakeDaemon(3000, 1200);
  const seen: Pending[] = [];
  const res = await request(d.sock, { op: 'check', network: 'lan', progress: true }, { timeoutMs: 300, onPending: (p) => seen.push(p) });
  expect(res.body).toMatchObject({ ok: true, allowed: true });
  expect(seen).toEqual([{ waiting_for: "the network's up hook", timeout_ms: 3000 }]);
  expect(d.requests[0]).toMatchObject({ v: 1, op: 'check', progress: true });
});

it('without a reply, the timeout says what tapd was still doing', async () => {
  const d = await fakeDaemon(1000);
  await expect(request(d.sock, { op: 'open', network: 'lan', progress: true }, { timeoutMs: 300 }))
    .rejects.toThrow(/^tapd is still running the network's up hook after 1 s, its limit; gave up waiting/);
}, 20_000);
