#!/usr/bin/env bash
# Fails if a test run left anything behind: our namespaces, devices in the root namespace,
# our processes, or temp dirs.
#   check-leaks.sh --snapshot FILE   record what is there now (before the run)
#   check-leaks.sh --since FILE      flag only what appeared since FILE was recorded
#   check-leaks.sh                   flag everything of ours that is there now
# Other runs on the same machine leave their own namespaces and /tmp/tapd-* for a while; the
# snapshot keeps those from failing this run, while anything this run made and left still does.
# (What another run creates while this one runs cannot be told apart, and is flagged too.)
set -u

# One line per thing: "KIND KEY [detail]". Processes are keyed by pid (the detail is their command line).
state() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(tapdt-|tapd-)' | sed 's/^/namespace /'
  ip -o link show 2>/dev/null | awk -F': ' '{sub(/@.*/,"",$2); print $2}' \
    | grep -Ev '^(lo|eth[0-9]+|ifb[0-9]+|docker[0-9]*)$' | sed 's/^/device /'
  pgrep -a -f 'dist/cli/(tapd|tapctl)\.js|native/build/tapd-bridge-helper|qemu-system-x86_64|dnsmasq|ovsdb-server|ovs-vswitchd|ovn-northd|ovn-controller|libvirtd|virtlogd|virtlockd' \
    | grep -v -e pgrep -e check-leaks -e ' <defunct>$' | sed 's/^/process /' # a zombie holds nothing; its parent would
  # mldbm-*: lintian's cache file, left in TMPDIR when the deb test does not give it its own.
  find /tmp -maxdepth 1 \( -name 'tapd-*' -o -name 'mldbm-*' \) 2>/dev/null | sed 's/^/temp /'
  return 0
}

case "${1:-}" in
  --snapshot)
    [ -n "${2:-}" ] || { echo "usage: $0 --snapshot FILE" >&2; exit 2; }
    state > "$2"
    exit 0 ;;
  --since)
    [ -r "${2:-}" ] || { echo "check-leaks: no snapshot ${2:-} to compare with" >&2; exit 2; }
    before=$2 ;;
  '') before=/dev/null ;;
  *) echo "usage: $0 [--snapshot FILE | --since FILE]" >&2; exit 2 ;;
esac

# New = a kind+key not in the snapshot (a process is new if its pid is).
new=$(state | awk 'FILENAME == ARGV[1] { seen[$1 " " $2] = 1; next } !(($1 " " $2) in seen)' "$before" -)
bad=0
for kind in namespace device process temp; do
  items=$(printf '%s\n' "$new" | awk -v k="$kind" '$1 == k { $1 = ""; sub(/^ /, ""); print }')
  [ -n "$items" ] || continue
  bad=1
  case $kind in
    namespace) echo "leak: namespaces: $(echo $items)" ;;
    device) echo "leak: devices in the root namespace: $(echo $items)" ;;
    process) echo "leak: processes:"; printf '%s\n' "$items" | sed 's/^/  /' ;;
    temp) echo "leak: temp files: $(echo $items)" ;;
  esac
done
[ $bad = 0 ] && echo "no leaks"
exit $bad
