// The man pages docs/man/gen-man.mjs generates: lint-clean for mandoc and groff, and in step
// with the programs' --help and docs/policy.md (every option the help prints is documented, and
// the page documents no option the program lacks).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIST, ROOT } from '../helpers/netns.js';

const PAGES = ['tapctl.1', 'tapd-bridge-helper.8', 'tapd.8', 'tapd.conf.5'];
let out: string;
const page = (name: string) => readFileSync(join(out, name), 'utf8');

function help(cli: string, args: string[]): string {
  // tapd-bridge-helper is the C program native/build.sh makes; the others are Node programs.
  const r = cli === 'tapd-bridge-helper'
    ? spawnSync(join(DIST, '../native/build/tapd-bridge-helper'), args, { encoding: 'utf8' })
    : spawnSync(process.execPath, [join(DIST, `cli/${cli}.js`), ...args], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout;
}

/** Long and short option names in the option list of a --help text (up to its first blank line). */
function helpOptions(text: string): string[] {
  const list = /\nOptions:\n([\s\S]*?)(?:\n\n|\n?$)/.exec(text)?.[1] ?? '';
  return [...list.matchAll(/^ {2}(-\S.*?)(?: {2,}|$)/gm)].flatMap((m) => m[1]!.split(/,\s*/).map((t) => t.split(/[ =]/)[0]!)).sort();
}

/** Option names a page documents in a .TP list between two section or subsection headings. */
function pageOptions(text: string, from: RegExp, to = /^\.S[HS] /m): string[] {
  const start = text.search(from);
  expect(start, String(from)).toBeGreaterThanOrEqual(0);
  const rest = text.slice(start).split('\n').slice(1).join('\n');
  const end = rest.search(to);
  const body = end < 0 ? rest : rest.slice(0, end);
  return [...body.matchAll(/^\.TP\n(.*)$/gm)].flatMap((m) => [...m[1]!.matchAll(/\\fB((?:\\-)+[^\\ ]*(?:\\-[^\\ ]*)*)(?:=[^\\]*)?\\fR/g)]
    .map((x) => x[1]!.replaceAll('\\-', '-').replace(/=.*$/, ''))).filter((o) => o.startsWith('-')).sort();
}

beforeAll(() => {
  out = mkdtempSync(join(tmpdir(), 'tapd-man-'));
  const r = spawnSync(process.execPath, [join(ROOT, 'docs/man/gen-man.mjs'), '--dist', DIST, '--out', out, '--list'], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  expect(r.stdout.trim().split('\n').sort()).toEqual(PAGES);
});

afterAll(() => {
  rmSync(out, { recursive: true, force: true });
});

describe('man pages', () => {
  it.each(PAGES)('%s: mandoc -T lint and man --warnings report nothing', (name) => {
    const lint = spawnSync('mandoc', ['-T', 'lint', '-W', 'style', join(out, name)], { encoding: 'utf8' });
    expect(lint.error).toBeUndefined();
    expect({ status: lint.status, out: lint.stdout + lint.stderr }).toEqual({ status: 0, out: '' });
    // groff, as man-db and lintian run it.
    const groff = spawnSync('man', ['--warnings', '-E', 'UTF-8', '-l', '-Tutf8', '-Z', join(out, name)], {
      encoding: 'utf8', env: { ...process.env, MANWIDTH: '80', LC_ALL: 'C.UTF-8' },
    });
    expect(groff.status).toBe(0);
    expect(groff.stderr).toBe('');
  });

  it('documents exactly the options tapd --help prints', () => {
    const opts = helpOptions(help('tapd', ['--help']));
    expect(opts).toContain('--check-config');
    expect(pageOptions(page('tapd.8'), /^\.SH OPTIONS$/m)).toEqual(opts);
    // The default command line in the page is the one tapd-run runs.
    const run = readFileSync(join(ROOT, 'scripts/tapd-run'), 'utf8');
    for (const arg of ['--inh-caps -all,+net_admin', '--ambient-caps -all,+net_admin', '--bounding-set -all,+net_admin', '--no-new-privs',
      '--state-dir /run/tapd/state', '--socket-mode 0660']) {
      expect(run).toContain(arg);
      expect(page('tapd.8').replaceAll('\\-', '-')).toContain(arg);
    }
  });

  it('documents exactly the options of tapctl and of each tapctl command', () => {
    const text = page('tapctl.1');
    expect(pageOptions(text, /^\.SH OPTIONS$/m)).toEqual(helpOptions(help('tapctl', ['--help'])));
    const list = /\nCommands:\n([\s\S]*?)\n\n/.exec(help('tapctl', ['--help']))![1]!;
    const commands = [...list.matchAll(/^ {2}([a-z]+)\b/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
    expect(commands).toEqual(['qemu', 'run', 'list', 'networks', 'status', 'check', 'revoke', 'reload', 'attach', 'detach']);
    for (const cmd of commands) {
      const want = helpOptions(help('tapctl', ['help', cmd])).filter((o) => o !== '-h' && o !== '--help');
      expect(pageOptions(text, new RegExp(`^\\.SS "${cmd}\\b`, 'm')), cmd).toEqual(want);
    }
  });

  it('documents exactly the arguments tapd-bridge-helper takes', () => {
    const text = help('tapd-bridge-helper', ['--help']);
    const opts = [...text.matchAll(/^ {2}(--[a-z-]+)/gm)].map((m) => m[1]!);
    expect(opts).toEqual(['--use-vnet', '--fd', '--br', '--socket']);
    expect(pageOptions(page('tapd-bridge-helper.8'), /^\.SH OPTIONS$/m)).toEqual([...opts, '-h', '--help'].sort());
    // The argv QEMU builds, as native/tapd-bridge-helper.c parses it.
    expect(page('tapd-bridge-helper.8')).toContain('.B HELPER \\-\\-use\\-vnet \\-\\-fd=N \\-\\-br=BR');
  });

  it('tapd.conf(5) is docs/policy.md: every section, keyword table row and example', () => {
    const md = readFileSync(join(ROOT, 'docs/policy.md'), 'utf8');
    const man = page('tapd.conf.5');
    const skipped = ['Contents', 'For the daemon: the API'];
    const sections = [...md.matchAll(/^## (.*)$/gm)].map((m) => m[1]!).filter((s) => !skipped.includes(s));
    expect(sections.length).toBeGreaterThan(10);
    for (const s of sections) expect(man, s).toContain(`.SH "${s.replace(/`/g, '').toUpperCase()}"`);
    for (const s of skipped) expect(man).not.toContain(`.SH "${s.toUpperCase()}"`);
    // The first cell of every table row (limits, options, subjects, ...) is a tag in the page.
    const rendered = spawnSync('mandoc', ['-T', 'utf8', '-O', 'width=200', join(out, 'tapd.conf.5')], { encoding: 'utf8' }).stdout
      .replaceAll(new RegExp(`.${String.fromCharCode(8)}`, 'g'), ''); // bold and underline are overstrikes
    for (const m of md.matchAll(/^\| `([^`]+)`/gm)) expect(rendered, m[1]).toContain(m[1]!);
    for (const l of ['permit @vmadmins on vms leases 16 total 32 queues 8 mac mtu vhost', 'limits max-leases 256', 'include /etc/tapd/tapd.conf.d/']) {
      expect(rendered).toContain(l);
    }
  });

  it('the generator is deterministic (the package and install.sh reproduce)', () => {
    const again = mkdtempSync(join(tmpdir(), 'tapd-man-'));
    try {
      spawnSync(process.execPath, [join(ROOT, 'docs/man/gen-man.mjs'), '--dist', DIST, '--out', again], { encoding: 'utf8' });
      for (const name of readdirSync(out)) expect(readFileSync(join(again, name), 'utf8'), name).toBe(page(name));
    } finally {
      rmSync(again, { recursive: true, force: true });
    }
  });
});
