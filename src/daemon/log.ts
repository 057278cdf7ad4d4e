import pino, { type Logger } from 'pino';

export type { Logger };

/**
 * pino JSON on stdout (journald under systemd). Fields are our own keys (event, uid, pid,
 * network, ifname, mac, result, reason, lease); a peer's raw message is never logged.
 */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { svc: 'tapd', pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
}
