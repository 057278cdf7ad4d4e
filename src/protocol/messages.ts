// The requests tapd understands, decoded strictly: unknown fields, wrong types and out-of-range
// values are errors that name the field. See docs/protocol.md.
import type { PeerErrorCode } from '../errors/codes.js';
import { TapdError } from '../errors/tapd-error.js';

export const PROTOCOL_VERSION = 1;
export const MAX_QUEUES = 16;
export const MIN_MTU = 68;
/** A TAP's largest MTU: the kernel's 65535 less the Ethernet header (tun.c, tun_net_initialize). */
export const MAX_MTU = 65521;
/** An OVN logical port name (iface-id) a client may ask for: what tapd writes to Open vSwitch. */
export const PORT_NAME_RE = /^[A-Za-z0-9_.:@+-]{1,64}$/;

export interface OpenRequest {
  op: 'open' | 'check';
  /** Network, bridge or uplink NIC name as the user typed it (`-b NAME`). */
  network: string;
  mac?: string;
  mtu?: number;
  queues: number;
  vnetHdr: boolean;
  vhost: boolean;
  /** Root only: open on behalf of this uid (sudo's SUDO_UID). */
  asUid?: number;
  /** ovs networks: the logical port (OVN iface-id) to bind the TAP to. */
  port?: string;
  /** The client reads `pending` frames (sent before a hook runs, with how long it may take). */
  progress: boolean;
  /**
   * The client is QEMU's bridge helper: the guest's MAC is QEMU's own (tapd's is only for the
   * TAP's host side) and the emulator is the helper's parent.
   */
  bridgeHelper: boolean;
}

export interface ListRequest {
  op: 'list';
  /** Admins only: just this uid's leases. */
  user?: number;
}

/** Admins only: end leases by id, by owner, by network (all given must match). */
export interface RevokeRequest {
  op: 'revoke';
  lease?: string;
  user?: number;
  network?: string;
}

export type Request =
  | OpenRequest
  | ListRequest
  | RevokeRequest
  | { op: 'networks' }
  | { op: 'status' }
  | { op: 'reload' };

type FieldKind = 'string' | 'int' | 'bool';
interface FieldSpec {
  kind: FieldKind;
  min?: number;
  max?: number;
  maxLength?: number;
  /** Strings only: the value must match, else `rule` is quoted. */
  pattern?: { re: RegExp; rule: string };
}

const OPEN_FIELDS: Record<string, FieldSpec> = {
  network: { kind: 'string', maxLength: 64 },
  mac: { kind: 'string', maxLength: 17 },
  mtu: { kind: 'int', min: MIN_MTU, max: MAX_MTU },
  queues: { kind: 'int', min: 1, max: MAX_QUEUES },
  vnet_hdr: { kind: 'bool' },
  vhost: { kind: 'bool' },
  as_uid: { kind: 'int', min: 0, max: 0xfffffffe },
  progress: { kind: 'bool' },
  bridge_helper: { kind: 'bool' },
  port: { kind: 'string', maxLength: 64, pattern: { re: PORT_NAME_RE, rule: '1 to 64 of A-Z a-z 0-9 _ . : @ + -' } },
};
const UID: FieldSpec = { kind: 'int', min: 0, max: 0xfffffffe };

const SCHEMAS: Record<string, { fields: Record<string, FieldSpec>; required: string[] }> = {
  open: { fields: OPEN_FIELDS, required: ['network'] },
  check: { fields: OPEN_FIELDS, required: ['network'] },
  list: { fields: { user: UID }, required: [] },
  revoke: { fields: { lease: { kind: 'string', maxLength: 16 }, user: UID, network: { kind: 'string', maxLength: 64 } }, required: [] },
  networks: { fields: {}, required: [] },
  status: { fields: {}, required: [] },
  reload: { fields: {}, required: [] },
};

function bad(message: string): TapdError {
  return new TapdError('bad_request', message);
}

function checkField(name: string, value: unknown, spec: FieldSpec): void {
  switch (spec.kind) {
    case 'string':
      if (typeof value !== 'string') throw bad(`field "${name}" must be a string`);
      if (spec.maxLength !== undefined && value.length > spec.maxLength) {
        throw bad(`field "${name}" is longer than ${spec.maxLength} characters`);
      }
      if (spec.pattern && !spec.pattern.re.test(value)) throw bad(`field "${name}" must be ${spec.pattern.rule}`);
      return;
    case 'bool':
      if (typeof value !== 'boolean') throw bad(`field "${name}" must be true or false`);
      return;
    case 'int':
      if (typeof value !== 'number' || !Number.isInteger(value)) throw bad(`field "${name}" must be an integer`);
      if ((spec.min !== undefined && value < spec.min) || (spec.max !== undefined && value > spec.max)) {
        throw bad(`field "${name}" must be between ${spec.min} and ${spec.max}, got ${value}`);
      }
  }
}

export function decodeRequest(msg: Record<string, unknown>): Request {
  if (msg.v !== PROTOCOL_VERSION) {
    throw new TapdError('bad_version', `protocol version must be ${PROTOCOL_VERSION}; upgrade the client or the daemon`);
  }
  if (typeof msg.op !== 'string' || !Object.hasOwn(SCHEMAS, msg.op)) {
    throw bad(`field "op" must be one of ${Object.keys(SCHEMAS).join(', ')}`);
  }
  const schema = SCHEMAS[msg.op]!;
  for (const [key, value] of Object.entries(msg)) {
    if (key === 'v' || key === 'op') continue;
    const spec = Object.hasOwn(schema.fields, key) ? schema.fields[key] : undefined;
    if (spec === undefined) throw bad(`unknown field "${key}" in ${msg.op} request`);
    checkField(key, value, spec);
  }
  for (const key of schema.required) {
    if (!Object.hasOwn(msg, key)) throw bad(`field "${key}" is required in ${msg.op} request`);
  }
  if (msg.op === 'open' || msg.op === 'check') {
    return {
      op: msg.op,
      network: msg.network as string,
      mac: msg.mac as string | undefined,
      mtu: msg.mtu as number | undefined,
      queues: (msg.queues as number | undefined) ?? 1,
      vnetHdr: (msg.vnet_hdr as boolean | undefined) ?? false,
      vhost: (msg.vhost as boolean | undefined) ?? false,
      asUid: msg.as_uid as number | undefined,
      ...(msg.port === undefined ? {} : { port: msg.port as string }),
      progress: (msg.progress as boolean | undefined) ?? false,
      bridgeHelper: (msg.bridge_helper as boolean | undefined) ?? false,
    };
  }
  if (msg.op === 'list') return msg.user === undefined ? { op: 'list' } : { op: 'list', user: msg.user as number };
  if (msg.op === 'revoke') {
    if (msg.lease === undefined && msg.user === undefined && msg.network === undefined) {
      throw bad('revoke needs at least one of "lease", "user", "network"');
    }
    const r: RevokeRequest = { op: 'revoke' };
    if (msg.lease !== undefined) r.lease = msg.lease as string;
    if (msg.user !== undefined) r.user = msg.user as number;
    if (msg.network !== undefined) r.network = msg.network as string;
    return r;
  }
  return { op: msg.op as 'networks' | 'status' | 'reload' };
}

/** A lease as the wire shows it. */
export interface LeaseInfo {
  id: string;
  ifname: string;
  ifindex: number;
  /** The guest's MAC; null when tapd does not know it (a bridge helper's lease: QEMU chose it). */
  mac: string | null;
  network: string;
  bridge: string | null;
  mtu: number;
  queues: number;
  vnet_hdr: boolean;
  owner_uid: number;
  pid: number;
  started: string;
  /** "tap" (a TAP device, default) or "macvtap" (fds of /dev/tapN; ifname is the macvtap device). */
  kind?: 'tap' | 'macvtap';
  /** The VLAN of the lease's bridge port, when its network has one. */
  vlan?: number;
  /** ovs networks: the logical port the lease binds. */
  port?: string;
}

export interface ErrorReply {
  v: 1;
  ok: false;
  error: { code: PeerErrorCode; message: string };
}

export function errorReply(code: PeerErrorCode, message: string): ErrorReply {
  return { v: PROTOCOL_VERSION, ok: false, error: { code, message } };
}
