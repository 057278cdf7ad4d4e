import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TapdError } from '../../src/errors/tapd-error.js';
import { ifNameProblem } from '../../src/sys/ifname.js';
import {
  checkConfig, DEFAULT_DENY_REASON, DEFAULT_LIMITS, loadPolicy, PolicyError,
  type LoadOptions, type Network, type OpenIntent, type Permit, type Policy, type Subject,
} from '../../src/daemon/policy/index.js';

const FIXTURES = resolve(dirname(fileURLToPath(import.meta.url)), '../fixtures/policy');
const ACCOUNTS = { passwdFile: join(FIXTURES, 'passwd'), groupFile: join(FIXTURES, 'group') };
const OPTS: LoadOptions = { ...ACCOUNTS, checkOwnership: false };

// Test accounts (test/fixtures/policy/passwd and group).
const ALICE: Subject = { uid: 1001, gid: 1001, groups: [100], pid: 1 }; // in kvm
const BOB: Subject = { uid: 1002, gid: 1002, groups: [100], pid: 1 }; // in kvm
const BOBBY: Subject = { uid: 1003, gid: 1003, groups: [201], pid: 1 }; // in devops
const DEV_USER: Subject = { uid: 1004, gid: 1004, groups: [], pid: 1 }; // user "dev", not in group dev
const CAROL: Subject = { uid: 1005, gid: 1005, groups: [10, 200], pid: 1 }; // in wheel and dev
const NOBODY: Subject = { uid: 65534, gid: 65534, groups: [], pid: 1 };
const ROOT: Subject = { uid: 0, gid: 0, groups: [], pid: 1 };

let dir: string;
let seq = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tapd-policy-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Writes `content` to a new file under the temp dir (or at `name` if given) and returns its path. */
function write(content: string | Buffer, name?: string): string {
  const path = join(dir, name ?? `t${++seq}.conf`);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content, { mode: 0o644 });
  chmodSync(path, 0o644);
  return path;
}

function load(content: string, opts: LoadOptions = OPTS): Policy {
  return loadPolicy(write(content), opts);
}

/** The problems of a config as `line:column: message` (file name stripped when it is the main file). */
function problemsOf(content: string | Buffer, opts: LoadOptions = OPTS): string[] {
  const path = write(content);
  const r = checkConfig(path, opts);
  expect(r.ok).toBe(r.problems.length === 0);
  return r.problems.map((p) => (p.startsWith(`${path}:`) ? p.slice(path.length + 1) : p));
}

function net(p: Policy, name: string): Network {
  const n = p.networks.get(name);
  if (!n) throw new Error(`no network ${name}`);
  return n;
}

function intent(network: Network, over: Partial<OpenIntent> = {}): OpenIntent {
  return { network, wantsMac: false, wantsMtu: false, queues: 1, vnetHdr: true, vhost: false, ...over };
}

function decide(p: Policy, s: Subject, network: string, over: Partial<OpenIntent> = {}): ReturnType<Policy['decide']> {
  return p.decide(s, intent(net(p, network), over));
}

const NETS = 'network lan bridge br0\nnetwork wan uplink eth1 bridge br-eth1\nnetwork host hostonly\n';

describe('interface names in the config use the kernel layer\'s rule', () => {
  it.each([
    ['eth0', true], ['br-eth1', true], ['a', true], ['x_y.z-1', true], ['123456789012345', true],
    ['1234567890123456', false], ['', false], ['.', false], ['..', false], ['.x', true],
    ['br 0', false], ['br/0', false], ['br:0', false], ['brü', false], ['br0\n', false],
  ])('%j -> %s', (name, ok) => {
    expect(ifNameProblem(name) === undefined).toBe(ok);
  });
});

describe('grammar: good files', () => {
  it('parses every network mode and option', () => {
    const p = load(`# a comment
network lan   bridge br0 create up /etc/tapd/lan-up down /etc/tapd/lan-down mtu 9000 isolated
network\twan\tuplink eth1 bridge br-eth1 bridge-script /usr/lib/tapd/tapd-bridge-up up /x/up   # trailing comment
network host  hostonly up /etc/tapd/qemu-ifup down /etc/tapd/qemu-ifdown

   permit @kvm on lan leases 4 total 8 queues 4 mac mtu vhost polkit
`);
    expect(p.networks.size).toBe(3);
    expect(net(p, 'lan')).toMatchObject({
      name: 'lan', mode: 'bridged', bridge: { value: 'br0' }, createBridge: true, up: '/etc/tapd/lan-up',
      down: '/etc/tapd/lan-down', mtu: 9000, isolated: true, source: { line: 2 },
    });
    expect(net(p, 'wan')).toMatchObject({
      name: 'wan', mode: 'uplink', bridge: { value: 'br-eth1' }, uplink: { value: 'eth1' }, createBridge: false,
      bridgeScript: '/usr/lib/tapd/tapd-bridge-up', up: '/x/up', isolated: false,
    });
    expect(net(p, 'host')).toMatchObject({ name: 'host', mode: 'hostonly', createBridge: false, isolated: false });
    expect(net(p, 'host').bridge).toBeUndefined();
    expect(net(p, 'lan').uplink).toBeUndefined();
    expect(p.limits).toEqual(DEFAULT_LIMITS);
  });

  it('an empty file is a valid policy that permits nothing', () => {
    const p = load('');
    expect(p.networks.size).toBe(0);
    expect(p.limits).toEqual({
      maxConnections: 256, maxConnectionsPerUser: 32, requestTimeoutMs: 5000, maxLeases: 1024, maxQueues: 16, hookTimeoutMs: 10000, idleExitMs: 0,
    });
  });

  it('a line of exactly 1024 bytes is fine; the last line needs no newline', () => {
    const line = `permit alice on lan${' '.repeat(1024 - 'permit alice on lan'.length)}`;
    expect(Buffer.byteLength(line)).toBe(1024);
    expect(problemsOf(`network lan bridge br0\n${line}`)).toEqual([]);
  });

  it('the shipped systemd/tapd.conf parses (checked against the real passwd/group, ownership aside)', () => {
    const shipped = resolve(FIXTURES, '../../../systemd/tapd.conf');
    expect(checkConfig(shipped, { checkOwnership: false })).toEqual({ ok: true, problems: [] });
    expect(loadPolicy(shipped, { checkOwnership: false }).networks.size).toBe(0);
  });
});

describe('grammar: errors, with file:line:column', () => {
  const cases: [string, string, string[]][] = [
    ['unknown keyword', 'frobnicate all', ['1:1: unknown keyword "frobnicate"']],
    ['unknown keyword after blanks', NETS + '   allow alice on lan', ['4:4: unknown keyword "allow"']],
    ['unknown network option', 'network lan bridge br0 colour red', ['1:24: unknown network option "colour"', '1:31: unknown network option "red"']],
    ['duplicate network', 'network lan bridge br0\nnetwork lan hostonly', ['2:9: duplicate network lan (first defined at ']],
    ['network without mode', 'network lan', ['1:9: network lan needs one of']],
    ['network without name', 'network', ['1:1: "network" needs a name']],
    ['network name too long (never truncated)', 'network abcdefghijklmnop hostonly', ['1:9: network name "abcdefghijklmnop" is not a valid interface name']],
    ['network name ..', 'network .. hostonly', ['1:9: network name ".." is not a valid interface name']],
    ['network name any', 'network any hostonly', ['1:9: network name "any" is reserved']],
    ['bridge name 16 bytes', 'network lan bridge br0123456789abcd', ['1:20: "br0123456789abcd" is not a valid interface name']],
    ['bridge name with slash', 'network lan bridge br/0', ['1:20: "br/0" is not a valid interface name']],
    ['bridge without name', 'network lan bridge', ['1:13: "bridge" needs a bridge name']],
    ['uplink without bridge', 'network wan uplink eth1', ['1:13: "uplink" needs "bridge BR" too']],
    ['uplink is its own bridge', 'network wan uplink eth1 bridge eth1', ['1:13: the uplink interface and the bridge cannot both be eth1']],
    ['create with uplink', 'network wan uplink eth1 bridge br1 create', ['1:36: "create" is for bridged networks']],
    ['bridge-script on bridged', 'network lan bridge br0 bridge-script /x', ['1:24: "bridge-script" is for uplink networks']],
    ['hostonly with bridge', 'network h hostonly bridge br0', ['1:20: "bridge" cannot be used with "hostonly"']],
    ['hostonly isolated', 'network h hostonly isolated', ['1:20: "isolated" cannot be used with "hostonly"']],
    ['relative hook', 'network lan bridge br0 up lan-up', ['1:27: "up" needs an absolute path to a file, not "lan-up"']],
    ['hook without path', 'network lan bridge br0 down', ['1:24: "down" needs an absolute path']],
    ['network option twice', 'network lan bridge br0 mtu 1500 mtu 1400', ['1:33: "mtu" given twice for network lan']],
    ['mtu too small', 'network lan bridge br0 mtu 67', ['1:28: "mtu" 67 is out of range (expected a whole number from 68 to 65521)']],
    ['mtu too large', 'network lan bridge br0 mtu 65536', ['1:28: "mtu" 65536 is out of range']],
    ['mtu not a number', 'network lan bridge br0 mtu 0x500', ['1:28: bad number "0x500" for "mtu"']],
    ['name collision with a bridge', 'network br0 hostonly\nnetwork lan bridge br0', ['2:9: br0 is already the name of network br0 (']],
    ['two networks on one bridge', 'network a bridge br0\nnetwork b bridge br0', ['2:9: br0 is already the bridge of network a (']],
    ['queues 17', NETS + 'permit alice on lan queues 17', ['4:28: "queues" 17 is out of range (expected a whole number from 1 to 16)']],
    ['queues 0', NETS + 'permit alice on lan queues 0', ['4:28: "queues" 0 is out of range']],
    ['leases 1025', NETS + 'permit alice on lan leases 1025', ['4:28: "leases" 1025 is out of range (expected a whole number from 1 to 1024)']],
    ['leases with a leading zero', NETS + 'permit alice on lan leases 01', ['4:28: bad number "01" for "leases"']],
    ['total not a number', NETS + 'permit alice on lan total many', ['4:27: bad number "many" for "total"']],
    ['leases without number', NETS + 'permit alice on lan leases', ['4:21: "leases" needs a whole number from 1 to 1024']],
    ['unknown rule option', NETS + 'permit alice on lan nopass', ['4:21: unknown option "nopass" for permit']],
    ['rule option twice', NETS + 'permit alice on lan mac mac', ['4:25: option "mac" given twice']],
    ['deny with options', NETS + 'deny bob on lan leases 2', ['4:17: unexpected "leases" (deny takes no options)']],
    ['missing on', NETS + 'permit alice lan', ['4:14: expected "on" after the subject']],
    ['missing network', NETS + 'permit alice on', ['4:14: "on" needs a network name or "any"']],
    ['missing subject', NETS + 'permit', ['4:1: "permit" needs a subject and a network']],
    ['unknown user', NETS + 'permit mallory on lan', ['4:8: unknown user "mallory" (not in ']],
    ['unknown group', NETS + 'deny @wizards on lan', ['4:6: unknown group "wizards" (not in ']],
    ['a group name is not a user name', NETS + 'permit kvm on lan', ['4:8: unknown user "kvm"']],
    ['no prefix match of names', NETS + 'permit ali on lan', ['4:8: unknown user "ali"']],
    ['NIS compat lines are not users', NETS + 'permit +nisuser on lan', ['4:8: unknown user "+nisuser"']],
    ['bare @', NETS + 'permit @ on lan', ['4:8: "@" needs a group name']],
    ['uid out of range', NETS + 'permit 4294967295 on lan', ['4:8: bad numeric uid "4294967295"']],
    ['gid with leading zero', NETS + 'permit @0100 on lan', ['4:8: bad numeric gid "0100"']],
    ['unknown network', NETS + 'permit alice on dmz', ['4:17: unknown network "dmz"']],
    ['a rule names a bridge', NETS + 'permit alice on br0', ['4:17: unknown network "br0"; br0 is the bridge of network lan, and rules name networks']],
    ['a rule names an uplink', NETS + 'permit alice on eth1', ['4:17: unknown network "eth1"; eth1 is the uplink interface of network wan']],
    ['admin everyone', 'admin everyone', ['1:7: "admin everyone" would let every user see and end every lease']],
    ['admin with two subjects', 'admin alice bob', ['1:13: unexpected "bob" (admin takes one user or @group)']],
    ['limits without settings', 'limits', ['1:1: "limits" needs at least one setting']],
    ['unknown limit', 'limits max-vms 3', ['1:8: unknown limit "max-vms"']],
    ['duration without unit', 'limits request-timeout 5', ['1:24: bad duration "5" for "request-timeout"']],
    ['bad duration unit', 'limits hook-timeout 5d', ['1:21: bad duration "5d" for "hook-timeout"']],
    ['duration out of range', 'limits request-timeout 1h', ['1:24: "request-timeout" 1h is out of range (expected a duration from 100ms to 300s']],
    ['limit out of range', 'limits max-connections 0 max-queues 17', ['1:24: "max-connections" 0 is out of range', '1:37: "max-queues" 17 is out of range']],
    ['limit set twice', 'limits max-leases 10\nlimits max-leases 20', ['2:8: limit "max-leases" is already set at ']],
    ['include needs absolute path', 'include tapd.conf.d', ['1:9: "include" needs an absolute path, not "tapd.conf.d"']],
    ['include two paths', 'include /etc /usr', ['1:14: unexpected "/usr" (include takes one path)']],
    ['DOS line ending', 'network lan bridge br0\r\n', ['1:23: control character 0x0d in line (DOS line ending? convert the file with dos2unix)']],
    ['escape character', 'network lan bridge br0 \x1b[31m', ['1:24: control character 0x1b in line']],
  ];

  it.each(cases)('%s', (_name, content, expected) => {
    const got = problemsOf(content);
    expect(got).toHaveLength(expected.length);
    expected.forEach((e, i) => expect(got[i]).toContain(e));
    // loadPolicy throws the same problems.
    expect(() => load(content)).toThrow(PolicyError);
  });

  it('a line over 1024 bytes is an error at column 1025 and is never split', () => {
    const long = `permit alice on lan ${'x'.repeat(1005)}`;
    expect(Buffer.byteLength(long)).toBe(1025);
    expect(problemsOf(`${NETS}${long}\npermit bob on nowhere\n`)).toEqual([
      '4:1025: line is 1025 bytes long; the limit is 1024 (long lines are never split or truncated)',
      '5:15: unknown network "nowhere"',
    ]);
  });

  it('a NUL byte is an error at its column', () => {
    expect(problemsOf(Buffer.from(`${NETS}permit alice\0 on lan\n`))).toEqual(['4:13: NUL byte in line']);
  });

  it('invalid UTF-8 is an error', () => {
    expect(problemsOf(Buffer.concat([Buffer.from(NETS), Buffer.from([0x70, 0xff, 0x0a])]))).toEqual(['4:1: line is not valid UTF-8']);
  });

  it('columns count bytes', () => {
    // "é" is two bytes, so "mäc" starts at byte 19 (character 18).
    expect(problemsOf(`${NETS}permit @é on lan mäc`)).toEqual([
      expect.stringContaining('4:8: unknown group "é"'),
      expect.stringContaining('4:19: unknown option "mäc" for permit'),
    ]);
  });

  it('collects every error of a file, in order, not just the first', () => {
    const got = problemsOf(`network lan bridge br0
network lan hostonly
permit mallory on lan
permit alice on lan queues 99
limits idle-exit forever
bogus
permit @kvm on nowhere
`);
    expect(got.map((p) => p.split(': ')[0])).toEqual(['3:8', '4:28', '5:18', '6:1', '2:9', '7:16']);
  });

  it('PolicyError: code config_invalid, a TapdError, problems with file/line/column, and a message listing them', () => {
    const path = write('network lan bridge br0\npermit mallory on lan\nfoo\n');
    let err: unknown;
    try {
      loadPolicy(path, OPTS);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PolicyError);
    // The one TapdError of src/errors, which the daemon's replies and the client's handling test for
    // (a second class of the same name, e.g. a re-export turned into a copy, would fail here).
    expect(err).toBeInstanceOf(TapdError);
    expect(Object.getPrototypeOf(PolicyError.prototype)).toBe(TapdError.prototype);
    const pe = err as PolicyError;
    expect(pe.code).toBe('config_invalid');
    expect(pe.name).toBe('PolicyError');
    expect(pe.problems).toEqual([
      { file: path, line: 2, column: 8, message: expect.stringContaining('unknown user "mallory"') },
      { file: path, line: 3, column: 1, message: expect.stringContaining('unknown keyword "foo"') },
    ]);
    expect(pe.message).toContain('the tapd configuration has 2 errors');
    expect(pe.message).toContain(`${path}:2:8: unknown user "mallory"`);
    expect(pe.message).toContain('tapd --check-config');
  });

  it('a missing main file is reported as file: message', () => {
    const path = join(dir, 'does-not-exist.conf');
    expect(checkConfig(path, OPTS)).toEqual({ ok: false, problems: [`${path}: cannot read ${path}: no such file or directory`] });
  });

  it('the main file must be a regular file', () => {
    expect(checkConfig(dir, OPTS).problems).toEqual([`${dir}: ${dir} is not a regular file`]);
  });
});

describe('limits', () => {
  it('parses every limit and unit', () => {
    const p = load('limits max-connections 10 request-timeout 500ms max-leases 99\nlimits max-queues 4 hook-timeout 2m idle-exit 1h\n');
    expect(p.limits).toEqual({ maxConnections: 10, maxConnectionsPerUser: 32, requestTimeoutMs: 500, maxLeases: 99, maxQueues: 4, hookTimeoutMs: 120000, idleExitMs: 3600000 });
  });
  it('idle-exit 0 means never; a bare 0 needs no unit', () => {
    expect(load('limits idle-exit 0 request-timeout 5s').limits).toMatchObject({ idleExitMs: 0, requestTimeoutMs: 5000 });
  });
  it('unset limits keep their defaults', () => {
    expect(load('limits max-leases 7').limits).toEqual({ ...DEFAULT_LIMITS, maxLeases: 7 });
  });
});

describe('precedence: the last matching rule wins, default deny', () => {
  it('permit @kvm then deny bob: bob is denied, alice permitted', () => {
    const p = load(`${NETS}permit @kvm on lan\ndeny bob on lan\n`);
    expect(decide(p, ALICE, 'lan').allowed).toBe(true);
    const d = decide(p, BOB, 'lan');
    expect(d).toMatchObject({ allowed: false });
    expect(d.reason).toMatch(/^denied by .*:5 \(deny bob on lan\)$/);
  });

  it('deny bob then permit @kvm: the later permit wins, bob is permitted', () => {
    const p = load(`${NETS}deny bob on lan\npermit @kvm on lan\n`);
    expect(decide(p, BOB, 'lan').allowed).toBe(true);
    expect(decide(p, ALICE, 'lan').allowed).toBe(true);
    expect(decide(p, BOB, 'lan').reason).toMatch(/^permitted by .*:5 \(permit @kvm on lan\)$/);
  });

  it('deny everyone on any after specific permits denies everyone; a later permit reopens one', () => {
    const p = load(`${NETS}permit alice on any\npermit bob on lan\ndeny everyone on any\npermit alice on host\n`);
    expect(decide(p, ALICE, 'lan').allowed).toBe(false);
    expect(decide(p, BOB, 'lan').allowed).toBe(false);
    expect(decide(p, ALICE, 'host').allowed).toBe(true);
  });

  it('no matching rule: default deny', () => {
    const p = load(`${NETS}permit alice on lan\n`);
    expect(decide(p, ALICE, 'wan')).toEqual({ allowed: false, reason: DEFAULT_DENY_REASON, logReason: expect.any(String) });
    expect(decide(p, BOB, 'lan')).toMatchObject({ allowed: false, reason: 'no rule permits you on this network (default deny)' });
  });

  it('on any matches every network', () => {
    const p = load(`${NETS}permit everyone on any\n`);
    for (const n of ['lan', 'wan', 'host']) expect(decide(p, NOBODY, n).allowed).toBe(true);
  });

  it('rules in included files stand where the include is', () => {
    const inc = write('deny alice on lan\n');
    const p = load(`${NETS}permit alice on lan\ninclude ${inc}\n`);
    expect(decide(p, ALICE, 'lan').reason).toBe(`denied by ${inc}:1 (deny alice on lan)`);
    const q = load(`${NETS}include ${inc}\npermit alice on lan\n`);
    expect(decide(q, ALICE, 'lan').allowed).toBe(true);
  });

  it('a network may be defined after the rules that use it', () => {
    const p = load('permit alice on lan\nnetwork lan bridge br0\n');
    expect(decide(p, ALICE, 'lan').allowed).toBe(true);
  });
});

describe('subjects: exact names, groups, numeric ids', () => {
  it('bob never matches bobby, and bobby never bob', () => {
    const p = load(`${NETS}permit bob on lan\npermit bobby on wan\n`);
    expect(decide(p, BOB, 'lan').allowed).toBe(true);
    expect(decide(p, BOBBY, 'lan').allowed).toBe(false);
    expect(decide(p, BOB, 'wan').allowed).toBe(false);
    expect(decide(p, BOBBY, 'wan').allowed).toBe(true);
  });

  it('@dev never matches a member of @devops', () => {
    const p = load(`${NETS}permit @dev on lan\n`);
    expect(decide(p, BOBBY, 'lan').allowed).toBe(false); // devops
    expect(decide(p, CAROL, 'lan').allowed).toBe(true); // dev
  });

  it('a user named like a group is matched only as the user', () => {
    const p = load(`${NETS}permit dev on lan\n`);
    expect(decide(p, DEV_USER, 'lan').allowed).toBe(true); // the user dev
    expect(decide(p, CAROL, 'lan').allowed).toBe(false); // a member of group dev
    const q = load(`${NETS}permit @dev on lan\n`);
    expect(decide(q, DEV_USER, 'lan').allowed).toBe(false);
    expect(decide(q, CAROL, 'lan').allowed).toBe(true);
  });

  it('a group rule matches the primary gid and any supplementary gid', () => {
    const p = load(`${NETS}permit @kvm on lan\n`);
    expect(decide(p, { uid: 5000, gid: 100, groups: [], pid: 1 }, 'lan').allowed).toBe(true);
    expect(decide(p, { uid: 5000, gid: 5000, groups: [7, 100], pid: 1 }, 'lan').allowed).toBe(true);
    expect(decide(p, { uid: 5000, gid: 5000, groups: [7], pid: 1 }, 'lan').allowed).toBe(false);
  });

  it('numeric uids and gids need not be in the passwd/group files', () => {
    const p = load(`${NETS}permit 1001 on lan\npermit @4242 on wan\npermit 77777 on host\n`);
    expect(decide(p, ALICE, 'lan').allowed).toBe(true);
    expect(decide(p, BOB, 'lan').allowed).toBe(false);
    expect(decide(p, { uid: 9, gid: 9, groups: [4242], pid: 1 }, 'wan').allowed).toBe(true);
    expect(decide(p, { uid: 77777, gid: 9, groups: [], pid: 1 }, 'host').allowed).toBe(true);
    expect(decide(p, { uid: 4242, gid: 9, groups: [], pid: 1 }, 'wan').allowed).toBe(false); // @4242 is a gid, not a uid
  });

  it('everyone matches every subject', () => {
    const p = load(`${NETS}permit everyone on host\n`);
    for (const s of [ALICE, BOB, NOBODY, ROOT]) expect(decide(p, s, 'host').allowed).toBe(true);
  });

  it('an unreadable passwd file is an error, not an empty user list', () => {
    const got = problemsOf(`${NETS}permit alice on lan\n`, { ...OPTS, passwdFile: join(dir, 'no-passwd') });
    expect(got).toEqual([expect.stringMatching(/^4:8: cannot look up user "alice": cannot read .*no-passwd \(ENOENT\)$/)]);
  });
});

describe('rule options and Permit', () => {
  const p = (): Policy => load(`${NETS}permit @kvm on lan leases 2 total 5 queues 4 mac mtu vhost polkit\npermit alice on wan\n`);

  it('Permit carries the quotas, polkit and the grants', () => {
    const d = decide(p(), BOB, 'lan', { queues: 4, wantsMac: true, wantsMtu: true, vhost: true }) as Permit;
    expect(d).toMatchObject({
      allowed: true, maxLeasesPerNetwork: 2, maxLeasesPerUser: 5, askPolkit: true,
      grants: { queues: 4, mac: true, mtu: true, vhost: true }, rule: { line: 4 },
    });
    expect(d.reason).toMatch(/^permitted by .*:4 \(permit @kvm on lan leases 2 total 5 queues 4 mac mtu vhost polkit\)$/);
  });

  it('a rule without options: one queue, no MAC, MTU, vhost, no quotas, no polkit', () => {
    const d = decide(p(), ALICE, 'wan') as Permit;
    expect(d).toMatchObject({ allowed: true, askPolkit: false, grants: { queues: 1, mac: false, mtu: false, vhost: false } });
    expect(d.maxLeasesPerNetwork).toBeUndefined();
    expect(d.maxLeasesPerUser).toBeUndefined();
  });

  it.each([
    [{ wantsMac: true }, 'you asked for a MAC address of your own, which needs option "mac"'],
    [{ wantsMtu: true }, 'you asked for an MTU of your own, which needs option "mtu"'],
    [{ vhost: true }, 'you asked for vhost-net, which needs option "vhost"'],
    [{ queues: 2 }, 'you asked for 2 queues; this rule grants at most 1 (option "queues N")'],
  ])('a request needing a missing option is denied, naming it: %j', (over, words) => {
    const d = decide(p(), ALICE, 'wan', over);
    expect(d.allowed).toBe(false);
    expect(d.reason).toMatch(/^denied by .*:5 \(permit alice on wan\): /);
    expect(d.reason).toContain(words);
  });

  it('queues above the rule are denied, and so is more than limits max-queues', () => {
    expect(decide(p(), ALICE, 'lan', { queues: 5 }).reason).toContain('you asked for 5 queues; this rule grants at most 4');
    const q = load(`${NETS}permit alice on lan queues 8\nlimits max-queues 2\n`);
    expect(decide(q, ALICE, 'lan', { queues: 2 }).allowed).toBe(true);
    expect(decide(q, ALICE, 'lan', { queues: 3 }).reason).toContain('tapd allows at most 2 (limits max-queues)');
  });

  it('vnet_hdr needs no option', () => {
    expect(decide(p(), ALICE, 'wan', { vnetHdr: true }).allowed).toBe(true);
  });

  it('the options of the LAST matching rule apply, not a union', () => {
    const q = load(`${NETS}permit @kvm on lan mac\npermit alice on lan\n`);
    expect(decide(q, ALICE, 'lan', { wantsMac: true }).allowed).toBe(false);
    expect(decide(q, BOB, 'lan', { wantsMac: true }).allowed).toBe(true);
  });
});

describe('explanations and the existence oracle', () => {
  const p = (): Policy => load(`${NETS}permit @kvm on lan\ndeny bob on lan\ndeny carol on wan\npermit alice on host\n`);

  it('names the deciding rule', () => {
    expect(decide(p(), ALICE, 'lan').reason).toMatch(/^permitted by \/.*\.conf:4 \(permit @kvm on lan\)$/);
    expect(decide(p(), BOB, 'lan').reason).toMatch(/^denied by \/.*\.conf:5 \(deny bob on lan\)$/);
    expect(decide(p(), ALICE, 'wan').reason).toBe('no rule permits you on this network (default deny)');
  });

  it('a forbidden existing network gets the documented default-deny words, which never name it', () => {
    const policy = p();
    const forbidden = decide(policy, ALICE, 'wan');
    expect(forbidden.allowed).toBe(false);
    // Pinned to the documented words, not to the constant both sides are built from: the daemon
    // answers a missing network with DEFAULT_DENY_REASON, so the two must read the same.
    const words = 'no rule permits you on this network (default deny)';
    expect(forbidden.reason).toBe(words);
    expect(DEFAULT_DENY_REASON).toBe(words);
    expect(policy.resolve('no-such-net')).toBeUndefined();
    expect(policy.resolve('wan')).toBeDefined();
  });

  it('a deny rule is not named to someone no permit rule covers (it would reveal the network)', () => {
    // carol is named in a deny rule for wan, but nothing would permit her there: she hears
    // exactly what she would hear for a network that does not exist.
    const d = decide(p(), CAROL, 'wan');
    expect(d.reason).toBe(DEFAULT_DENY_REASON);
    expect(d.allowed).toBe(false);
    // The daemon's log still gets the whole story.
    expect(d.allowed === false && d.logReason).toMatch(/deny carol on wan/);
  });

  it('a decision for a network not in this policy is a default deny', () => {
    const stale: Network = { name: 'gone', mode: 'hostonly', createBridge: false, isolated: false, source: { file: '/x', line: 1 } };
    expect(p().decide(ALICE, intent(stale)).reason).toBe(DEFAULT_DENY_REASON);
  });
});

describe('resolve', () => {
  it('finds a network by name, then bridge, then uplink NIC', () => {
    const p = load(`${NETS}network br9 bridge br9\n`);
    expect(p.resolve('lan')?.name).toBe('lan');
    expect(p.resolve('br0')?.name).toBe('lan');
    expect(p.resolve('wan')?.name).toBe('wan');
    expect(p.resolve('br-eth1')?.name).toBe('wan');
    expect(p.resolve('eth1')?.name).toBe('wan');
    expect(p.resolve('host')?.name).toBe('host');
    expect(p.resolve('br9')?.name).toBe('br9');
    expect(p.resolve('br')).toBeUndefined();
    expect(p.resolve('')).toBeUndefined();
  });
});

describe('admins', () => {
  it('root always; admin @group and admin user; nobody else', () => {
    const p = load('admin @wheel\nadmin bob\n');
    expect(p.isAdmin(ROOT)).toBe(true);
    expect(p.isAdmin(CAROL)).toBe(true); // wheel
    expect(p.isAdmin(BOB)).toBe(true);
    expect(p.isAdmin(BOBBY)).toBe(false);
    expect(p.isAdmin(ALICE)).toBe(false);
    expect(load('').isAdmin(ALICE)).toBe(false);
    expect(load('').isAdmin(ROOT)).toBe(true);
  });
});

describe('include', () => {
  it('includes a directory: its *.conf files in C-locale order, others skipped', () => {
    const d = join(dir, `inc${++seq}`);
    write('permit alice on lan\n', `inc${seq}/b.conf`);
    write('deny alice on lan\n', `inc${seq}/B.conf`); // 'B' < '_' < 'b' in C order
    write('network lan bridge br0\n', `inc${seq}/_net.conf`);
    write('this is not parsed\n', `inc${seq}/README`);
    write('neither is this\n', `inc${seq}/.hidden.conf`);
    write('nor this\n', `inc${seq}/c.conf~`);
    const main = write(`include ${d}/\n`);
    const p = loadPolicy(main, OPTS);
    expect(p.files).toEqual([main, join(d, 'B.conf'), join(d, '_net.conf'), join(d, 'b.conf')]);
    expect(decide(p, ALICE, 'lan').reason).toBe(`permitted by ${join(d, 'b.conf')}:1 (permit alice on lan)`);
  });

  it('an empty include directory is fine', () => {
    const d = join(dir, `empty${++seq}`);
    mkdirSync(d);
    expect(problemsOf(`include ${d}\n`)).toEqual([]);
  });

  it('a missing include is an error at the include line', () => {
    const missing = join(dir, 'missing.conf');
    expect(problemsOf(`${NETS}include ${missing}\n`)).toEqual([`4:9: cannot read ${missing}: no such file or directory`]);
  });

  it('an include cycle is an error, and so is including yourself', () => {
    const a = join(dir, `cyc${++seq}a.conf`);
    const b = join(dir, `cyc${seq}b.conf`);
    write(`include ${b}\n`, `cyc${seq}a.conf`);
    write(`# b\ninclude ${a}\n`, `cyc${seq}b.conf`);
    expect(checkConfig(a, OPTS).problems).toEqual([`${b}:2:9: include cycle: ${a} -> ${b} -> ${a}`]);
    const self = join(dir, `self${++seq}.conf`);
    write(`include ${self}\n`, `self${seq}.conf`);
    expect(checkConfig(self, OPTS).problems).toEqual([`${self}:1:9: include cycle: ${self} -> ${self}`]);
  });

  it('errors inside an included file carry that file name', () => {
    const inc = write('network lan bridge br0\npermit alice on lan queues 0\n');
    const main = write(`include ${inc}\n`);
    expect(checkConfig(main, OPTS).problems).toEqual([`${inc}:2:28: "queues" 0 is out of range (expected a whole number from 1 to 16)`]);
  });

  it('a network defined twice across files names both places', () => {
    const inc = write('network lan hostonly\n');
    const main = write(`network lan bridge br0\ninclude ${inc}\n`);
    expect(checkConfig(main, OPTS).problems).toEqual([`${inc}:1:9: duplicate network lan (first defined at ${main}:1)`]);
  });
});

describe('qemu-bridge-conf (qemu-bridge-helper ACL files)', () => {
  it('allow BR makes an implicit bridged network named after the bridge, for everyone by default', () => {
    const acl = write('# QEMU ACL\nallow br5\n', `bridge${++seq}.conf`);
    const p = load(`qemu-bridge-conf ${acl}\n`);
    expect(net(p, 'br5')).toMatchObject({ name: 'br5', mode: 'bridged', bridge: { value: 'br5' }, createBridge: false, isolated: false, source: { file: acl, line: 2 } });
    expect(net(p, 'br5').up).toBeUndefined();
    const d = decide(p, NOBODY, 'br5');
    expect(d).toMatchObject({ allowed: true, askPolkit: false, grants: { queues: 1, mac: false, mtu: false, vhost: false } });
    expect(d.reason).toMatch(new RegExp(`^permitted by .*:1 \\(qemu-bridge-conf ${acl}\\), ${acl}:2 \\(allow br5\\)$`));
    expect(p.files).toContain(acl);
  });

  it('a bridge of a configured network is not duplicated; the ACL permits that network', () => {
    const acl = write('allow br0\n');
    const p = load(`${NETS}qemu-bridge-conf ${acl}\n`);
    expect([...p.networks.keys()].sort()).toEqual(['host', 'lan', 'wan']);
    expect(decide(p, ALICE, 'lan').allowed).toBe(true);
    expect(decide(p, ALICE, 'wan').allowed).toBe(false);
  });

  it('deny after allow denies (every deny beats every allow), and so does deny before allow', () => {
    for (const body of ['allow br0\ndeny br0\n', 'deny br0\nallow br0\n', 'allow br0\ndeny all\n', 'deny all\nallow br0\n']) {
      const acl = write(body);
      const p = load(`${NETS}qemu-bridge-conf ${acl}\n`);
      expect(decide(p, ALICE, 'lan').allowed, body).toBe(false);
    }
    // A denied bridge does not become a network.
    const acl = write('allow br7\ndeny br7\n');
    expect(load(`qemu-bridge-conf ${acl}\n`).networks.size).toBe(0);
  });

  it('allow all permits every network with a bridge, but makes no network and says nothing about host-only ones', () => {
    const acl = write('allow all\ndeny br-eth1\n');
    const p = load(`${NETS}qemu-bridge-conf ${acl}\n`);
    expect(p.networks.size).toBe(3);
    expect(decide(p, ALICE, 'lan').allowed).toBe(true);
    expect(decide(p, ALICE, 'wan').allowed).toBe(false); // denied by name, found by its bridge
    expect(decide(p, ALICE, 'host').allowed).toBe(false);
  });

  it('allow all and allow BR together: BR still becomes a network', () => {
    const acl = write('allow all\nallow br6\n');
    const p = load(`qemu-bridge-conf ${acl}\n`);
    expect(decide(p, ALICE, 'br6').reason).toContain(`${acl}:1 (allow all)`);
  });

  it('for SUBJECT limits who the file applies to; rule options apply', () => {
    const acl = write('allow br0\n');
    const p = load(`${NETS}qemu-bridge-conf ${acl} for @kvm queues 2 vhost polkit\n`);
    expect(decide(p, ALICE, 'lan', { queues: 2, vhost: true })).toMatchObject({ allowed: true, askPolkit: true });
    expect(decide(p, CAROL, 'lan').allowed).toBe(false);
  });

  it('acts as one rule at its position: later rules override it, it overrides earlier ones, and says nothing about bridges it does not name', () => {
    const acl = write('allow br0\ndeny br-eth1\n');
    const before = load(`${NETS}permit everyone on any\nqemu-bridge-conf ${acl}\n`);
    expect(decide(before, ALICE, 'wan').allowed).toBe(false); // the ACL's deny is later
    expect(decide(before, ALICE, 'host').allowed).toBe(true); // the ACL does not mention host
    expect(decide(before, ALICE, 'lan').reason).toContain('(allow br0)');
    const after = load(`${NETS}qemu-bridge-conf ${acl}\npermit everyone on any\n`);
    expect(decide(after, ALICE, 'wan').allowed).toBe(true);
    const denyLater = load(`${NETS}qemu-bridge-conf ${acl}\ndeny alice on lan\n`);
    expect(decide(denyLater, ALICE, 'lan').reason).toMatch(/denied by .*:5 \(deny alice on lan\)$/);
  });

  it('nested include, in order, with the included line named', () => {
    const inner = write('deny br1\n');
    const mid = write(`allow br1\ninclude ${inner}\nallow br2\n`);
    const acl = write(`include ${mid}\n`);
    const p = load(`qemu-bridge-conf ${acl}\n`);
    expect([...p.networks.keys()]).toEqual(['br2']);
    expect(p.files).toEqual(expect.arrayContaining([acl, mid, inner]));
  });

  it('a denial by the ACL names the ACL line to those it permits elsewhere', () => {
    const acl = write('allow br-eth1\ndeny br0\n');
    const p = load(`${NETS}permit alice on lan\nqemu-bridge-conf ${acl}\n`);
    expect(decide(p, ALICE, 'lan').reason).toMatch(new RegExp(`^denied by .*:5 \\(qemu-bridge-conf ${acl}\\), ${acl}:2 \\(deny br0\\)$`));
    expect(decide(p, BOB, 'lan').reason).toBe(DEFAULT_DENY_REASON);
  });

  it('a missing include is an error (never fail open)', () => {
    const missing = join(dir, 'no-such-acl.conf');
    const acl = write(`allow br0\n  include ${missing}\n`);
    expect(problemsOf(`${NETS}qemu-bridge-conf ${acl}\n`)).toEqual([`${acl}:2:11: cannot read ${missing}: no such file or directory`]);
  });

  it('a missing ACL file is an error at the qemu-bridge-conf line', () => {
    const missing = join(dir, 'no-bridge.conf');
    expect(problemsOf(`qemu-bridge-conf ${missing}\n`)).toEqual([`1:18: cannot read ${missing}: no such file or directory`]);
  });

  it('ACL syntax errors, at file:line:column of the ACL file', () => {
    const long = `allow ${'b'.repeat(1019)}`;
    const acl = write(`allow\npermit br0\nallow br0 # not a comment in QEMU\nallow br0123456789abcdef\ninclude relative.conf\n${long}\n\tdeny\tbr1\t\n`);
    expect(checkConfig(write(`qemu-bridge-conf ${acl}\n`), OPTS).problems).toEqual([
      `${acl}:1:1: "allow" needs a bridge name or "all"`,
      `${acl}:2:1: unknown command "permit" in qemu-bridge-helper ACL file (expected allow, deny or include)`,
      `${acl}:3:11: unexpected "#" (one argument per line; comments must be on lines of their own)`,
      `${acl}:4:7: "br0123456789abcdef" is not a valid bridge name (1 to 15 bytes of A-Z a-z 0-9 _ . - and not "." or ".."; names are never truncated)`,
      `${acl}:5:9: "include" needs an absolute path, not "relative.conf"`,
      `${acl}:6:1025: line is 1025 bytes long; the limit is 1024 (long lines are never split or truncated)`,
    ]);
  });

  it('an ACL include cycle is an error', () => {
    const a = join(dir, `acyc${++seq}a.conf`);
    const b = join(dir, `acyc${seq}b.conf`);
    write(`include ${b}\n`, `acyc${seq}a.conf`);
    write(`include ${a}\n`, `acyc${seq}b.conf`);
    expect(checkConfig(write(`qemu-bridge-conf ${a}\n`), OPTS).problems).toEqual([`${b}:1:9: include cycle: ${a} -> ${b} -> ${a}`]);
  });

  it('an allowed bridge whose name another network holds is an error', () => {
    const acl = write('allow host\n');
    expect(problemsOf(`${NETS}qemu-bridge-conf ${acl}\n`)).toEqual([
      expect.stringMatching(new RegExp(`^${acl}:1:7: bridge host is allowed here but is not the bridge of any network, and host is already the name of network host`)),
    ]);
  });

  it('qemu-bridge-conf syntax errors', () => {
    const acl = write('allow br0\n');
    expect(problemsOf(`qemu-bridge-conf ${acl} for\n`)).toEqual([expect.stringContaining(`1:${19 + acl.length}: "for" needs a user, @group or everyone`)]);
    expect(problemsOf(`qemu-bridge-conf ${acl} for @nope\n`)).toEqual([expect.stringContaining(`1:${23 + acl.length}: unknown group "nope"`)]);
    expect(problemsOf('qemu-bridge-conf bridge.conf\n')).toEqual(['1:18: "qemu-bridge-conf" needs an absolute path, not "bridge.conf"']);
  });
});
