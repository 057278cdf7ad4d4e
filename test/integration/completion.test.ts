// completion/tapctl.bash, sourced into a real bash: COMPREPLY for subcommands, options (which
// must be the ones `tapctl help COMMAND` prints), NIC models and network names.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIST, ROOT } from '../helpers/netns.js';

const SCRIPT = join(ROOT, 'completion/tapctl.bash');
let dir: string;
let tapctl: string; // the real tapctl, through a wrapper like /usr/bin/tapctl
let stub: string; // a tapctl whose `networks --names` answers, recording its arguments

/** COMPREPLY after completing the last word of `line` (a trailing blank starts a new word). */
function complete(line: string, cmd = tapctl, env: Record<string, string> = {}): string[] {
  const words = line.split(' ');
  words[0] = cmd;
  const script = `source ${SCRIPT}
COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}
COMP_LINE=${JSON.stringify(words.join(' '))}; COMP_POINT=\${#COMP_LINE}
_tapctl; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const r = spawnSync('bash', ['--norc', '--noprofile', '-c', script], { encoding: 'utf8', cwd: dir, env: { ...process.env, ...env } });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  return r.stdout.split('\n').filter(Boolean).sort();
}

/** The long options `tapctl help CMD` lists (or `tapctl --help` for none). */
function helpOptions(cmd?: string): string[] {
  const r = spawnSync(process.execPath, [join(DIST, 'cli/tapctl.js'), ...(cmd ? ['help', cmd] : ['--help'])], { encoding: 'utf8' });
  // The Options: list ends at the first blank line (the text after it is prose).
  const section = /\nOptions:\n([\s\S]*?)(?:\n\n|$)/.exec(r.stdout)?.[1] ?? '';
  return [...section.matchAll(/^ {2}(-\S.*?)(?: {2,}|$)/gm)].flatMap((m) => m[1]!.split(/,\s*/).map((t) => t.split(' ')[0]!))
    .filter((o) => o.startsWith('--')).sort();
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tapd-completion-'));
  tapctl = join(dir, 'tapctl');
  writeFileSync(tapctl, `#!/bin/sh\nexec ${process.execPath} ${join(DIST, 'cli/tapctl.js')} "$@"\n`);
  chmodSync(tapctl, 0o755);
  stub = join(dir, 'tapctl-stub');
  writeFileSync(stub, `#!/bin/sh\necho "$*" >>${dir}/stub-args\n[ "$*" = "networks --names" ] || [ "$*" = "--socket /x/tapd.sock networks --names" ] || exit 1\nprintf 'lan\\nlab\\nwan\\n'\n`);
  chmodSync(stub, 0o755);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('bash completion for tapctl', () => {
  it('completes the subcommands, and help COMMAND', () => {
    expect(complete('tapctl ')).toEqual(['attach', 'check', 'detach', 'help', 'list', 'networks', 'qemu', 'reload', 'revoke', 'run', 'status']);
    expect(complete('tapctl re')).toEqual(['reload', 'revoke']);
    expect(complete('tapctl --socket /x/tapd.sock s')).toEqual(['status']);
    expect(complete('tapctl help q')).toEqual(['qemu']);
  });

  it('offers exactly the long options each subcommand\'s --help lists', () => {
    expect(complete('tapctl --')).toEqual(helpOptions());
    for (const cmd of ['qemu', 'run', 'list', 'networks', 'status', 'check', 'revoke', 'reload', 'attach', 'detach']) {
      expect(complete(`tapctl ${cmd} --`).filter((o) => o.startsWith('--')), cmd).toEqual(helpOptions(cmd));
    }
    expect(complete('tapctl qemu --v')).toEqual(['--verbose', '--vhost', '--vnet-hdr']);
    expect(complete('tapctl list -')).toEqual(['--help', '--json', '--user']);
  });

  it('completes network names from `tapctl networks --names`, asking the socket the line names', () => {
    expect(complete('tapctl qemu -b l', stub)).toEqual(['lab', 'lan']);
    expect(complete('tapctl --socket /x/tapd.sock check --network w', stub)).toEqual(['wan']);
    expect(readFileSync(join(dir, 'stub-args'), 'utf8')).toBe('networks --names\n--socket /x/tapd.sock networks --names\n');
    // No daemon (or a tapctl without `networks`): nothing, and no noise on the terminal.
    expect(complete('tapctl qemu -b ', tapctl, { TAPD_SOCKET: join(dir, 'missing.sock') })).toEqual([]);
  });

  it('completes NIC models, emulators, and after -- the command or files', () => {
    const models = complete('tapctl qemu --model ');
    expect(models).toContain('virtio-net-pci');
    expect(models).toContain('e1000');
    expect(complete('tapctl qemu --model e1')).toEqual(models.filter((m) => m.startsWith('e1')));
    expect(complete('tapctl run -b lan -- ech')).toContain('echo');
    writeFileSync(join(dir, 'disk.qcow2'), '');
    expect(complete('tapctl qemu -b lan -- -m 512 dis')).toEqual(['disk.qcow2']);
    // A value is expected after --mac: no options offered in its place.
    expect(complete('tapctl qemu --mac ')).toEqual([]);
    // Words after a valued option are not taken for the subcommand.
    expect(complete('tapctl --socket qemu l')).toEqual(['list']);
  });
});
