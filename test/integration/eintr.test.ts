// A signal while a client waits for tapd's reply. Client sockets have SO_RCVTIMEO/SO_SNDTIMEO,
// and on such sockets the kernel fails recvmsg/sendmsg/connect with EINTR whenever a handler
// runs, SA_RESTART or not (signal(7)). Node has handlers (SIGWINCH for a terminal, any
// process.on(signal), V8's SIGPROF under --cpu-prof), so an interrupted call must be made again:
// a terminal resized while tapctl waits for a polkit prompt must not fail the open.
import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { asUser, DIST, NOBODY, tempDir } from '../helpers/netns.js';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** The client, as uid 65534: connects, says `ready`, then one blocking (or threaded) receive. */
function client(socket: string, mode: 'sync' | 'async'): ChildProcess {
  const script = `
    import * as sys from ${JSON.stringify(path.join(DIST, 'sys/index.js'))};
    process.on('SIGUSR2', () => {});
    const fd = sys.connectUnix(${JSON.stringify(socket)}, 10000);
    process.stdout.write('ready\\n');
    try {
      const r = ${mode === 'sync' ? 'sys.recvWithFds' : 'await sys.recvWithFdsAsync'}(fd, 64, 1, { action: 'read reply' });
      process.stdout.write(JSON.stringify({ got: r.data.toString() }) + '\\n');
    } catch (e) {
      process.stdout.write(JSON.stringify({ error: e.message }) + '\\n');
    }`;
  const [cmd, ...args] = [...asUser({ uid: NOBODY }), process.execPath, '--input-type=module', '-e', script];
  return spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'inherit'] });
}

for (const mode of ['sync', 'async'] as const) {
  it(`a ${mode} receive on a socket with a timeout survives signals: it waits for the reply instead of failing with EINTR`, async () => {
    const dir = tempDir('eintr');
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const socket = path.join(dir, 'reply.sock');
    const server = net.createServer();
    cleanups.push(() => server.close());
    await new Promise<void>((r) => server.listen(socket, r));
    chownSync(socket, NOBODY, NOBODY);
    const conn = new Promise<net.Socket>((r) => server.once('connection', r));
    const proc = client(socket, mode);
    cleanups.push(() => proc.kill('SIGKILL'));
    let out = '';
    const line = (re: RegExp) => new Promise<string>((resolve, reject) => {
      const check = () => {
        const m = out.match(re);
        if (m) resolve(m[0]);
      };
      proc.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        check();
      });
      proc.once('exit', () => setImmediate(() => reject(new Error(`client exited; it said: ${out}`))));
      check();
    });
    const ready = line(/ready\n/);
    const peer = await conn;
    await ready;
    // 40 signals at 10 ms while it waits (the receive is running well before the first has
    // any effect: it is the next call after `ready`); then the reply.
    for (let i = 0; i < 40; i++) {
      proc.kill('SIGUSR2');
      await new Promise((r) => setTimeout(r, 10));
    }
    const result = line(/\{.*\}\n/);
    peer.end('reply');
    expect(JSON.parse(await result)).toEqual({ got: 'reply' });
  });
}
