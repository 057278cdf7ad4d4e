// Bundles the two commands into one CommonJS file each: dist/cli/tapd.js and dist/cli/tapctl.js,
// in place of what tsc wrote in dist/cli/. Why (docs/performance.md, "Start-up"): Node's ES
// module loader resolves, reads and links every module on its own, and loads its own internals
// to do it (not in Node's start-up snapshot; under the daemon's --jitless they are compiled from
// source at every start). One CommonJS file runs through the loader Node has started with.
//
// ffi-rs stays outside: a native addon, required at run time from node_modules as before. The
// rest of dist/ (the client library, sys/, the link-watch worker) stays as tsc wrote it, for the
// library's users and the tests; dist/cli/ holds only the two commands, and says it is CommonJS.
// esbuild is vitest's own dependency (through vite), pinned in devDependencies.
import { build } from 'esbuild';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'dist/cli');
const commands = ['tapd', 'tapctl'];

// tsc's ES modules of src/cli/ are inside the bundles now; left here they would read as CommonJS.
for (const f of readdirSync(out)) rmSync(path.join(out, f), { force: true });

for (const cmd of commands) {
  const entry = path.join(root, 'src/cli', `${cmd}.ts`);
  // The first line carries the node flags (tapd: --jitless ...); install.sh and the tests read them there.
  const hashbang = readFileSync(entry, 'utf8').split('\n', 1)[0];
  if (!hashbang.startsWith('#!')) throw new Error(`${entry}: no #! line`);
  await build({
    entryPoints: [entry],
    outfile: path.join(out, `${cmd}.js`),
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    external: ['ffi-rs'],
    // import.meta has no CommonJS form; src/ uses only its url (createRequire, the worker's path).
    define: { 'import.meta.url': 'tapdModuleUrl' },
    banner: { js: "const tapdModuleUrl = require('node:url').pathToFileURL(__filename).href;" },
    sourcemap: 'linked',
    legalComments: 'none',
    logLevel: 'warning',
  });
  const first = readFileSync(path.join(out, `${cmd}.js`), 'utf8').split('\n', 1)[0];
  if (first !== hashbang) throw new Error(`dist/cli/${cmd}.js starts with ${JSON.stringify(first)}, not its #! line`);
}
writeFileSync(path.join(out, 'package.json'), `${JSON.stringify({ type: 'commonjs' })}\n`);
