// The import layers of src/, read from the source itself (TypeScript's parser, not grep): static
// `import`/`export ... from`, `import type`, dynamic `import('...')`, `require('...')`, and worker
// files named by `new URL('./x.js', import.meta.url)`. The rules, lowest layer first:
//   src/errors    imports nothing of ours but src/errors; outside, node:* only
//   src/protocol  imports src/errors (and itself); outside, node:* only
//   src/sys       imports src/errors and src/sys; outside, node:* and ffi-rs (ffi-rs in libc.ts only)
//   src/daemon    never imports src/cli or src/client
//   commander     only from src/cli; ffi-rs only from src/sys/libc.ts
//   the daemon's closure (src/daemon/main.ts, and what src/cli/tapd.ts imports, tapd.ts itself
//   aside) holds no src/cli or src/client file, and needs nothing outside but node:*, pino and
//   ffi-rs (the last from src/sys/libc.ts only): that is all the code that runs as root.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

type Kind = 'import' | 'import type' | 'export from' | 'dynamic import' | 'require' | 'worker URL';
interface Edge {
  from: string; // repo-relative, e.g. src/daemon/main.ts
  spec: string; // as written
  to: string; // src/... .ts for our files, the package name or node:x otherwise
  kind: Kind;
  line: number;
}
interface Graph {
  files: Map<string, { lines: number }>;
  edges: Edge[];
  /** What cannot be checked: a computed specifier, an import that resolves to no file. */
  problems: string[];
}

/** Every module reference in one file's text. */
export function referencesOf(file: string, text: string): { refs: Omit<Edge, 'from' | 'to'>[]; problems: string[] } {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const refs: Omit<Edge, 'from' | 'to'>[] = [];
  const problems: string[] = [];
  const lineOf = (n: ts.Node) => sf.getLineAndCharacterOfPosition(n.getStart(sf)).line + 1;
  const add = (spec: ts.Node | undefined, kind: Kind, at: ts.Node) => {
    if (spec && ts.isStringLiteralLike(spec)) refs.push({ spec: spec.text, kind, line: lineOf(at) });
    else problems.push(`${file}:${lineOf(at)}: ${kind} with a computed specifier cannot be checked`);
  };
  const isImportMetaUrl = (n: ts.Node | undefined) =>
    !!n && ts.isPropertyAccessExpression(n) && n.name.text === 'url' && ts.isMetaProperty(n.expression) && n.expression.keywordToken === ts.SyntaxKind.ImportKeyword;
  const visit = (n: ts.Node): void => {
    if (ts.isImportDeclaration(n)) add(n.moduleSpecifier, n.importClause?.isTypeOnly ? 'import type' : 'import', n);
    else if (ts.isExportDeclaration(n) && n.moduleSpecifier) add(n.moduleSpecifier, 'export from', n);
    else if (ts.isImportEqualsDeclaration(n) && ts.isExternalModuleReference(n.moduleReference)) add(n.moduleReference.expression, 'require', n);
    else if (ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.ImportKeyword) add(n.arguments[0], 'dynamic import', n);
    else if (ts.isCallExpression(n) && ts.isIdentifier(n.expression) && n.expression.text === 'require') add(n.arguments[0], 'require', n);
    else if (ts.isNewExpression(n) && ts.isIdentifier(n.expression) && n.expression.text === 'URL' && isImportMetaUrl(n.arguments?.[1])) {
      add(n.arguments?.[0], 'worker URL', n);
    } else if (ts.isImportTypeNode(n) && ts.isLiteralTypeNode(n.argument)) add(n.argument.literal, 'import type', n);
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return { refs, problems };
}

/** Where a specifier leads: a repo-relative .ts path for ours, else the package (or node:x). */
function resolveSpec(from: string, spec: string): string {
  if (spec.startsWith('.') || spec.startsWith('/')) {
    const abs = path.posix.normalize(path.posix.join(path.posix.dirname(from), spec));
    return abs.replace(/\.js$/, '.ts');
  }
  if (spec.startsWith('node:')) return spec;
  // A bare name: the package, without a subpath ("pino/file" is pino; "@a/b/c" is @a/b).
  const parts = spec.split('/');
  return spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

/** Builds the graph from a map of repo-relative path → source text. */
export function buildGraph(sources: Map<string, string>): Graph {
  const files = new Map<string, { lines: number }>();
  const edges: Edge[] = [];
  const problems: string[] = [];
  for (const [file, text] of sources) {
    files.set(file, { lines: text.split('\n').length - (text.endsWith('\n') ? 1 : 0) });
    const r = referencesOf(file, text);
    problems.push(...r.problems);
    for (const ref of r.refs) edges.push({ ...ref, from: file, to: resolveSpec(file, ref.spec) });
  }
  for (const e of edges) {
    if (e.to.startsWith('src/') && !files.has(e.to)) problems.push(`${e.from}:${e.line}: ${e.spec} resolves to no file under src/`);
    else if (!e.to.startsWith('src/') && (e.spec.startsWith('.') || e.spec.startsWith('/'))) problems.push(`${e.from}:${e.line}: ${e.spec} leads outside src/`);
  }
  return { files, edges, problems };
}

const ours = (to: string) => to.startsWith('src/');
const layerOf = (file: string) => (file.startsWith('src/') ? file.split('/')[1]!.replace(/\.ts$/, '') : file);
const show = (e: Edge) => `${e.from}:${e.line}: ${e.kind} '${e.spec}'`;

/** The files `roots` reach, roots included. */
export function closureOf(g: Graph, roots: string[]): Set<string> {
  const seen = new Set<string>();
  const todo = [...roots];
  while (todo.length) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    for (const e of g.edges) if (e.from === f && ours(e.to) && g.files.has(e.to)) todo.push(e.to);
  }
  return seen;
}

/** The daemon's roots: main.ts, and whatever tapd.ts (the daemon's command line) imports of ours. */
export function daemonRoots(g: Graph): string[] {
  const cli = 'src/cli/tapd.ts';
  return ['src/daemon/main.ts', ...g.edges.filter((e) => e.from === cli && ours(e.to)).map((e) => e.to)];
}

export interface Violation {
  rule: string;
  what: string;
}

/** Every broken rule, each naming the import that breaks it. */
export function checkLayers(g: Graph): Violation[] {
  const v: Violation[] = g.problems.map((what) => ({ rule: 'checkable', what }));
  const bad = (rule: string, e: Edge, why: string) => v.push({ rule, what: `${show(e)} ${why}` });
  for (const e of g.edges) {
    const from = layerOf(e.from);
    const to = ours(e.to) ? layerOf(e.to) : undefined;
    const external = !ours(e.to);
    if (from === 'errors') {
      if (to !== undefined && to !== 'errors') bad('errors', e, 'reaches above src/errors');
      if (external && !e.to.startsWith('node:')) bad('errors', e, 'needs a package (src/errors uses node:* only)');
    }
    if (from === 'protocol') {
      if (to !== undefined && to !== 'errors' && to !== 'protocol') bad('protocol', e, 'reaches beyond src/errors');
      if (external && !e.to.startsWith('node:')) bad('protocol', e, 'needs a package (src/protocol uses node:* only)');
    }
    if (from === 'sys') {
      if (to !== undefined && to !== 'errors' && to !== 'sys') bad('sys', e, 'reaches above src/sys (only src/errors and src/sys)');
      if (external && !e.to.startsWith('node:') && e.to !== 'ffi-rs') bad('sys', e, 'needs a package other than ffi-rs');
    }
    if (from === 'daemon' && (to === 'cli' || to === 'client')) bad('daemon', e, `imports src/${to}`);
    if (e.to === 'commander' && from !== 'cli') bad('commander', e, 'outside src/cli');
    if (e.to === 'ffi-rs' && e.from !== 'src/sys/libc.ts') bad('ffi-rs', e, 'outside src/sys/libc.ts');
    if (external && !e.to.startsWith('node:') && !['commander', 'pino', 'ffi-rs'].includes(e.to)) bad('packages', e, 'is not a dependency tapd declares');
  }
  const closure = closureOf(g, daemonRoots(g));
  for (const f of closure) if (['cli', 'client'].includes(layerOf(f))) v.push({ rule: 'closure', what: `${f} is in the daemon's closure` });
  for (const e of g.edges) {
    if (!closure.has(e.from) || ours(e.to) || e.to.startsWith('node:')) continue;
    if (e.to === 'pino' || (e.to === 'ffi-rs' && e.from === 'src/sys/libc.ts')) continue;
    bad('closure', e, "is outside what the daemon may load (node:*, pino, ffi-rs in libc.ts)");
  }
  return v;
}

function readSources(): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string) => {
    for (const d of readdirSync(path.join(REPO, dir), { withFileTypes: true })) {
      const rel = path.posix.join(dir, d.name);
      if (d.isDirectory()) walk(rel);
      else if (d.name.endsWith('.ts')) out.set(rel, readFileSync(path.join(REPO, rel), 'utf8'));
    }
  };
  walk('src');
  return out;
}

const rulesBroken = (vs: Violation[]) => [...new Set(vs.map((x) => x.rule))].sort();

describe('the import layers of src/', () => {
  const g = buildGraph(readSources());

  it('every reference is a literal that resolves to a file', () => {
    expect(g.files.size).toBeGreaterThan(30);
    expect(g.problems).toEqual([]);
  });

  it('finds every kind of reference the tree uses, including the link-watch worker', () => {
    const kinds = new Set(g.edges.map((e) => e.kind));
    for (const k of ['import', 'import type', 'export from', 'worker URL'] as const) expect(kinds, k).toContain(k);
    expect(g.edges).toContainEqual(expect.objectContaining({ from: 'src/sys/link-watch.ts', to: 'src/sys/link-watch-worker.ts', kind: 'worker URL' }));
  });

  it('breaks no rule', () => {
    expect(checkLayers(g).map((x) => `${x.rule}: ${x.what}`)).toEqual([]);
  });

  it("the daemon's closure: only our lower layers, node:*, pino and ffi-rs", () => {
    const closure = closureOf(g, daemonRoots(g));
    expect(closure).toContain('src/daemon/main.ts');
    expect(closure).toContain('src/sys/libc.ts');
    expect(closure).toContain('src/sys/link-watch-worker.ts'); // reached only through new URL()
    expect(closure).not.toContain('src/cli/tapd.ts');
    const layers = [...new Set([...closure].map(layerOf))].sort();
    expect(layers.every((l) => ['common', 'daemon', 'errors', 'protocol', 'sys', 'version'].includes(l)), layers.join()).toBe(true);
    const packages = [...new Set(g.edges.filter((e) => closure.has(e.from) && !ours(e.to) && !e.to.startsWith('node:')).map((e) => e.to))].sort();
    expect(packages).toEqual(['ffi-rs', 'pino']);
    const lines = [...closure].reduce((n, f) => n + g.files.get(f)!.lines, 0);
    console.log(`daemon closure: ${closure.size} files, ${lines} lines (of ${g.files.size} files under src/)`);
  });
});

describe('the layer check fails on upward imports (self-check on synthetic graphs)', () => {
  const base: [string, string][] = [
    ['src/errors/tapd-error.ts', 'export class TapdError extends Error {}\n'],
    ['src/errors/system-error.ts', "import os from 'node:os';\nimport { TapdError } from './tapd-error.js';\n"],
    ['src/protocol/frame.ts', "import { TapdError } from '../errors/tapd-error.js';\n"],
    ['src/sys/libc.ts', "import { define } from 'ffi-rs';\nimport { SystemError } from '../errors/system-error.js';\n"],
    ['src/sys/watch.ts', "const u = new URL('./worker.js', import.meta.url);\n"],
    ['src/sys/worker.ts', "import { define } from './libc.js';\n"],
    ['src/daemon/main.ts', "import pino from 'pino';\nimport * as sys from '../sys/watch.js';\nimport { x } from '../protocol/frame.js';\n"],
    ['src/cli/tapd.ts', "import { Command } from 'commander';\nimport { startDaemon } from '../daemon/main.js';\n"],
    ['src/cli/tapctl.ts', "import { Command } from 'commander';\nimport { Client } from '../client/client.js';\n"],
    ['src/client/client.ts', "import { x } from '../protocol/frame.js';\n"],
  ];
  const withFile = (file: string, text: string) => {
    const m = new Map(base);
    m.set(file, (m.get(file) ?? '') + text);
    return checkLayers(buildGraph(m));
  };

  it('the clean synthetic tree passes', () => {
    expect(checkLayers(buildGraph(new Map(base)))).toEqual([]);
  });

  it.each<[string, string, string, string[]]>([
    ['errors importing sys', 'src/errors/tapd-error.ts', "import { a } from '../sys/libc.js';\n", ['errors']],
    ['errors importing a package', 'src/errors/tapd-error.ts', "import pino from 'pino';\n", ['errors']],
    ['protocol importing sys', 'src/protocol/frame.ts', "import { a } from '../sys/libc.js';\n", ['protocol']],
    ['protocol re-exporting daemon code', 'src/protocol/frame.ts', "export { b } from '../daemon/main.js';\n", ['protocol']],
    ['sys importing protocol', 'src/sys/watch.ts', "import type { F } from '../protocol/frame.js';\n", ['sys']],
    ['sys importing daemon dynamically', 'src/sys/watch.ts', "const m = await import('../daemon/main.js');\n", ['sys']],
    ['sys importing pino', 'src/sys/watch.ts', "import pino from 'pino';\n", ['sys']],
    ['ffi-rs outside libc.ts', 'src/sys/watch.ts', "import { open } from 'ffi-rs';\n", ['closure', 'ffi-rs']],
    ['daemon importing cli', 'src/daemon/main.ts', "import { x } from '../cli/tapctl.js';\n", ['closure', 'daemon']],
    ['daemon importing client', 'src/daemon/main.ts', "import { Client } from '../client/client.js';\n", ['closure', 'daemon']],
    ['daemon code using commander', 'src/daemon/main.ts', "import { Command } from 'commander';\n", ['closure', 'commander']],
    ['the daemon closure reaching cli through a worker URL', 'src/sys/worker.ts', "const w = new URL('../cli/tapctl.js', import.meta.url);\n", ['closure', 'sys']],
    ['tapd.ts pulling a cli helper into the closure', 'src/cli/tapd.ts', "import { usage } from './tapctl.js';\n", ['closure']],
    ['an undeclared package', 'src/cli/tapctl.ts', "import chalk from 'chalk';\n", ['packages']],
    ['a bare node builtin in errors', 'src/errors/tapd-error.ts', "import fs from 'fs';\n", ['closure', 'errors', 'packages']],
    ['a computed dynamic import', 'src/daemon/main.ts', 'const m = await import(name);\n', ['checkable']],
    ['an import of a missing file', 'src/daemon/main.ts', "import { x } from './nope.js';\n", ['checkable']],
  ])('%s', (_name, file, text, rules) => {
    expect(rulesBroken(withFile(file, text))).toEqual(rules);
  });

  it('reads multi-line, type-only, side-effect and commented-out imports correctly', () => {
    const { refs } = referencesOf('src/x.ts', `
import {
  a,
  b,
} from './multi.js';
import './side-effect.js';
import type { T } from './types.js';
export * from './star.js';
// import { no } from './commented.js';
/* import { no } from './block-commented.js'; */
const s = "import { no } from './in-a-string.js'";
const lazy = () => import('./lazy.js');
`);
    expect(refs.map((r) => `${r.kind} ${r.spec}`)).toEqual([
      'import ./multi.js', 'import ./side-effect.js', 'import type ./types.js', 'export from ./star.js', 'dynamic import ./lazy.js',
    ]);
  });
});
