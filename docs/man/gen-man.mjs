#!/usr/bin/env node
// Generates the man pages tapd(8), tapctl(1), tapd-bridge-helper(8) and tapd.conf(5) from one
// source each, so they cannot drift: the prose around them is docs/man/*.in, the OPTIONS and
// COMMANDS sections are parsed from the built programs' own --help output, and tapd.conf(5) is
// docs/policy.md converted. Output is man(7), checked by test/man.test.ts with mandoc -T lint.
//
//   node docs/man/gen-man.mjs [--dist DIR] [--out DIR] [--list]
//
// --dist: the build output holding cli/*.js (default dist/); --out: where the pages go (default
// .cache/man); --list prints the generated file names. The date comes from SOURCE_DATE_EPOCH,
// else the last commit, else package.json's mtime: the same tree always gives the same bytes.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '../..');

function parseArgs(argv) {
  const o = { dist: path.join(REPO, 'dist'), out: path.join(REPO, '.cache/man'), list: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--dist') o.dist = path.resolve(argv[++i]);
    else if (a === '--out') o.out = path.resolve(argv[++i]);
    else if (a === '--list') o.list = true;
    else throw new Error(`gen-man: unknown argument ${a}`);
  }
  return o;
}

// --- roff ----------------------------------------------------------------------------------

/** Plain text for a roff text line: backslashes and minus signs escaped. */
export function esc(s) {
  return s.replaceAll('\\', '\\e').replaceAll('-', '\\-');
}

/** Guards a text line that would otherwise start with a control character. */
function line(s) {
  return /^[.']/.test(s) ? `\\&${s}` : s;
}

/** Markdown-ish inline markup (`code`, **bold**, [text](link)) on escaped text. */
function inline(s) {
  let out = '';
  const re = /`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\(([^)]+)\)/g;
  let last = 0;
  for (const m of s.matchAll(re)) {
    out += esc(s.slice(last, m.index));
    if (m[1] !== undefined) out += `\\fB${esc(m[1])}\\fR`;
    else if (m[2] !== undefined) out += `\\fB${inline(m[2])}\\fR`;
    else if (m[4].startsWith('#')) out += inline(m[3]);
    else out += `${inline(m[3])} (${esc(m[4])})`;
    last = m.index + m[0].length;
  }
  return out + esc(s.slice(last));
}

function literal(lines) {
  return ['.PP', '.RS 4', '.nf', ...lines.map((l) => line(esc(l))), '.fi', '.RE'];
}

// --- commander --help ------------------------------------------------------------------------

/**
 * Parses commander's help text: usage, description, the Arguments/Options/Commands lists
 * (entries at two spaces, wrapped descriptions indented further) and the text after them.
 */
export function parseHelp(text) {
  const lines = text.replace(/\n+$/, '').split('\n');
  const help = { usage: '', description: '', sections: {}, after: [] };
  let i = 0;
  if (lines[i]?.startsWith('Usage: ')) help.usage = lines[i++].slice('Usage: '.length);
  while (lines[i] === '') i++;
  const desc = [];
  while (i < lines.length && lines[i] !== '' && !/^[A-Z][a-z]+:$/.test(lines[i])) desc.push(lines[i++]);
  help.description = desc.join(' ');
  while (i < lines.length) {
    while (lines[i] === '') i++;
    const head = /^(Arguments|Options|Commands):$/.exec(lines[i] ?? '');
    if (!head) break;
    i++;
    const entries = [];
    for (; i < lines.length && lines[i] !== ''; i++) {
      const entry = /^ {2}(\S(?:.*?\S)?)(?: {2,}(\S.*))?$/.exec(lines[i]);
      const more = /^ {3,}(\S.*)$/.exec(lines[i]);
      if (entry && !/^ {3}/.test(lines[i])) entries.push({ term: entry[1], text: entry[2] ?? '' });
      else if (more && entries.length) entries.at(-1).text = `${entries.at(-1).text} ${more[1]}`.trim();
      else throw new Error(`gen-man: cannot parse help line: ${JSON.stringify(lines[i])}`);
    }
    help.sections[head[1]] = entries;
  }
  while (lines[i] === '') i++;
  help.after = lines.slice(i);
  return help;
}

/** The option names of one entry term ("-b, --network <name>" -> ["-b", "--network"]). */
export function optionNames(term) {
  return term.split(/,\s*/).map((t) => t.split(' ')[0]);
}

function termRoff(term) {
  // Flags bold, placeholders italic: "-b, --network <name>" -> \fB\-b\fR, \fB\-\-network\fR \fIname\fR
  return term.split(/,\s*/).map((part) => {
    const [flag, ...rest] = part.split(' ');
    const args = rest.map((r) => `\\fI${esc(r.replace(/^<|>$/g, '').replace(/^\[|\]$/g, ''))}\\fR`).join(' ');
    return `\\fB${esc(flag)}\\fR${args ? ` ${args}` : ''}`;
  }).join(', ');
}

/** Escaped text where words too long for a line may break after a comma (\\: is a break point). */
function breakable(s) {
  return s.split(' ').map((w) => (w.length > 30 ? esc(w).replaceAll(',', ',\\:') : esc(w))).join(' ');
}

function entriesRoff(entries) {
  return entries.flatMap((e) => ['.TP', line(termRoff(e.term)), line(breakable(e.text))]);
}

function runHelp(file, args) {
  return execFileSync(process.execPath, [file, ...args], { encoding: 'utf8', env: { ...process.env, COLUMNS: '80' } });
}

// --- docs/policy.md -> man(7) -------------------------------------------------------------------

/** A table row's cells; a | inside `code` is text. */
function cells(row) {
  const out = [''];
  let code = false;
  for (const ch of row.trim().replace(/^\||\|$/g, '')) {
    if (ch === '`') code = !code;
    if (ch === '|' && !code) out.push('');
    else out[out.length - 1] += ch;
  }
  return out.map((c) => c.trim());
}

/** Converts the Markdown subset docs/policy.md uses; `skip` names sections left out. */
export function markdownToMan(md, skip = []) {
  const src = md.split('\n');
  const out = [];
  let fresh = true; // right after .SH/.SS: no paragraph macro needed
  const para = () => {
    if (!fresh) out.push('.PP');
    fresh = false;
  };
  let skipping = false;
  for (let i = 0; i < src.length;) {
    const l = src[i];
    let m;
    if ((m = /^(#{1,3}) (.*)$/.exec(l))) {
      i++;
      if (m[1] === '#') continue; // the title: the page's NAME says it
      skipping = m[1] === '##' && skip.includes(m[2]);
      if (skipping) continue;
      while (out.at(-1) === '.PP') out.pop();
      if (m[1] === '##') out.push(`.SH "${m[2].replace(/`/g, '').toUpperCase()}"`);
      else out.push(`.SS "${m[2].replace(/`/g, '')}"`);
      fresh = true;
      continue;
    }
    if (skipping) {
      i++;
      continue;
    }
    if (l.startsWith('```')) {
      const body = [];
      for (i++; i < src.length && !src[i].startsWith('```'); i++) body.push(src[i]);
      i++;
      const lit = literal(body);
      if (fresh) lit.shift();
      out.push(...lit);
      fresh = false;
      continue;
    }
    if (l.startsWith('|')) {
      const rows = [];
      for (; i < src.length && src[i].startsWith('|'); i++) {
        rows.push(cells(src[i]));
      }
      const [header, , ...body] = rows;
      // A table becomes a tagged list: the first cell is the tag, the second the text, and
      // any further cells follow as "Header: value."
      para();
      out.push(`${line(inline(header.slice(0, 2).join(': ')))}:`);
      for (const r of body) {
        const extra = r.slice(2).map((c, k) => ` ${inline(header[k + 2].replace(/^./, (x) => x.toUpperCase()))}: ${inline(c)}.`).join('');
        out.push('.TP', line(inline(r[0])), line(inline(r[1]) + extra));
      }
      fresh = false;
      continue;
    }
    if (/^- /.test(l)) {
      for (; i < src.length && /^(- | {2}\S)/.test(src[i]); i++) {
        if (src[i].startsWith('- ')) out.push('.IP \\(bu 2');
        out.push(line(inline(src[i].replace(/^- | {2}/, ''))));
      }
      fresh = false;
      out.push('.PP');
      fresh = true;
      continue;
    }
    if (l.trim() === '') {
      i++;
      continue;
    }
    para();
    for (; i < src.length && src[i].trim() !== '' && !/^(#|```|\||- )/.test(src[i]); i++) out.push(line(inline(src[i])));
  }
  // A list at the very end leaves a dangling paragraph macro.
  while (out.at(-1) === '.PP') out.pop();
  return out;
}

/** Breaks text lines (not requests, not no-fill blocks) at blanks to at most 80 bytes. */
function wrap(lines) {
  const out = [];
  let nofill = false;
  for (const l of lines) {
    if (/^\.nf\b/.test(l)) nofill = true;
    if (/^\.fi\b/.test(l)) nofill = false;
    if (nofill || /^[.']/.test(l) || l.length <= 80) {
      out.push(l);
      continue;
    }
    let rest = l;
    while (rest.length > 80) {
      let cut = rest.lastIndexOf(' ', 80);
      if (cut <= 0) cut = rest.indexOf(' ', 80);
      if (cut <= 0) break;
      out.push(rest.slice(0, cut));
      rest = rest.slice(cut + 1).replace(/^ +/, '');
      // A continuation must not start with a control character.
      if (/^[.']/.test(rest)) rest = `\\&${rest}`;
    }
    out.push(rest);
  }
  return out;
}

// --- the pages -----------------------------------------------------------------------------------

function sourceDate() {
  const epoch = process.env.SOURCE_DATE_EPOCH;
  if (epoch && /^\d+$/.test(epoch)) return new Date(Number(epoch) * 1000).toISOString().slice(0, 10);
  try {
    const d = execFileSync('git', ['-C', REPO, 'log', '-1', '--format=%cs'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (/^\d{4}-\d\d-\d\d$/.test(d)) return d;
  } catch {
    // not a git checkout (a tarball): below
  }
  return statSync(path.join(REPO, 'package.json')).mtime.toISOString().slice(0, 10);
}

function tapctlCommands(tapctl) {
  const top = parseHelp(runHelp(tapctl, ['--help']));
  const out = [];
  for (const c of top.sections.Commands ?? []) {
    const name = c.term.split(' ')[0];
    if (name === 'help') continue;
    const h = parseHelp(runHelp(tapctl, ['help', name]));
    out.push(`.SS "${esc(h.usage.replace(/^tapctl /, ''))}"`, line(esc(h.description)));
    for (const [title, entries] of Object.entries(h.sections)) {
      const shown = entries.filter((e) => !optionNames(e.term).includes('--help'));
      if (shown.length === 0) continue;
      out.push('.PP', `${title}:`, '.RS 4', ...entriesRoff(shown), '.RE');
    }
    if (h.after.length) out.push(...literal(h.after));
  }
  return out;
}

export function generate(opts) {
  const dist = opts.dist;
  const cli = (n) => path.join(dist, 'cli', `${n}.js`);
  const version = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')).version;
  const date = sourceDate();
  const helps = {
    tapd: parseHelp(runHelp(cli('tapd'), ['--help'])),
    tapctl: parseHelp(runHelp(cli('tapctl'), ['--help'])),
  };
  // The helper is the C program native/build.sh makes (npm run build).
  const helperHelp = execFileSync(path.join(REPO, 'native/build/tapd-bridge-helper'), ['--help'], { encoding: 'utf8' });
  // The helper's usage is hand-formatted, not commander's: "  --flag   text" lines.
  const helperOptions = [...helperHelp.matchAll(/^ {2}(--\S+) {2,}(\S.*)$/gm)].map((m) => ({ term: m[1], text: m[2] }));
  const policy = readFileSync(path.join(REPO, 'docs/policy.md'), 'utf8');
  const expand = {
    'OPTIONS tapd': () => entriesRoff(helps.tapd.sections.Options),
    'AFTER tapd': () => literal(helps.tapd.after).slice(1),
    'OPTIONS tapctl': () => entriesRoff(helps.tapctl.sections.Options),
    'COMMANDS tapctl': () => tapctlCommands(cli('tapctl')),
    'AFTER tapctl': () => literal(helps.tapctl.after).slice(1),
    'OPTIONS tapd-bridge-helper': () => entriesRoff(helperOptions),
    POLICY: () => markdownToMan(policy, ['Contents', 'For the daemon: the API']),
  };
  const pages = {};
  for (const name of readdirSync(HERE).filter((n) => n.endsWith('.in')).sort()) {
    const text = readFileSync(path.join(HERE, name), 'utf8').replaceAll('@VERSION@', version).replaceAll('@DATE@', date);
    const lines = text.replace(/\n$/, '').split('\n').flatMap((l) => {
      const m = /^@([A-Z]+(?: [a-z-]+)?)@$/.exec(l);
      if (!m) return [l];
      const f = expand[m[1]];
      if (!f) throw new Error(`gen-man: ${name}: unknown placeholder ${l}`);
      return f();
    });
    pages[name.slice(0, -'.in'.length)] = `${wrap(lines).join('\n')}\n`;
  }
  return pages;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const opts = parseArgs(process.argv.slice(2));
  const pages = generate(opts);
  mkdirSync(opts.out, { recursive: true });
  for (const [name, text] of Object.entries(pages)) {
    writeFileSync(path.join(opts.out, name), text);
    if (opts.list) process.stdout.write(`${name}\n`);
  }
}
