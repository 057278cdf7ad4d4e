#!/usr/bin/env bash
# npm run bench: installs what is missing (scripts/lib/deps.sh, as the tests do), builds, and runs
# test/bench/bench.ts (with vite-node, which comes with vitest), which prints a table and writes
# bench/results.json. Needs root: all device work happens in a network namespace the bench makes
# (with test/helpers/netns.ts, as the tests do) and deletes. Takes 2-4 minutes.
#
# The bench cleans up after itself. This script's trap is the safety net for a bench that was
# killed outright: it ends the processes the bench recorded (by pid, checked against their command
# line), deletes the namespace, puts /etc/qemu/bridge.conf back byte for byte (or removes it and
# /etc/qemu if they did not exist) and removes the temp dirs.
#   TAPD_BENCH_QUICK=1 npm run bench     a fast smoke run (small counts)
#   TAPD_BENCH_N=500 npm run bench       open-latency runs per method (default 300)
#   TAPD_BENCH_OUT=FILE npm run bench    write the JSON there instead of bench/results.json
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
ensure_deps

echo "== build"
if ! npm run --silent build; then
  echo "== the build reported errors (tsc still emits); the bench marks what is not built and skips it" >&2
fi
if [ ! -f dist/cli/tapd.js ] || [ ! -f dist/client/client.js ] || [ ! -f dist/sys/index.js ]; then
  echo "bench: dist/ has no daemon or client library; the build failed" >&2
  exit 1
fi

conf=/etc/qemu/bridge.conf
run=$(mktemp -d /tmp/tapd-bench-XXXXXX)
chmod 755 "$run"
shm=$(mktemp -d /dev/shm/tapd-bench-XXXXXX)
ns="tapd-bench-${run##*-}"
saved="$shm/bridge.conf.orig"
conf_existed=0
qemu_dir_existed=0
[ -d /etc/qemu ] && qemu_dir_existed=1
if [ -e "$conf" ]; then
  conf_existed=1
  cp -a "$conf" "$saved"
fi

cleanup() {
  local status=$?
  trap - EXIT INT TERM HUP
  if [ -f "$run/pids" ]; then
    local pid pids=()
    while read -r pid; do
      # Only a process that is still one of ours (pids are reused): its command line names our run.
      if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -e "$run" -e "$ns"; then
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
      fi
    done <"$run/pids"
    for _ in $(seq 30); do
      local alive=0
      for pid in "${pids[@]}"; do [ -d "/proc/$pid" ] && alive=1; done
      [ $alive = 0 ] && break
      sleep 0.1
    done
    for pid in "${pids[@]}"; do [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null; done
  fi
  if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns"; then
    echo "bench.sh: removing namespace $ns" >&2
    ip netns del "$ns" || true
  fi
  if [ $conf_existed = 1 ]; then
    if ! cmp -s "$saved" "$conf"; then
      echo "bench.sh: restoring $conf" >&2
      cp -a "$saved" "$conf"
    fi
  else
    rm -f "$conf"
    [ $qemu_dir_existed = 0 ] && rmdir /etc/qemu 2>/dev/null || true
  fi
  rm -rf "$run" "$shm"
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

echo "== bench (namespace $ns)"
TAPD_BENCH_DIR="$run" TAPD_BENCH_SHM="$shm" TAPD_BENCH_NS="$ns" node_modules/.bin/vite-node test/bench/bench.ts
