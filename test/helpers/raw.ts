// Talking to tapd byte by byte, the way a hostile or broken client would.
import net from 'node:net';

export interface RawResult {
  /** Reply frames decoded as JSON (bodies). */
  replies: Array<Record<string, unknown>>;
  /** The daemon closed the connection. */
  closed: boolean;
}

export function frame(body: string | Buffer): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body) : body;
  const h = Buffer.alloc(4);
  h.writeUInt32BE(b.length, 0);
  return Buffer.concat([h, b]);
}

/** Connects, writes `chunks` (with `gapMs` between), collects replies until close, `waitMs`, or `replies` of them. */
export function raw(socket: string, chunks: Buffer[], opts: { gapMs?: number; waitMs?: number; endAfter?: boolean; replies?: number } = {}): Promise<RawResult> {
  return new Promise((resolve) => {
    const s = net.connect(socket);
    let buf = Buffer.alloc(0);
    const replies: Array<Record<string, unknown>> = [];
    let closed = false;
    const finish = () => {
      clearTimeout(timer);
      s.destroy();
      resolve({ replies, closed });
    };
    const timer = setTimeout(finish, opts.waitMs ?? 3000);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        const len = buf.readUInt32BE(0);
        replies.push(JSON.parse(buf.subarray(4, 4 + len).toString()) as Record<string, unknown>);
        buf = buf.subarray(4 + len);
      }
      if (opts.replies !== undefined && replies.length >= opts.replies) finish();
    });
    s.on('close', () => {
      closed = true;
      finish();
    });
    s.on('error', () => {});
    s.on('connect', async () => {
      for (const c of chunks) {
        if (s.destroyed) return;
        s.write(c);
        if (opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
      }
      if (opts.endAfter) s.end();
    });
  });
}

export function req(o: Record<string, unknown>): Buffer {
  return frame(JSON.stringify({ v: 1, ...o }));
}
