#!/usr/bin/env bash
# The one test command: installs what is missing, builds, runs the whole suite, then checks that
# the suite left nothing behind (namespaces, devices, processes). Needs root (namespaces, TAPs).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
ensure_deps

echo "== build (TypeScript, and native/tapd-bridge-helper via native/build.sh)"
npm run --silent build
echo "== lint and type-check the tests"
npx eslint src test
npx tsc -p tsconfig.test.json
echo "== tests"
status=0
mkdir -p .cache
npx vitest run --reporter=default --reporter=json --outputFile.json=.cache/vitest.json "$@" || status=$?
# One plain summary line for CI, from vitest's own JSON report.
node -e 'const r = JSON.parse(require("fs").readFileSync(".cache/vitest.json", "utf8"));
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""))' || status=1
echo "== leak check"
scripts/check-leaks.sh || status=1
exit $status
