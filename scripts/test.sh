#!/usr/bin/env bash
# The one test command: the unit tests first (pure code, no root, nothing but node), then it
# installs what is missing, builds, runs the integration suite (needs root: namespaces, TAPs),
# then checks that the run left nothing behind that was not there before it started.
# Arguments (e.g. a test file) go to the integration run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
mkdir -p .cache
status=0

# What other runs on this machine already left: only what appears after this is ours to answer for.
scripts/check-leaks.sh --snapshot .cache/leaks.before

echo "== unit tests (no root needed)"
if [ ! -d node_modules/vitest ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npx vitest run --project unit --reporter=default --reporter=json --outputFile.json=.cache/vitest-unit.json || status=$?

ensure_deps
echo "== build (TypeScript, and native/tapd-bridge-helper via native/build.sh)"
npm run --silent build
echo "== lint and type-check the tests"
npx eslint src test
npx tsc -p tsconfig.test.json
echo "== integration tests"
extra=()
# A file filter may name only unit tests: then there is nothing to run here, and that is fine.
[ $# -gt 0 ] && extra=(--passWithNoTests)
npx vitest run --project integration --reporter=default --reporter=json --outputFile.json=.cache/vitest.json "${extra[@]}" "$@" || status=$?
# One plain summary line for CI, from vitest's own JSON reports (unit + integration).
node -e 'const fs = require("fs");
  const rs = [".cache/vitest-unit.json", ".cache/vitest.json"].map((f) => JSON.parse(fs.readFileSync(f, "utf8")));
  const n = (k) => rs.reduce((s, r) => s + r[k], 0);
  console.log(`tests: ${n("numPassedTests")} passed, ${n("numFailedTests")} failed` + (n("numPendingTests") ? `, ${n("numPendingTests")} skipped` : ""))' || status=1
echo "== leak check"
scripts/check-leaks.sh --since .cache/leaks.before || status=1
exit $status
