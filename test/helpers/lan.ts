// The simulated LAN of scripts/lib/sandbox.sh, for vitest tests (needs root).
//
//   <prefix>-lan   lan0 198.18.0.1/24, dnsmasq (DHCP .100-.199, router .1), httpd :80
//        | veth
//   <prefix>-host  uplink0 198.18.0.2/24 (default via .1); with {bridge: true} uplink0 is
//                  enslaved to br0, which carries the address and route instead.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const SANDBOX_SH: string = fileURLToPath(new URL('../../scripts/lib/sandbox.sh', import.meta.url));

/** Addresses of the sandbox LAN (fixed: every sandbox is its own pair of namespaces). */
export const LAN_ROUTER = '198.18.0.1';
export const LAN_UPLINK_ADDR = '198.18.0.2';
export const LAN_DHCP_FIRST = '198.18.0.100';
export const LAN_DHCP_LAST = '198.18.0.199';
export const LAN_INDEX_FIRST_LINE = 'hello from the tapd sandbox LAN';

export interface Lan {
  prefix: string;
  /** `<prefix>-host`: the "host" with the uplink (and br0 when bridged). */
  hostNs: string;
  /** `<prefix>-lan`: the LAN side with dnsmasq and httpd. */
  lanNs: string;
  /** dnsmasq.leases, dnsmasq.log, www/, pid files. */
  stateDir: string;
  bridged: boolean;
  /** dnsmasq's lease file ("<expiry> <mac> <ip> <hostname> <client-id>" lines). */
  leases(): string;
  /** dnsmasq's log (with --log-dhcp). */
  dnsmasqLog(): string;
  /** Bridges the uplink now (sandbox_bridge_uplink), if not already. */
  bridge(): Promise<void>;
  /** Persistent TAP owned by uid in the host ns, up, enslaved to br0 if bridged. */
  addTap(name: string, uid: number, opts?: { multiQueue?: boolean }): Promise<void>;
  /** Runs a sandbox.sh function (or any bash) with the library sourced; resolves to stdout. */
  sh(script: string, ...args: string[]): Promise<string>;
  /**
   * argv that runs `argv` in namespace ns (default: hostNs) as uid:gid without privileges
   * (sandbox_exec_as: /dev/net/tun made world-rw in that command's own mount namespace only).
   */
  asUser(uid: number, gid: number, argv: string[], ns?: string): string[];
  /** Kills the sandbox's processes, deletes its namespaces and state dir. Idempotent. */
  stop(): Promise<void>;
}

/** Runs `script` in bash with sandbox.sh sourced; positional args are $1.. */
export function sandboxSh(script: string, ...args: string[]): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      'bash',
      ['-c', `set -o pipefail; source "$0" || exit 1; ${script}`, SANDBOX_SH, ...args],
      { encoding: 'utf8', timeout: 120_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`sandbox: ${script} failed: ${err.message}\n${stderr}`));
        } else {
          resolve({ stdout, stderr });
        }
      },
    );
  });
}

/**
 * Builds the sandbox LAN (sandbox_lan_up, plus sandbox_bridge_uplink with {bridge: true}).
 * A stale sandbox with the same prefix is torn down first; on failure nothing is left behind.
 */
export async function startLan(prefix: string, opts: { bridge?: boolean } = {}): Promise<Lan> {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$/.test(prefix)) throw new Error(`bad sandbox prefix: ${prefix}`);
  let stateDir: string;
  try {
    const { stdout } = await sandboxSh(
      'sandbox_lan_up "$1" || exit 1; if [ "$2" = 1 ]; then sandbox_bridge_uplink "$1" >&2 || exit 1; fi',
      prefix,
      opts.bridge ? '1' : '0',
    );
    stateDir = stdout.trim().split('\n').pop() ?? '';
    if (!stateDir) throw new Error('sandbox_lan_up printed no state dir');
  } catch (err) {
    await sandboxSh('sandbox_lan_down "$1"', prefix).catch(() => undefined);
    throw err;
  }
  const hostNs = `${prefix}-host`;
  let bridged = !!opts.bridge;
  let stopped = false;
  const readState = (name: string): string => {
    const p = `${stateDir}/${name}`;
    return existsSync(p) ? readFileSync(p, 'utf8') : '';
  };
  const lan: Lan = {
    prefix,
    hostNs,
    lanNs: `${prefix}-lan`,
    stateDir,
    get bridged() {
      return bridged;
    },
    leases: () => readState('dnsmasq.leases'),
    dnsmasqLog: () => readState('dnsmasq.log'),
    async bridge() {
      await sandboxSh('sandbox_bridge_uplink "$1"', prefix);
      bridged = true;
    },
    async addTap(name, uid, tapOpts = {}) {
      await sandboxSh('sandbox_tap_add "$@"', prefix, name, String(uid), ...(tapOpts.multiQueue ? ['multi_queue'] : []));
    },
    async sh(script, ...args) {
      return (await sandboxSh(script, ...args)).stdout;
    },
    asUser(uid, gid, argv, ns = hostNs) {
      return ['bash', '-c', 'source "$0" || exit 1; sandbox_exec_as "$@"', SANDBOX_SH, ns, String(uid), String(gid), ...argv];
    },
    async stop() {
      if (stopped) return;
      await sandboxSh('sandbox_lan_down "$1"', prefix);
      stopped = true;
    },
  };
  return lan;
}
