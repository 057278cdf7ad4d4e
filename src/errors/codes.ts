// The one closed set of error codes. Peer codes travel in replies and are documented in
// docs/protocol.md (a test keeps the two equal); local codes never leave the process that
// raised them: the daemon answers any of them `internal` and logs the real one at error.

/** Codes a peer may receive, with what they mean (docs/protocol.md lists the same). */
export const PEER_ERROR_CODES = [
  'bad_frame', 'frame_too_large', 'bad_request', 'bad_version',
  'denied', 'forbidden', 'quota', 'limit', 'busy',
  'invalid_mac', 'mac_in_use', 'mtu_too_small', 'port_in_use',
  'network_unavailable', 'hook_failed', 'not_found', 'config_invalid', 'internal',
] as const;

/** Codes that stay on the side that raised them (daemon start-up, kernel calls, the clients). */
export const LOCAL_ERROR_CODES = [
  'system_error', 'ovs_failed', 'state_invalid', 'state_untrusted', 'hook_untrusted', 'invalid_name', 'invalid_queues',
  'not_running', 'no_access', 'protocol', 'timeout', 'usage', 'launch_failed', 'refused', 'send_failed',
] as const;

export type PeerErrorCode = (typeof PEER_ERROR_CODES)[number];
export type ErrorCode = PeerErrorCode | (typeof LOCAL_ERROR_CODES)[number];

const peer = new Set<string>(PEER_ERROR_CODES);

export function isPeerErrorCode(code: string): code is PeerErrorCode {
  return peer.has(code);
}
