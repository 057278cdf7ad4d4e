// A tapd client that holds its lease: uid 65534 runs test/fixtures/client.mjs, which opens, runs
// the `after` steps, then keeps its fds until told to exit (or killed).
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { expect } from 'vitest';
import { NOBODY, ROOT, until, type Netns } from './netns.js';

export interface Opened {
  ok: boolean;
  code?: string;
  message?: string;
  fds?: number;
  body: { lease: { ifname: string; id: string; ifindex: number; mac: string; kind?: string; vlan?: number; bridge: string | null } };
}

const live = new Set<ChildProcess>();

export class Holder {
  readonly proc: ChildProcess;
  private out = '';

  constructor(ns: Netns, socket: string, request: Record<string, unknown>, after: unknown[] = []) {
    this.proc = spawn('ip', ['netns', 'exec', ns.name, 'setpriv', '--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups', '--',
      'node', path.join(ROOT, 'test/fixtures/client.mjs'), socket, JSON.stringify([{ op: 'open', ...request }, ...after, { wait: true }])], { stdio: ['pipe', 'pipe', 'inherit'] });
    live.add(this.proc);
    this.proc.once('exit', () => live.delete(this.proc));
    this.proc.stdout!.on('data', (d: Buffer) => (this.out += d.toString()));
  }

  lines(): Array<Record<string, unknown>> {
    return this.out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  /** Every line, once the client holds (or has exited). */
  async ready(): Promise<Array<Record<string, unknown>>> {
    await until(() => this.out.includes('"ready":true') || this.proc.exitCode !== null, 15_000);
    return this.lines();
  }

  /** The open's reply; with `steps`, once that many `after` steps answered too. */
  async opened(steps?: number): Promise<Opened> {
    if (steps === undefined) {
      await until(() => this.out.includes('\n'), 15_000);
    } else {
      await this.ready();
      expect(this.lines().length).toBe(steps + 2);
    }
    return this.lines()[0] as unknown as Opened;
  }

  async exit(): Promise<void> {
    this.proc.stdin!.end('\n');
    if (this.proc.exitCode === null) await new Promise((r) => this.proc.once('exit', r));
  }

  async kill9(): Promise<void> {
    this.proc.kill('SIGKILL');
    if (this.proc.exitCode === null && this.proc.signalCode === null) await new Promise((r) => this.proc.once('exit', r));
  }
}

/** Ends every holder still running (a failed test's), by pid. */
export async function endHolders(): Promise<void> {
  for (const p of live) {
    p.kill('SIGKILL');
    await new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r(null) : p.once('exit', r)));
  }
}
