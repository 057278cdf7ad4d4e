// The tapd.conf language: one statement per line, words separated by blanks, `#` to the end of
// the line is a comment. docs/policy.md has the grammar; keep the two in step.
import { realpathSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { Accounts, type AccountFiles } from './accounts.js';
import { ConfigFiles, tokenize, type Line, type Token } from './files.js';
import { IfName, ifNameProblem } from '../../sys/ifname.js';
import { MAX_MTU, MAX_QUEUES, MIN_MTU, PORT_NAME_RE } from '../../protocol/messages.js';
import { DEFAULT_OVSDB_SOCKET } from '../ovsdb.js';

/** The kernel layer's one interface-name rule: what the config accepts is what reaches the ioctl. */
const isValidIfName = (s: string): boolean => ifNameProblem(s) === undefined;
import type { Problem, Site } from './problem.js';
import type { DaemonLimits, Network, SourceRef } from './types.js';

/** Includes (and qemu-bridge-conf includes) nest at most this deep. */
export const MAX_INCLUDE_DEPTH = 16;

export const DEFAULT_LIMITS: Readonly<DaemonLimits> = Object.freeze({
  maxConnections: 256,
  maxConnectionsPerUser: 32,
  requestTimeoutMs: 5000,
  maxLeases: 1024,
  maxQueues: MAX_QUEUES,
  hookTimeoutMs: 10_000,
  idleExitMs: 0,
});

/** Whom a rule is about. Users and groups are resolved to ids when the file is loaded. */
export type SubjectSpec =
  | { kind: 'everyone' }
  | { kind: 'user'; id: number }
  | { kind: 'group'; id: number };

/** What a permit rule grants beyond "may open a TAP on this network". */
export interface RuleOptions {
  /** Concurrent leases per user on one network (`leases N`). */
  leases?: number;
  /** Concurrent leases per user on all networks (`total N`). */
  total?: number;
  /** Most queues per TAP (`queues N`, default 1). */
  queues: number;
  mac: boolean;
  mtu: boolean;
  vhost: boolean;
  polkit: boolean;
  /** ovs networks: logical ports the subject may bind (`ports P[,P...]`, a trailing `*` = prefix). */
  ports?: string[];
}

/** One line of a qemu-bridge-helper ACL file (includes already expanded). */
export interface AclEntry {
  allow: boolean;
  /** undefined for `allow all` / `deny all`. */
  bridge?: string;
  source: SourceRef;
  /** The line as written, e.g. `deny br0`. */
  text: string;
  /** Column of the argument. */
  column: number;
}

export interface RuleDecl {
  kind: 'permit' | 'deny' | 'qemu-bridge-conf';
  subject: SubjectSpec;
  /** permit/deny: the network after `on`, or 'any'. */
  target?: { name: string; site: Site } | 'any';
  /** qemu-bridge-conf: the ACL, in file order, includes expanded. */
  acl?: AclEntry[];
  options: RuleOptions;
  source: SourceRef;
  /** The statement as written, blanks collapsed, comment removed: used in explanations. */
  text: string;
}

export interface AdminDecl {
  subject: SubjectSpec;
  source: SourceRef;
}

export interface NetworkDecl {
  network: Network;
  /** Where the network's name is written. */
  site: Site;
}

export interface ParsedConfig {
  networks: NetworkDecl[];
  rules: RuleDecl[];
  admins: AdminDecl[];
  limits: DaemonLimits;
  files: string[];
}

export interface ParseOptions extends AccountFiles {
  checkOwnership: boolean;
  /** Hooks must exist and be right themselves, not only the path to them (tapd --check-config). */
  strictHooks?: boolean;
}

const STATEMENTS = 'network, permit, deny, admin, limits, include or qemu-bridge-conf';
const RULE_OPTIONS = 'leases N, total N, queues N, mac, mtu, vhost, polkit or ports P[,P...]';
const IFNAME_RULE = '1 to 15 bytes of A-Z a-z 0-9 _ . - and not "." or ".."; names are never truncated';

type LimitKey = keyof DaemonLimits;
const LIMITS: Record<string, { key: LimitKey; min: number; max: number; duration: boolean }> = {
  'max-connections': { key: 'maxConnections', min: 1, max: 65536, duration: false },
  'max-connections-per-user': { key: 'maxConnectionsPerUser', min: 1, max: 65536, duration: false },
  'request-timeout': { key: 'requestTimeoutMs', min: 100, max: 300_000, duration: true },
  'max-leases': { key: 'maxLeases', min: 1, max: 65536, duration: false },
  'max-queues': { key: 'maxQueues', min: 1, max: MAX_QUEUES, duration: false },
  'hook-timeout': { key: 'hookTimeoutMs', min: 100, max: 600_000, duration: true },
  'idle-exit': { key: 'idleExitMs', min: 0, max: 86_400_000, duration: true },
};

/** Words after the statement keyword, consumed left to right. */
class Cursor {
  private i = 1;
  constructor(readonly tokens: Token[], readonly line: Line) {}
  next(): Token | undefined {
    return this.tokens[this.i++];
  }
  peek(): Token | undefined {
    return this.tokens[this.i];
  }
  get keyword(): Token {
    return this.tokens[0] as Token;
  }
}

function durationText(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

export function parseConfig(path: string, opts: ParseOptions): { config: ParsedConfig; problems: Problem[] } {
  const p = new Parser(opts);
  const file = resolve(path);
  p.file(file, { file, line: 0, column: 0 }, []);
  return {
    config: { networks: p.networks, rules: p.rules, admins: p.admins, limits: p.limits, files: p.files.read },
    problems: p.problems,
  };
}

class Parser {
  readonly problems: Problem[] = [];
  readonly files: ConfigFiles;
  readonly networks: NetworkDecl[] = [];
  readonly rules: RuleDecl[] = [];
  readonly admins: AdminDecl[] = [];
  readonly limits: DaemonLimits = { ...DEFAULT_LIMITS };
  private readonly limitsSet = new Map<string, SourceRef>();
  private readonly accounts: Accounts;

  constructor(opts: ParseOptions) {
    this.files = new ConfigFiles(this.problems, opts.checkOwnership, opts.strictHooks ? 'full' : 'chain');
    this.accounts = new Accounts(opts);
  }

  private at(line: Line, tok: Token, message: string): void {
    this.problems.push({ file: line.file, line: line.line, column: tok.column, message });
  }

  private site(line: Line, tok: Token): Site {
    return { file: line.file, line: line.line, column: tok.column };
  }

  /** Opens `path` for include/qemu-bridge-conf: checks nesting and cycles. Returns the lines or undefined (reported). */
  private open(path: string, site: Site, stack: string[]): { lines: Line[]; real: string } | undefined {
    let real: string;
    try {
      real = realpathSync(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      this.problems.push({ ...site, message: `cannot read ${path}: ${code === 'ENOENT' ? 'no such file or directory' : code ?? String(e)}` });
      return undefined;
    }
    if (stack.includes(real)) {
      const cycle = [...stack.slice(stack.indexOf(real)), real].join(' -> ');
      this.problems.push({ ...site, message: `include cycle: ${cycle}` });
      return undefined;
    }
    if (stack.length >= MAX_INCLUDE_DEPTH) {
      this.problems.push({ ...site, message: `includes nest deeper than ${MAX_INCLUDE_DEPTH} files` });
      return undefined;
    }
    const lines = this.files.lines(path, site);
    return lines && { lines, real };
  }

  file(path: string, site: Site, stack: string[]): void {
    const opened = this.open(path, site, stack);
    if (!opened) return;
    const inner = [...stack, opened.real];
    for (const line of opened.lines) this.statement(line, inner);
  }

  /** Reports a line that failed the byte-level checks; true if it did. */
  private broken(line: Line): boolean {
    if (!line.error) return false;
    this.problems.push({ file: line.file, line: line.line, ...line.error });
    return true;
  }

  private statement(line: Line, stack: string[]): void {
    if (this.broken(line)) return;
    const hash = line.text.indexOf('#');
    const tokens = tokenize(hash >= 0 ? line.text.slice(0, hash) : line.text);
    const first = tokens[0];
    if (!first) return;
    const c = new Cursor(tokens, line);
    switch (first.text) {
      case 'network': return this.network(c);
      case 'permit':
      case 'deny': return this.rule(c);
      case 'admin': return this.admin(c);
      case 'limits': return this.limitsStatement(c);
      case 'include': return this.include(c, stack);
      case 'qemu-bridge-conf': return this.qemuBridgeConf(c, stack);
      default:
        this.at(line, first, `unknown keyword "${first.text}" (expected ${STATEMENTS})`);
    }
  }

  // ---- values ----

  private ifname(c: Cursor, opt: Token, what: string): string | undefined {
    const v = c.next();
    if (!v) {
      this.at(c.line, opt, `"${opt.text}" needs ${what}`);
      return undefined;
    }
    if (!isValidIfName(v.text)) {
      this.at(c.line, v, `"${v.text}" is not a valid interface name (${IFNAME_RULE})`);
      return undefined;
    }
    return v.text;
  }

  private hookPath(c: Cursor, opt: Token): string | undefined {
    const v = c.next();
    if (!v) {
      this.at(c.line, opt, `"${opt.text}" needs an absolute path`);
      return undefined;
    }
    if (!isAbsolute(v.text) || v.text.endsWith('/')) {
      this.at(c.line, v, `"${opt.text}" needs an absolute path to a file, not "${v.text}"`);
      return undefined;
    }
    this.files.hook(v.text, this.site(c.line, v));
    return v.text;
  }

  private number(c: Cursor, opt: Token, min: number, max: number): number | undefined {
    const v = c.next();
    const range = `a whole number from ${min} to ${max}`;
    if (!v) {
      this.at(c.line, opt, `"${opt.text}" needs ${range}`);
      return undefined;
    }
    if (!/^(0|[1-9][0-9]{0,9})$/.test(v.text)) {
      this.at(c.line, v, `bad number "${v.text}" for "${opt.text}" (expected ${range})`);
      return undefined;
    }
    const n = Number(v.text);
    if (n < min || n > max) {
      this.at(c.line, v, `"${opt.text}" ${v.text} is out of range (expected ${range})`);
      return undefined;
    }
    return n;
  }

  /** `5s`, `500ms`, `2m`, `1h`; a bare `0` is allowed. Returns milliseconds. */
  private duration(c: Cursor, opt: Token, min: number, max: number): number | undefined {
    const v = c.next();
    const range = `a duration from ${durationText(min)} to ${durationText(max)} such as 500ms, 5s, 2m or 1h`;
    if (!v) {
      this.at(c.line, opt, `"${opt.text}" needs ${range}`);
      return undefined;
    }
    const m = /^(0|[1-9][0-9]{0,9})(ms|s|m|h)?$/.exec(v.text);
    if (!m || (m[2] === undefined && m[1] !== '0')) {
      this.at(c.line, v, `bad duration "${v.text}" for "${opt.text}" (expected ${range})`);
      return undefined;
    }
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 'ms') as 'ms' | 's' | 'm' | 'h'];
    const ms = Number(m[1]) * unit;
    if (ms < min || ms > max) {
      this.at(c.line, v, `"${opt.text}" ${v.text} is out of range (expected ${range})`);
      return undefined;
    }
    return ms;
  }

  /** `lp-a1,lp-a2,alice-*`: logical port names, each exact or a prefix ending in `*`. */
  private ports(c: Cursor, opt: Token): string[] | undefined {
    const v = c.next();
    const what = 'logical port names separated by commas, each exact (lp-a1) or a prefix ending in * (alice-*)';
    if (!v) {
      this.at(c.line, opt, `"${opt.text}" needs ${what}`);
      return undefined;
    }
    const out: string[] = [];
    for (const p of v.text.split(',')) {
      const name = p.endsWith('*') ? p.slice(0, -1) : p;
      // A bare `*` (every port) is allowed: the admin says so in as many words.
      if ((name !== '' || p !== '*') && !PORT_NAME_RE.test(name)) {
        this.at(c.line, v, `bad port pattern "${p}" for "${opt.text}" (expected ${what}; names are 1-64 of A-Z a-z 0-9 _ . : @ + -)`);
        return undefined;
      }
      out.push(p);
    }
    return out;
  }

  private subject(c: Cursor, tok: Token): SubjectSpec | undefined {
    const t = tok.text;
    if (t === 'everyone') return { kind: 'everyone' };
    const group = t.startsWith('@');
    const name = group ? t.slice(1) : t;
    if (name === '') {
      this.at(c.line, tok, '"@" needs a group name, e.g. @kvm');
      return undefined;
    }
    if (/^[0-9]+$/.test(name)) {
      const id = /^(0|[1-9][0-9]{0,9})$/.test(name) ? Number(name) : NaN;
      if (!(id <= 0xfffffffe)) {
        this.at(c.line, tok, `bad numeric ${group ? 'gid' : 'uid'} "${name}" (expected 0 to 4294967294)`);
        return undefined;
      }
      return { kind: group ? 'group' : 'user', id };
    }
    const found = group ? this.accounts.group(name) : this.accounts.user(name);
    if (found.id === undefined) {
      this.at(c.line, tok, found.error);
      return undefined;
    }
    return { kind: group ? 'group' : 'user', id: found.id };
  }

  /** Reports the first word left over; true if there was one. */
  private rest(c: Cursor, why: string): boolean {
    const extra = c.next();
    if (extra) this.at(c.line, extra, `unexpected "${extra.text}" (${why})`);
    return extra !== undefined;
  }

  // ---- statements ----

  // network NAME (bridge BR [create] | uplink NIC bridge BR [bridge-script PATH] | hostonly
  //               | macvtap NIC [mode bridge|vepa|private|passthru]
  //               | ovs-bridge BR [ovn-wait D] [ovsdb PATH])
  //              [up PATH] [down PATH] [mtu N] [isolated] [vlan N]      (options in any order)
  private network(c: Cursor): void {
    const nameTok = c.next();
    if (!nameTok) {
      this.at(c.line, c.keyword, '"network" needs a name: network NAME bridge BR | uplink NIC bridge BR | hostonly | ovs-bridge BR');
      return;
    }
    let nameOk = true;
    if (!isValidIfName(nameTok.text)) {
      this.at(c.line, nameTok, `network name "${nameTok.text}" is not a valid interface name (${IFNAME_RULE})`);
      nameOk = false;
    } else if (nameTok.text === 'any') {
      this.at(c.line, nameTok, 'network name "any" is reserved ("on any" means every network)');
      nameOk = false;
    }
    const seen = new Map<string, Token>();
    let bridge: string | undefined;
    let uplink: string | undefined;
    let bridgeScript: string | undefined;
    let up: string | undefined;
    let down: string | undefined;
    let mtu: number | undefined;
    let create = false;
    let hostonly = false;
    let isolated = false;
    let lower: string | undefined;
    let macvtapMode: Network['macvtapMode'];
    let vlan: number | undefined;
    let ovsBridge: string | undefined;
    let ovnWait: number | undefined;
    let ovsdb: string | undefined;
    for (let tok = c.next(); tok; tok = c.next()) {
      const before = seen.get(tok.text);
      if (before) this.at(c.line, tok, `"${tok.text}" given twice for network ${nameTok.text}`);
      seen.set(tok.text, tok);
      switch (tok.text) {
        case 'bridge': bridge = this.ifname(c, tok, 'a bridge name'); break;
        case 'uplink': uplink = this.ifname(c, tok, 'a network interface name'); break;
        case 'bridge-script': bridgeScript = this.hookPath(c, tok); break;
        case 'up': up = this.hookPath(c, tok); break;
        case 'down': down = this.hookPath(c, tok); break;
        case 'mtu': mtu = this.number(c, tok, MIN_MTU, MAX_MTU); break;
        case 'create': create = true; break;
        case 'hostonly': hostonly = true; break;
        case 'isolated': isolated = true; break;
        case 'macvtap': lower = this.ifname(c, tok, 'a network interface name'); break;
        case 'mode': macvtapMode = this.macvtapMode(c, tok); break;
        case 'vlan': vlan = this.number(c, tok, 1, 4094); break;
        case 'ovs-bridge': ovsBridge = this.ifname(c, tok, 'an Open vSwitch bridge name'); break;
        case 'ovn-wait': ovnWait = this.duration(c, tok, 100, 20_000); break; // within the client's 30 s
        case 'ovsdb': ovsdb = this.socketPath(c, tok); break;
        default:
          this.at(c.line, tok, `unknown network option "${tok.text}" (expected bridge BR, create, uplink NIC, bridge-script PATH, hostonly, macvtap NIC, mode M, ovs-bridge BR, ovn-wait D, ovsdb PATH, up PATH, down PATH, mtu N, isolated or vlan N)`);
      }
    }
    const word = (w: string): Token => seen.get(w) as Token;
    let mode: Network['mode'] = 'hostonly';
    if (seen.has('macvtap')) {
      mode = 'macvtap';
      for (const w of ['bridge', 'uplink', 'create', 'bridge-script', 'isolated', 'hostonly', 'vlan', 'ovs-bridge']) {
        if (seen.has(w)) this.at(c.line, word(w), `"${w}" cannot be used with "macvtap" (a macvtap device sits on its NIC, on no bridge${w === 'vlan' ? '; for a VLAN, name the NIC\'s VLAN interface, e.g. macvtap eth0.20' : ''})`);
      }
    } else if (seen.has('mode')) {
      this.at(c.line, word('mode'), '"mode" is for macvtap networks (macvtap NIC mode bridge|vepa|private|passthru)');
    }
    if (seen.has('ovs-bridge') && mode !== 'macvtap') {
      mode = 'ovs';
      for (const w of ['bridge', 'uplink', 'create', 'bridge-script', 'hostonly', 'isolated', 'vlan']) {
        if (seen.has(w)) this.at(c.line, word(w), `"${w}" cannot be used with "ovs-bridge" (the TAP goes on an Open vSwitch bridge, not a Linux one)`);
      }
    } else if (seen.has('ovn-wait') || seen.has('ovsdb')) {
      const w = seen.has('ovn-wait') ? 'ovn-wait' : 'ovsdb';
      this.at(c.line, word(w), `"${w}" is for Open vSwitch networks: add "ovs-bridge BR"`);
    }
    if (mode === 'macvtap' || mode === 'ovs') {
      // checked above
    } else if (hostonly) {
      for (const w of ['bridge', 'uplink', 'create', 'bridge-script', 'isolated', 'vlan']) {
        if (seen.has(w)) this.at(c.line, word(w), `"${w}" cannot be used with "hostonly" (a host-only TAP is on no bridge)`);
      }
    } else if (seen.has('uplink')) {
      mode = 'uplink';
      if (!seen.has('bridge')) this.at(c.line, word('uplink'), `"uplink" needs "bridge BR" too: the bridge tapd creates for ${uplink ?? 'the interface'}`);
      if (seen.has('create')) this.at(c.line, word('create'), '"create" is for bridged networks; the bridge of an uplink network is always created');
      if (uplink !== undefined && uplink === bridge) this.at(c.line, word('uplink'), `the uplink interface and the bridge cannot both be ${uplink}`);
    } else if (seen.has('bridge')) {
      mode = 'bridged';
      if (seen.has('bridge-script')) this.at(c.line, word('bridge-script'), '"bridge-script" is for uplink networks (it runs after tapd creates the bridge for the uplink)');
    } else {
      this.at(c.line, nameTok, `network ${nameTok.text} needs one of: bridge BR, uplink NIC bridge BR, hostonly, macvtap NIC, ovs-bridge BR`);
    }
    if (!nameOk) return;
    const network: Network = {
      name: nameTok.text,
      mode,
      createBridge: mode === 'bridged' && create,
      isolated: (mode === 'bridged' || mode === 'uplink') && isolated,
      source: { file: c.line.file, line: c.line.line },
    };
    if (mode === 'macvtap' && lower !== undefined) {
      network.lower = IfName.parse(lower);
      network.macvtapMode = macvtapMode ?? 'bridge';
    }
    if ((mode === 'bridged' || mode === 'uplink') && vlan !== undefined) network.vlan = vlan;
    // Parsed once, here: the daemon passes these to the kernel as they are.
    if ((mode === 'bridged' || mode === 'uplink') && bridge !== undefined) network.bridge = IfName.parse(bridge);
    if (mode === 'uplink' && uplink !== undefined) network.uplink = IfName.parse(uplink);
    if (mode === 'uplink' && bridgeScript !== undefined) network.bridgeScript = bridgeScript;
    if (up !== undefined) network.up = up;
    if (down !== undefined) network.down = down;
    if (mtu !== undefined) network.mtu = mtu;
    if (mode === 'ovs' && ovsBridge !== undefined) {
      network.ovs = { bridge: ovsBridge, socket: ovsdb ?? DEFAULT_OVSDB_SOCKET };
      if (ovnWait !== undefined) network.ovs.ovnWaitMs = ovnWait;
    }
    this.networks.push({ network, site: this.site(c.line, nameTok) });
  }

  private macvtapMode(c: Cursor, opt: Token): Network['macvtapMode'] {
    const v = c.next();
    const modes = ['bridge', 'vepa', 'private', 'passthru'] as const;
    if (v && (modes as readonly string[]).includes(v.text)) return v.text as (typeof modes)[number];
    this.at(c.line, v ?? opt, `"mode" needs one of ${modes.join(', ')}${v ? `, not "${v.text}"` : ''}`);
    return undefined;
  }

  private options(c: Cursor, kind: string): RuleOptions {
    const o: RuleOptions = { queues: 1, mac: false, mtu: false, vhost: false, polkit: false };
    const seen = new Set<string>();
    for (let tok = c.next(); tok; tok = c.next()) {
      if (seen.has(tok.text)) this.at(c.line, tok, `option "${tok.text}" given twice`);
      seen.add(tok.text);
      switch (tok.text) {
        case 'leases': o.leases = this.number(c, tok, 1, 1024) ?? o.leases; break;
        case 'total': o.total = this.number(c, tok, 1, 1024) ?? o.total; break;
        case 'queues': o.queues = this.number(c, tok, 1, 16) ?? o.queues; break;
        case 'mac': o.mac = true; break;
        case 'mtu': o.mtu = true; break;
        case 'vhost': o.vhost = true; break;
        case 'polkit': o.polkit = true; break;
        case 'ports': o.ports = this.ports(c, tok) ?? o.ports; break;
        default:
          this.at(c.line, tok, `unknown option "${tok.text}" for ${kind} (expected ${RULE_OPTIONS})`);
      }
    }
    return o;
  }

  private text(c: Cursor): string {
    return c.tokens.map((t) => t.text).join(' ');
  }

  // permit SUBJECT on NETWORK|any [options]      deny SUBJECT on NETWORK|any
  private rule(c: Cursor): void {
    const kind = c.keyword.text as 'permit' | 'deny';
    const usage = `${kind} SUBJECT on NETWORK|any${kind === 'permit' ? ' [options]' : ''}`;
    const subjTok = c.next();
    if (!subjTok) {
      this.at(c.line, c.keyword, `"${kind}" needs a subject and a network: ${usage}`);
      return;
    }
    const subject = this.subject(c, subjTok);
    const on = c.next();
    if (!on || on.text !== 'on') {
      this.at(c.line, on ?? subjTok, `expected "on" after the subject: ${usage}`);
      return;
    }
    const netTok = c.next();
    if (!netTok) {
      this.at(c.line, on, `"on" needs a network name or "any": ${usage}`);
      return;
    }
    const target = netTok.text === 'any' ? 'any' as const : { name: netTok.text, site: this.site(c.line, netTok) };
    let options: RuleOptions = { queues: 1, mac: false, mtu: false, vhost: false, polkit: false };
    if (kind === 'deny') this.rest(c, 'deny takes no options');
    else options = this.options(c, 'permit');
    if (!subject) return;
    this.rules.push({ kind, subject, target, options, source: { file: c.line.file, line: c.line.line }, text: this.text(c) });
  }

  // admin SUBJECT
  private admin(c: Cursor): void {
    const subjTok = c.next();
    if (!subjTok) {
      this.at(c.line, c.keyword, '"admin" needs a user or @group: admin @wheel');
      return;
    }
    if (subjTok.text === 'everyone') {
      this.at(c.line, subjTok, '"admin everyone" would let every user see and end every lease; name a user or @group');
      return;
    }
    const subject = this.subject(c, subjTok);
    this.rest(c, 'admin takes one user or @group');
    if (subject) this.admins.push({ subject, source: { file: c.line.file, line: c.line.line } });
  }

  // limits KEY VALUE [KEY VALUE]...
  private limitsStatement(c: Cursor): void {
    if (!c.peek()) {
      this.at(c.line, c.keyword, `"limits" needs at least one setting (${Object.keys(LIMITS).join(', ')})`);
      return;
    }
    for (let tok = c.next(); tok; tok = c.next()) {
      const spec = LIMITS[tok.text];
      if (!spec) {
        this.at(c.line, tok, `unknown limit "${tok.text}" (expected ${Object.keys(LIMITS).join(', ')})`);
        c.next(); // skip its value
        continue;
      }
      const before = this.limitsSet.get(tok.text);
      if (before) this.at(c.line, tok, `limit "${tok.text}" is already set at ${before.file}:${before.line}`);
      this.limitsSet.set(tok.text, { file: c.line.file, line: c.line.line });
      const v = spec.duration ? this.duration(c, tok, spec.min, spec.max) : this.number(c, tok, spec.min, spec.max);
      if (v !== undefined) this.limits[spec.key] = v;
    }
  }

  // include PATH          (a file, or a directory: its *.conf files in C-locale order)
  private include(c: Cursor, stack: string[]): void {
    const path = this.includePath(c, 'include');
    if (path === undefined || this.rest(c, 'include takes one path')) return;
    const site = this.site(c.line, c.tokens[1] as Token);
    const dir = this.files.isDirectory(path, site);
    if (dir === undefined) return;
    if (!dir) {
      this.file(path, site, stack);
      return;
    }
    for (const f of this.files.listDirectory(path, site) ?? []) this.file(f, site, stack);
  }

  /** ovsdb PATH: an absolute path to a socket (not a hook: no trust check, it is ovsdb-server's). */
  private socketPath(c: Cursor, opt: Token): string | undefined {
    const v = c.next();
    if (!v) {
      this.at(c.line, opt, `"${opt.text}" needs the absolute path of ovsdb-server's socket, e.g. /run/openvswitch/db.sock`);
      return undefined;
    }
    if (!isAbsolute(v.text) || v.text.endsWith('/') || v.text.length > 107) {
      this.at(c.line, v, `"${opt.text}" needs the absolute path of a Unix socket (at most 107 bytes), not "${v.text}"`);
      return undefined;
    }
    return v.text;
  }

  /** The absolute path of an include or ACL file (a directory is fine). */
  private includePath(c: Cursor, what: string): string | undefined {
    const v = c.next();
    if (!v) {
      this.at(c.line, c.keyword, `"${what}" needs an absolute path`);
      return undefined;
    }
    if (!isAbsolute(v.text)) {
      this.at(c.line, v, `"${what}" needs an absolute path, not "${v.text}"`);
      return undefined;
    }
    return v.text;
  }

  // qemu-bridge-conf PATH [for SUBJECT] [options]
  private qemuBridgeConf(c: Cursor, stack: string[]): void {
    const path = this.includePath(c, 'qemu-bridge-conf');
    if (path === undefined) return;
    const site = this.site(c.line, c.tokens[1] as Token);
    let subject: SubjectSpec | undefined = { kind: 'everyone' };
    if (c.peek()?.text === 'for') {
      const forTok = c.next() as Token;
      const s = c.next();
      if (!s) {
        this.at(c.line, forTok, '"for" needs a user, @group or everyone');
        return;
      }
      subject = this.subject(c, s);
    }
    const options = this.options(c, 'qemu-bridge-conf');
    const acl: AclEntry[] = [];
    const before = this.problems.length;
    this.acl(path, site, stack, acl);
    if (!subject || this.problems.length !== before) return;
    this.rules.push({ kind: 'qemu-bridge-conf', subject, acl, options, source: { file: c.line.file, line: c.line.line }, text: this.text(c) });
  }

  /**
   * A qemu-bridge-helper ACL file, read as QEMU reads it: `allow BR`, `deny BR`, `allow all`,
   * `deny all`, `include FILE`, and `#` comment lines; one command and one argument per line.
   * Stricter than QEMU in what it accepts (a line QEMU would misread is an error here).
   */
  private acl(path: string, site: Site, stack: string[], out: AclEntry[]): void {
    const opened = this.open(path, site, stack);
    if (!opened) return;
    const inner = [...stack, opened.real];
    for (const line of opened.lines) {
      if (this.broken(line)) continue;
      const trimmed = line.text.replace(/^[ \t]+/, '');
      if (trimmed === '' || trimmed.startsWith('#')) continue;
      const tokens = tokenize(line.text);
      const [cmd, arg, extra] = tokens as [Token, Token | undefined, Token | undefined];
      if (cmd.text !== 'allow' && cmd.text !== 'deny' && cmd.text !== 'include') {
        this.at(line, cmd, `unknown command "${cmd.text}" in qemu-bridge-helper ACL file (expected allow, deny or include)`);
        continue;
      }
      if (!arg) {
        this.at(line, cmd, `"${cmd.text}" needs ${cmd.text === 'include' ? 'an absolute path' : 'a bridge name or "all"'}`);
        continue;
      }
      if (extra) {
        this.at(line, extra, `unexpected "${extra.text}" (one argument per line; comments must be on lines of their own)`);
        continue;
      }
      if (cmd.text === 'include') {
        if (!isAbsolute(arg.text)) {
          this.at(line, arg, `"include" needs an absolute path, not "${arg.text}"`);
          continue;
        }
        this.acl(arg.text, this.site(line, arg), inner, out);
        continue;
      }
      const entry: AclEntry = { allow: cmd.text === 'allow', source: { file: line.file, line: line.line }, text: `${cmd.text} ${arg.text}`, column: arg.column };
      if (arg.text !== 'all') {
        if (!isValidIfName(arg.text)) {
          this.at(line, arg, `"${arg.text}" is not a valid bridge name (${IFNAME_RULE})`);
          continue;
        }
        entry.bridge = arg.text;
      }
      out.push(entry);
    }
  }
}
