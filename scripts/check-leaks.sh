#!/usr/bin/env bash
# Fails if a test run left anything behind: our namespaces, devices in the root namespace,
# our processes, or temp dirs.
set -u
bad=0
ns=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(tapdt-|tapd-)' || true)
[ -n "$ns" ] && { echo "leak: namespaces: $(echo $ns)"; bad=1; }
dev=$(ip -o link show 2>/dev/null | awk -F': ' '{sub(/@.*/,"",$2); print $2}' | grep -Ev '^(lo|eth[0-9]+|ifb[0-9]+|docker[0-9]*)$' || true)
[ -n "$dev" ] && { echo "leak: devices in the root namespace: $(echo $dev)"; bad=1; }
procs=$(pgrep -a -f 'dist/cli/(tapd|tapctl)\.js|native/build/tapd-bridge-helper|qemu-system-x86_64|dnsmasq|ovsdb-server|ovs-vswitchd|ovn-northd|ovn-controller' | grep -v pgrep || true)
[ -n "$procs" ] && { echo "leak: processes:"; echo "$procs" | sed 's/^/  /'; bad=1; }
tmp=$(find /tmp -maxdepth 1 -name 'tapd-*' 2>/dev/null || true)
[ -n "$tmp" ] && { echo "leak: temp files: $(echo $tmp)"; bad=1; }
[ $bad = 0 ] && echo "no leaks"
exit $bad
