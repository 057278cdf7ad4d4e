// Where one request's time goes: each mark ends a step begun at the previous one, so the steps
// add up to the request's time in the daemon (from accept to the reply's sendmsg). One hrtime
// call per step; the open's lease_start record carries them as `steps_us`.

export class Steps {
  private last: bigint;
  /** Step name → microseconds, in the order the steps ran. */
  readonly us: Record<string, number> = {};

  /**
   * Starts now, or goes on from steps timed before (`done`, the last of them ending at `since`):
   * the server keeps an idle connection's accept step as two fields and makes its Steps when the
   * request comes.
   */
  constructor(since: bigint = process.hrtime.bigint(), done: Record<string, number> = {}) {
    this.last = since;
    Object.assign(this.us, done);
  }

  mark(step: string): void {
    const now = process.hrtime.bigint();
    this.us[step] = (this.us[step] ?? 0) + Number((now - this.last) / 1000n);
    this.last = now;
  }
}
