// Pure argv building for tapctl: NIC specs, QEMU's -netdev/-device pairs, the `-t FD` convention
// and the old `-redir` syntax. No I/O here, so every rule is unit-tested (test/tapctl-args.test.ts).
import { MAX_QUEUES, MAX_MTU, MIN_MTU, PORT_NAME_RE } from '../protocol/messages.js';
import { UsageError } from './usage-error.js';

export const DEFAULT_MODEL = 'virtio-net-pci';
/** What `-b` means when not given: QEMU's own default bridge name (tapd resolves bridge names too). */
export const DEFAULT_NETWORK = 'br0';
/** The first fd number a child sees its TAPs at (0, 1, 2 are stdio). */
export const FIRST_CHILD_FD = 3;

interface ModelInfo {
  virtio: boolean;
  /** A PCI device: has the `vectors` property multiqueue needs. */
  pci: boolean;
}

/** NIC models QEMU 7.2 (qemu-system-x86_64 -device help) offers for a netdev, by name. */
const MODELS: ReadonlyMap<string, ModelInfo> = new Map<string, ModelInfo>([
  ['virtio-net-pci', { virtio: true, pci: true }],
  ['virtio-net', { virtio: true, pci: true }],
  ['virtio-net-pci-non-transitional', { virtio: true, pci: true }],
  ['virtio-net-pci-transitional', { virtio: true, pci: true }],
  ['virtio-net-device', { virtio: true, pci: false }],
  ...['e1000', 'e1000-82540em', 'e1000-82544gc', 'e1000-82545em', 'e1000e', 'rtl8139', 'ne2k_pci', 'pcnet',
    'tulip', 'vmxnet3', 'i82550', 'i82551', 'i82557a', 'i82557b', 'i82557c', 'i82558a', 'i82558b', 'i82559a',
    'i82559b', 'i82559c', 'i82559er', 'i82562', 'i82801'].map((m): [string, ModelInfo] => [m, { virtio: false, pci: true }]),
  ...['ne2k_isa', 'usb-net'].map((m): [string, ModelInfo] => [m, { virtio: false, pci: false }]),
]);

export function knownModels(): string[] {
  return [...MODELS.keys()];
}

/** What we know of a model; one we do not list is passed through, judged by its name. */
function modelInfo(model: string): ModelInfo {
  return MODELS.get(model) ?? { virtio: model.startsWith('virtio-net'), pci: /pci/.test(model) };
}

export function isVirtioModel(model: string): boolean {
  return modelInfo(model).virtio;
}

/** One NIC as the user described it (flags or a --nic spec); unset fields take defaults. */
export interface NicOptions {
  network?: string;
  model?: string;
  mac?: string;
  mtu?: number;
  queues?: number;
  vhost?: boolean;
  vnetHdr?: boolean;
  id?: string;
  /** Extra -device properties, in order (dev.KEY=VALUE in --nic, --device-opt for the first NIC). */
  deviceProps?: [string, string][];
  /** ovs networks: the logical port (OVN iface-id) to bind. */
  port?: string;
}

/** One NIC with every default applied and every rule checked. */
export interface Nic {
  network: string;
  model: string;
  mac?: string;
  mtu?: number;
  queues: number;
  vhost: boolean;
  /** Whether the TAP is opened with IFF_VNET_HDR (QEMU probes the fd and follows it). */
  vnetHdr: boolean;
  id: string;
  deviceProps: [string, string][];
  port?: string;
}

const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
const ID_RE = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;
// A network, bridge or uplink NIC name: what an interface name may be (tapd checks the rest).
const NETWORK_RE = /^[A-Za-z0-9_.:@+-]{1,64}$/;

export function parseMac(value: string, where = '--mac'): string {
  if (!MAC_RE.test(value)) throw new UsageError(`${where}: "${value}" is not a MAC address like 52:54:00:12:34:56`);
  return value.toLowerCase();
}

export function parseIntIn(value: string, min: number, max: number, where: string): number {
  if (!/^\d{1,6}$/.test(value) || Number(value) < min || Number(value) > max) {
    throw new UsageError(`${where}: expected a whole number from ${min} to ${max}, got "${value}"`);
  }
  return Number(value);
}

export function parseQueues(value: string, where = '--queues'): number {
  return parseIntIn(value, 1, MAX_QUEUES, where);
}

export function parseMtu(value: string, where = '--mtu'): number {
  return parseIntIn(value, MIN_MTU, MAX_MTU, where);
}

// A QEMU driver name (qdev type names: letters, digits, - _ . ,); QEMU itself says whether it exists.
const MODEL_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** A NIC model: the ones `--model help` lists, or any other driver name, passed through to QEMU. */
export function parseModel(value: string, where = '--model'): string {
  if (!MODEL_RE.test(value)) {
    throw new UsageError(`${where}: "${value}" is not a QEMU device name (known NIC models: ${knownModels().join(', ')})`);
  }
  return value;
}

// -device properties tapctl writes itself: the user's would contradict the lease or the netdev.
const RESERVED_PROPS = new Set(['netdev', 'mac', 'mq', 'driver']);
const PROP_KEY_RE = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;
// QEMU's option syntax splits on commas (",," escapes one) and = ; keep values plain.
const PROP_VALUE_RE = /^[^,=\s]{1,256}$/;

/** One extra -device property, KEY=VALUE (`--device-opt`, or `dev.KEY=VALUE` in --nic). */
export function parseDeviceProp(spec: string, where = '--device-opt'): [string, string] {
  const eq = spec.indexOf('=');
  const key = eq < 0 ? spec : spec.slice(0, eq);
  const value = eq < 0 ? '' : spec.slice(eq + 1);
  if (!PROP_KEY_RE.test(key)) throw new UsageError(`${where}: "${key}" is not a QEMU property name`);
  if (RESERVED_PROPS.has(key)) {
    throw new UsageError(`${where}: tapctl sets "${key}" itself${key === 'mac' ? ' (use --mac or mac=)' : key === 'mq' ? ' (use --queues)' : ''}`);
  }
  if (!PROP_VALUE_RE.test(value)) throw new UsageError(`${where}: ${key} needs a value without commas, blanks or "=" (${key}=VALUE)`);
  return [key, value];
}

export function parseId(value: string, where = '--id'): string {
  if (!ID_RE.test(value)) {
    throw new UsageError(`${where}: "${value}" is not a QEMU id (a letter, then letters, digits, _ . -)`);
  }
  return value;
}

export function parseNetwork(value: string, where = '-b'): string {
  if (!NETWORK_RE.test(value)) throw new UsageError(`${where}: "${value}" is not a network, bridge or interface name`);
  return value;
}

export function parseIfaceId(value: string, where = '--port'): string {
  if (!PORT_NAME_RE.test(value)) throw new UsageError(`${where}: "${value}" is not a logical port name (1 to 64 of A-Z a-z 0-9 _ . : @ + -)`);
  return value;
}

function parseOnOff(value: string, where: string): boolean {
  if (value === 'on' || value === 'yes' || value === 'true') return true;
  if (value === 'off' || value === 'no' || value === 'false') return false;
  throw new UsageError(`${where}: expected on or off, got "${value}"`);
}

/** The keys a --nic spec accepts, with their aliases. */
const NIC_KEYS: Record<string, keyof NicOptions> = {
  b: 'network', br: 'network', network: 'network',
  model: 'model', mac: 'mac', mtu: 'mtu', queues: 'queues',
  vhost: 'vhost', vnet_hdr: 'vnetHdr', id: 'id', port: 'port',
};

/**
 * `--nic b=NAME,model=MODEL,mac=MAC,queues=N,mtu=N,vhost=on,vnet_hdr=off,id=ID` (every key
 * optional, each at most once).
 */
export function parseNicSpec(spec: string): NicOptions {
  const out: NicOptions = {};
  const seen = new Set<string>();
  if (spec.trim() === '') throw new UsageError('--nic: empty spec; write e.g. --nic b=br0,model=e1000');
  for (const part of spec.split(',')) {
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? undefined : part.slice(eq + 1);
    if (key.startsWith('dev.')) {
      const prop = parseDeviceProp(part.slice(4), `--nic ${key}`);
      if (seen.has(key)) throw new UsageError(`--nic ${spec}: "${key}" given twice`);
      seen.add(key);
      (out.deviceProps ??= []).push(prop);
      continue;
    }
    const field = Object.hasOwn(NIC_KEYS, key) ? NIC_KEYS[key] : undefined;
    if (field === undefined) {
      throw new UsageError(`--nic ${spec}: unknown key "${key}" (expected b, model, mac, queues, mtu, vhost, vnet_hdr, id, port or dev.PROPERTY)`);
    }
    if (seen.has(field)) throw new UsageError(`--nic ${spec}: "${key}" given twice`);
    seen.add(field);
    if (value === undefined || value === '') {
      if (field === 'vhost' || field === 'vnetHdr') {
        out[field] = true;
        continue;
      }
      throw new UsageError(`--nic ${spec}: "${key}" needs a value (${key}=...)`);
    }
    const where = `--nic ${key}=`;
    switch (field) {
      case 'network': out.network = parseNetwork(value, where); break;
      case 'model': out.model = parseModel(value, where); break;
      case 'mac': out.mac = parseMac(value, where); break;
      case 'mtu': out.mtu = parseMtu(value, where); break;
      case 'queues': out.queues = parseQueues(value, where); break;
      case 'id': out.id = parseId(value, where); break;
      case 'port': out.port = parseIfaceId(value, where); break;
      case 'vhost': out.vhost = parseOnOff(value, where); break;
      case 'vnetHdr': out.vnetHdr = parseOnOff(value, where); break;
    }
  }
  return out;
}

function isEmpty(o: NicOptions): boolean {
  return Object.values(o).every((v) => v === undefined);
}

/** Applies defaults and the rules QEMU would otherwise reject late (or crash on). */
export function resolveNic(o: NicOptions, index: number, defaultNetwork = DEFAULT_NETWORK): Nic {
  const model = o.model ?? DEFAULT_MODEL;
  const info = modelInfo(model);
  const queues = o.queues ?? 1;
  const vhost = o.vhost ?? false;
  const what = index === 0 ? 'the first NIC' : `NIC ${index + 1}`;
  if (queues > 1 && !info.virtio) {
    throw new UsageError(`${what}: ${queues} queues need a virtio model (${model} has one queue); drop --queues or use virtio-net-pci`);
  }
  if (vhost && !info.virtio) throw new UsageError(`${what}: vhost-net works with virtio models only, not ${model}`);
  if (vhost && o.vnetHdr === false) throw new UsageError(`${what}: vhost-net needs the virtio-net header; drop vnet_hdr=off`);
  // virtio models use the header (checksum and segmentation offload); others gain nothing from it.
  const vnetHdr = o.vnetHdr ?? (info.virtio || vhost);
  const nic: Nic = { network: o.network ?? defaultNetwork, model, queues, vhost, vnetHdr, id: o.id ?? `net${index}`, deviceProps: o.deviceProps ?? [] };
  if (o.mac !== undefined) nic.mac = o.mac;
  if (o.mtu !== undefined) nic.mtu = o.mtu;
  if (o.port !== undefined) nic.port = o.port;
  return nic;
}

/**
 * The NICs of one command line: the one the plain flags describe (unless only --nic specs were
 * given), then each --nic in order. Ids and explicit MACs must be distinct.
 */
export function resolveNics(primary: NicOptions, specs: NicOptions[], defaultNetwork = DEFAULT_NETWORK): Nic[] {
  const all = specs.length > 0 && isEmpty(primary) ? specs : [primary, ...specs];
  const nics = all.map((o, i) => resolveNic(o, i, defaultNetwork));
  const ids = new Set<string>();
  const macs = new Set<string>();
  for (const n of nics) {
    if (ids.has(n.id)) throw new UsageError(`two NICs have id ${n.id}; give each --nic its own id=`);
    ids.add(n.id);
    if (n.mac !== undefined) {
      if (macs.has(n.mac)) throw new UsageError(`two NICs ask for MAC ${n.mac}`);
      macs.add(n.mac);
    }
  }
  const total = nics.reduce((s, n) => s + n.queues, 0);
  if (total > 64) throw new UsageError(`${total} TAP fds in all is too many (at most 64)`);
  return nics;
}

/** The body of the `open` request for one NIC (client WireRequest fields, op aside); `check` sends the same. */
export function openRequest(nic: Nic, asUid?: number): {
  network: string; mac?: string; mtu?: number; queues: number; vnet_hdr: boolean; vhost: boolean; as_uid?: number; port?: string;
} {
  const req: ReturnType<typeof openRequest> = { network: nic.network, queues: nic.queues, vnet_hdr: nic.vnetHdr, vhost: nic.vhost };
  if (nic.mac !== undefined) req.mac = nic.mac;
  if (nic.mtu !== undefined) req.mtu = nic.mtu;
  if (asUid !== undefined) req.as_uid = asUid;
  if (nic.port !== undefined) req.port = nic.port;
  return req;
}

/** Child fd numbers, NIC by NIC: [[3], [4, 5, 6, 7], ...]. */
export function assignChildFds(queues: readonly number[], first = FIRST_CHILD_FD): number[][] {
  let next = first;
  return queues.map((q) => Array.from({ length: q }, () => next++));
}

/** A NIC whose TAP tapd granted: the MAC tapd chose or confirmed, and where the child finds the fds. */
export interface Granted {
  nic: Nic;
  mac: string;
  childFds: number[];
}

/**
 * `-netdev tap,...` and `-device MODEL,...` for one granted NIC.
 *
 * QEMU 7.2 refuses vnet_hdr= next to fd=/fds= ("... are invalid with fd="): it probes the fd
 * (TUNGETIFF) and uses the header exactly when the TAP was opened with IFF_VNET_HDR. So the
 * header is decided when tapd opens the TAP and is never written here.
 */
export function tapNicArgs(g: Granted): string[] {
  const { nic } = g;
  if (g.childFds.length !== nic.queues || nic.queues < 1) {
    throw new RangeError(`NIC ${nic.id}: ${nic.queues} queues but ${g.childFds.length} fds`);
  }
  let netdev = `tap,id=${nic.id},`;
  netdev += nic.queues === 1 ? `fd=${g.childFds[0]}` : `fds=${g.childFds.join(':')}`;
  if (nic.vhost) netdev += ',vhost=on';
  const props: [string, string][] = [['netdev', nic.id], ['mac', g.mac]];
  if (nic.queues > 1) {
    // One rx and one tx vector per queue pair, one for config changes, one for the control vq.
    props.push(['mq', 'on']);
    if (modelInfo(nic.model).pci) props.push(['vectors', String(2 * nic.queues + 2)]);
  }
  if (nic.mtu !== undefined && isVirtioModel(nic.model)) props.push(['host_mtu', String(nic.mtu)]);
  // The user's properties last; one we also set (vectors, host_mtu) replaces ours in place.
  for (const [k, v] of nic.deviceProps) {
    const i = props.findIndex(([key]) => key === k);
    if (i >= 0) props[i] = [k, v];
    else props.push([k, v]);
  }
  return ['-netdev', netdev, '-device', [nic.model, ...props.map(([k, v]) => `${k}=${v}`)].join(',')];
}

/** The emulator's whole argv (without argv[0]): our NICs first, then the user's arguments. */
export function qemuArgv(granted: readonly Granted[], userArgs: readonly string[]): string[] {
  return [...granted.flatMap(tapNicArgs), ...userArgs];
}

/**
 * `tapctl run`: `CMD -t FD ARGS...`, one `-t` per NIC; a multiqueue TAP is `-t 3:4:5:6`
 * (the form QEMU's fds= takes).
 */
export function runArgv(granted: readonly Granted[], userArgs: readonly string[]): string[] {
  return [...granted.flatMap((g) => ['-t', g.childFds.join(':')]), ...userArgs];
}

export interface Redir {
  proto: 'tcp' | 'udp';
  hostPort: number;
  guestAddr: string;
  guestPort: number;
}

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/**
 * QEMU's removed `-redir [tcp|udp]:hostport:[guestaddr]:guestport`: four fields, the protocol
 * (default tcp) and guest address may be empty, the colons may not.
 */
export function parseRedir(spec: string): Redir {
  const usage = `--redir ${spec}: expected [tcp|udp]:HOSTPORT:[GUESTADDR]:GUESTPORT, e.g. tcp:5022::22`;
  const f = spec.split(':');
  if (f.length !== 4) throw new UsageError(usage);
  const [proto, host, addr, guest] = f as [string, string, string, string];
  if (proto !== '' && proto !== 'tcp' && proto !== 'udp') {
    throw new UsageError(`--redir ${spec}: protocol must be tcp or udp, not "${proto}"`);
  }
  if (addr !== '' && !IPV4_RE.test(addr)) throw new UsageError(`--redir ${spec}: "${addr}" is not an IPv4 address`);
  return {
    proto: proto === 'udp' ? 'udp' : 'tcp',
    hostPort: parseIntIn(host, 1, 65535, `--redir ${spec}: host port`),
    guestAddr: addr,
    guestPort: parseIntIn(guest, 1, 65535, `--redir ${spec}: guest port`),
  };
}

/** `-redir` → `hostfwd=[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport` (host address empty, as -redir bound). */
export function translateRedir(spec: string): string {
  const r = parseRedir(spec);
  return `hostfwd=${r.proto}::${r.hostPort}-${r.guestAddr}:${r.guestPort}`;
}

/** `tapctl qemu --user-net`: QEMU's own user-mode network, no TAP, no tapd. */
export function userNetArgs(nic: { id: string; model: string; mac?: string; deviceProps?: [string, string][] }, redirs: readonly string[]): string[] {
  const netdev = [`user,id=${nic.id}`, ...redirs.map(translateRedir)].join(',');
  let device = `${nic.model},netdev=${nic.id}`;
  if (nic.mac !== undefined) device += `,mac=${nic.mac}`;
  for (const [k, v] of nic.deviceProps ?? []) device += `,${k}=${v}`;
  return ['-netdev', netdev, '-device', device];
}
