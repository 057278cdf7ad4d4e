// Turns a parsed configuration into the Policy the daemon asks, and makes its decisions.
import { IfName } from '../../sys/ifname.js';
import type { Problem } from './problem.js';
import type { AclEntry, ParsedConfig, RuleDecl, SubjectSpec } from './parser.js';
import type { Decision, Deny, Network, OpenIntent, Permit, Policy, Subject } from './types.js';

/**
 * What a peer hears when no rule lets it use the network it named, whether or not the network
 * exists (no existence oracle, CVE-2022-47952). Does not contain the name on purpose: the same
 * network can be named three ways (network, bridge, uplink NIC), and echoing the resolved name
 * would tell which aliases exist.
 */
export const DEFAULT_DENY_REASON = 'no rule permits you on this network (default deny)';

function subjectMatches(spec: SubjectSpec, s: Subject): boolean {
  switch (spec.kind) {
    case 'everyone': return true;
    case 'user': return s.uid === spec.id;
    // Primary group or any supplementary group, as the kernel reported them at connect().
    case 'group': return s.gid === spec.id || s.groups.includes(spec.id);
  }
}

/**
 * qemu-bridge-helper's verdict for one bridge: any `deny BR` or `deny all` beats any allow,
 * whatever the order; else `allow BR` or `allow all`; else undefined (the file says nothing
 * about this bridge, so as a tapd rule it does not match).
 */
export function aclVerdict(acl: readonly AclEntry[], bridge: string): AclEntry | undefined {
  let allow: AclEntry | undefined;
  for (const e of acl) {
    if (e.bridge !== undefined && e.bridge !== bridge) continue;
    if (!e.allow) return e;
    allow ??= e;
  }
  return allow;
}

interface Match {
  rule: RuleDecl;
  permit: boolean;
  /** For qemu-bridge-conf: the ACL line that decided. */
  acl?: AclEntry;
}

function ruleMatches(rule: RuleDecl, subject: Subject, net: Network): Match | undefined {
  if (!subjectMatches(rule.subject, subject)) return undefined;
  if (rule.kind === 'qemu-bridge-conf') {
    if (net.bridge === undefined || !rule.acl) return undefined;
    const e = aclVerdict(rule.acl, net.bridge.value);
    return e && { rule, permit: e.allow, acl: e };
  }
  if (rule.target !== 'any' && rule.target?.name !== net.name) return undefined;
  return { rule, permit: rule.kind === 'permit' };
}

/** `ports` patterns: an exact name, or a prefix ending in `*` (a bare `*` is every port). */
export function portMatches(pattern: string, port: string): boolean {
  return pattern.endsWith('*') ? port.startsWith(pattern.slice(0, -1)) : port === pattern;
}

function describe(m: Match): string {
  const where = `${m.rule.source.file}:${m.rule.source.line} (${m.rule.text})`;
  return m.acl ? `${where}, ${m.acl.source.file}:${m.acl.source.line} (${m.acl.text})` : where;
}

class CompiledPolicy implements Policy {
  readonly networks: ReadonlyMap<string, Network>;
  readonly limits: ParsedConfig['limits'];
  readonly files: readonly string[];
  private readonly aliases = new Map<string, Network>();

  constructor(networks: Map<string, Network>, private readonly config: ParsedConfig) {
    this.networks = networks;
    this.limits = Object.freeze({ ...config.limits });
    this.files = Object.freeze([...config.files]);
    // resolve(): network name first, then bridge name, then uplink NIC name. The compiler
    // rejects a name used twice in these roles, so the order only matters for a network
    // named after its own bridge.
    // A VLAN network shares its bridge (and uplink) with others: it answers to its own name only.
    for (const n of networks.values()) if (n.uplink !== undefined && n.vlan === undefined) this.aliases.set(n.uplink.value, n);
    for (const n of networks.values()) if (n.bridge !== undefined && n.vlan === undefined) this.aliases.set(n.bridge.value, n);
    for (const n of networks.values()) this.aliases.set(n.name, n);
  }

  resolve(name: string): Network | undefined {
    return this.aliases.get(name);
  }

  isAdmin(subject: Subject): boolean {
    return subject.uid === 0 || this.config.admins.some((a) => subjectMatches(a.subject, subject));
  }

  decide(subject: Subject, intent: OpenIntent): Decision {
    const net = this.networks.get(intent.network.name);
    if (!net) return this.defaultDeny('the network is not in this policy');

    // PRECEDENCE: the LAST matching rule wins (as in doas.conf), in file order with includes
    // expanded where they stand; a qemu-bridge-conf line is one rule at its own position.
    // No matching rule: deny. docs/policy.md "Precedence" says the same; keep them in step.
    let last: Match | undefined;
    // Whether some permit rule matches this subject here: then the subject may learn that the
    // network exists, and a deny may name the rule that decided.
    let mayKnow = false;
    for (const rule of this.config.rules) {
      const m = ruleMatches(rule, subject, net);
      if (!m) continue;
      last = m;
      if (m.permit) mayKnow = true;
    }
    if (!last) return this.defaultDeny('no rule matches');
    if (!last.permit) {
      const why = `denied by ${describe(last)}`;
      return mayKnow ? { allowed: false, reason: why, logReason: why } : this.defaultDeny(why);
    }

    const by = describe(last);
    const o = last.rule.options;
    const missing = (what: string): Deny => {
      const reason = `denied by ${by}: ${what}`;
      return { allowed: false, reason, logReason: reason };
    };
    if (!Number.isInteger(intent.queues) || intent.queues < 1) return missing(`${intent.queues} queues is not a valid request`);
    if (intent.queues > o.queues) {
      return missing(`you asked for ${intent.queues} queues; this rule grants at most ${o.queues} (option "queues N")`);
    }
    if (intent.queues > this.limits.maxQueues) {
      return missing(`you asked for ${intent.queues} queues; tapd allows at most ${this.limits.maxQueues} (limits max-queues)`);
    }
    if (intent.wantsMac && !o.mac) return missing('you asked for a MAC address of your own, which needs option "mac"');
    if (intent.wantsMtu && !o.mtu) return missing('you asked for an MTU of your own, which needs option "mtu"');
    if (intent.vhost && !o.vhost) return missing('you asked for vhost-net, which needs option "vhost"');
    // Only now, with this rule letting the subject use the network: what port it may bind.
    if (net.mode === 'ovs') {
      if (intent.port === undefined) return missing(`network ${net.name} is an Open vSwitch network: name the logical port to bind (tapctl --port NAME, request field "port")`);
      if (!o.ports?.some((p) => portMatches(p, intent.port as string))) {
        return missing(`this rule does not grant logical port ${intent.port}${o.ports ? ` (it grants ${o.ports.join(',')})` : ' (it grants no ports: option "ports P[,P...]")'}`);
      }
    } else if (intent.port !== undefined) {
      return missing(`network ${net.name} is not an Open vSwitch network; a logical port ("port") applies only to ovs-bridge networks`);
    }

    const permit: Permit = {
      allowed: true,
      askPolkit: o.polkit,
      reason: `permitted by ${by}`,
      rule: last.acl ? last.acl.source : last.rule.source,
      grants: { queues: o.queues, mac: o.mac, mtu: o.mtu, vhost: o.vhost, ...(o.ports ? { ports: [...o.ports] } : {}) },
    };
    if (o.leases !== undefined) permit.maxLeasesPerNetwork = o.leases;
    if (o.total !== undefined) permit.maxLeasesPerUser = o.total;
    return permit;
  }

  private defaultDeny(logReason: string): Deny {
    return { allowed: false, reason: DEFAULT_DENY_REASON, logReason: `${DEFAULT_DENY_REASON}: ${logReason}` };
  }
}

const where = (s: { file: string; line: number }): string => `${s.file}:${s.line}`;

/** Checks what needs the whole configuration (names, references), adds qemu-bridge-conf's implicit networks. */
export function compile(config: ParsedConfig, problems: Problem[]): Policy {
  const networks = new Map<string, Network>();
  // Network names, bridge names and uplink NIC names share one namespace, so that resolve()
  // is never ambiguous; only a network named after its own bridge is allowed.
  const owner = new Map<string, { network: Network; role: string }>();
  const claim = (name: string, network: Network, role: string, site: Problem | Omit<Problem, 'message'>): void => {
    const prev = owner.get(name);
    if (prev && !(prev.network === network)) {
      const what = prev.role === 'name' ? `the name of network ${prev.network.name}` : `the ${prev.role} of network ${prev.network.name}`;
      problems.push({ ...site, message: `${name} is already ${what} (${where(prev.network.source)}); each network, bridge and uplink name may be used once` });
      return;
    }
    if (!prev) owner.set(name, { network, role });
  };

  for (const { network, site } of config.networks) {
    const prev = networks.get(network.name);
    if (prev) {
      problems.push({ ...site, message: `duplicate network ${network.name} (first defined at ${where(prev.source)})` });
      continue;
    }
    networks.set(network.name, network);
  }
  for (const { network, site } of config.networks) {
    if (networks.get(network.name) !== network) continue;
    claim(network.name, network, 'name', site);
    const s = { file: network.source.file, line: network.source.line, column: site.column };
    if (network.vlan !== undefined) continue; // checked below: VLANs of one bridge share it
    if (network.bridge !== undefined) claim(network.bridge.value, network, 'bridge', s);
    if (network.uplink !== undefined) claim(network.uplink.value, network, 'uplink interface', s);
  }
  // VLAN networks: several may share a bridge, and an uplink NIC, but a NIC is on one bridge,
  // and neither may be some other network's name.
  const uplinkBridge = new Map<string, Network>();
  for (const { network, site } of config.networks) {
    if (networks.get(network.name) !== network || network.vlan === undefined) continue;
    const s = { file: network.source.file, line: network.source.line, column: site.column };
    for (const [name, role] of [[network.bridge?.value, 'bridge'], [network.uplink?.value, 'uplink interface']] as const) {
      const prev = name === undefined ? undefined : owner.get(name);
      if (name !== undefined && prev && prev.role === 'name' && prev.network !== network) {
        problems.push({ ...s, message: `${name} is already the name of network ${prev.network.name} (${where(prev.network.source)}); it cannot also be the ${role} of network ${network.name}` });
      }
    }
    if (network.uplink !== undefined) {
      const prev = uplinkBridge.get(network.uplink.value);
      if (prev && prev.bridge?.value !== network.bridge?.value) {
        problems.push({ ...s, message: `uplink ${network.uplink} is on bridge ${prev.bridge} for network ${prev.name} (${where(prev.source)}); network ${network.name} must name the same bridge` });
      } else if (!prev) uplinkBridge.set(network.uplink.value, network);
    }
  }

  // qemu-bridge-conf: a bridge the ACL allows (and does not also deny) that is no network's
  // bridge becomes a network of its own: bridged, named after the bridge, no create, no hooks.
  for (const rule of config.rules) {
    if (rule.kind !== 'qemu-bridge-conf' || !rule.acl) continue;
    for (const e of rule.acl) {
      const bridge = e.bridge;
      if (bridge === undefined || aclVerdict(rule.acl, bridge)?.allow !== true) continue;
      if ([...networks.values()].some((n) => n.bridge?.value === bridge)) continue;
      const prev = owner.get(bridge);
      if (prev) {
        problems.push({
          file: e.source.file, line: e.source.line, column: e.column,
          message: `bridge ${bridge} is allowed here but is not the bridge of any network, and ${bridge} is already ` +
            `${prev.role === 'name' ? 'the name' : `the ${prev.role}`} of network ${prev.network.name} (${where(prev.network.source)}); ` +
            `define a network for bridge ${bridge} in tapd.conf`,
        });
        continue;
      }
      const network: Network = { name: bridge, mode: 'bridged', bridge: IfName.parse(bridge), createBridge: false, isolated: false, source: e.source };
      networks.set(network.name, network);
      owner.set(bridge, { network, role: 'bridge' });
    }
  }

  for (const rule of config.rules) {
    const t = rule.target;
    if (t === undefined || t === 'any' || networks.has(t.name)) continue;
    const alias = owner.get(t.name);
    const hint = alias ? `; ${t.name} is the ${alias.role} of network ${alias.network.name}, and rules name networks` : '';
    problems.push({ ...t.site, message: `unknown network "${t.name}"${hint}` });
  }
  // `ports` means something only where a logical port is bound.
  for (const rule of config.rules) {
    const t = rule.target;
    if (!rule.options.ports || t === undefined || t === 'any') continue;
    const n = networks.get(t.name);
    if (n && n.mode !== 'ovs') problems.push({ ...t.site, message: `option "ports" is for ovs-bridge networks, and ${t.name} is a ${n.mode} network` });
  }

  return new CompiledPolicy(networks, config);
}
