#!/usr/bin/env bash
# tapd end to end, in a sandbox: a host namespace with a "physical NIC" on a simulated LAN
# (DHCP + web server), tapd running there, and a tiny VM started by an unprivileged user with
# `tapctl qemu`. The VM gets a bridged TAP, a DHCP lease from the LAN, and fetches a page.
# Nothing outside the sandbox namespaces changes; everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
source scripts/lib/deps.sh
source scripts/lib/sandbox.sh
MODEL=${1:-virtio-net-pci}
PREFIX=tapd-demo
USER_UID=65534
say() { printf '\033[1m== %s\033[0m\n' "$*"; }

say "installing what is missing, building tapd and the tiny guest"
ensure_deps >/dev/null
npm run --silent build >/dev/null
eval "$(bash test/guest/build.sh)"

work=$(mktemp -d /tmp/tapd-demo-XXXXXX)
chmod 755 "$work"
tapd_pid=
cleanup() {
  [ -n "$tapd_pid" ] && kill "$tapd_pid" 2>/dev/null && wait "$tapd_pid" 2>/dev/null
  sandbox_lan_down "$PREFIX" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

say "sandbox: host and LAN namespaces, dnsmasq and a web server on the LAN"
sandbox_lan_up "$PREFIX" >/dev/null 2>"$work/sandbox.log" || { cat "$work/sandbox.log"; exit 1; }
host=$SANDBOX_HOST_NS
echo "   host: uplink0 $(ip -n "$host" -br -4 addr show uplink0 | awk '{print $3}'), default via 198.18.0.1 (the LAN)"

say "tapd up in the host namespace (uplink uplink0: the daemon bridges the NIC on first use)"
install -m 755 scripts/tapd-bridge-up "$work/tapd-bridge-up"
cat >"$work/tapd.conf" <<CONF
network lan uplink uplink0 bridge br0 bridge-script $work/tapd-bridge-up
permit @nogroup on lan leases 2
CONF
# tapd's node flags are on its first line (as installed: see scripts/install.sh).
# shellcheck disable=SC2046
ip netns exec "$host" node $(sed -n '1s|^#!/usr/bin/env -S node ||p' dist/cli/tapd.js) dist/cli/tapd.js --config "$work/tapd.conf" --socket "$work/tapd.sock" \
  --state-dir "$work/state" >"$work/tapd.log" 2>&1 &
tapd_pid=$!
for _ in $(seq 100); do grep -q '"event":"started"' "$work/tapd.log" && break; sleep 0.05; done
grep -q '"event":"started"' "$work/tapd.log" || { cat "$work/tapd.log"; exit 1; }
echo "   $(node -e 'const l=require("fs").readFileSync(process.argv[1],"utf8").split("\n").find(x=>x.includes("started"));const o=JSON.parse(l);console.log(`tapd ${o.version} pid ${o.pid} listening on ${o.socket}`)' "$work/tapd.log")"

say "uid $USER_UID runs: tapctl qemu -b uplink0 --model $MODEL -- <tiny guest>"
sandbox_exec_as "$host" "$USER_UID" "$USER_UID" env TAPD_SOCKET="$work/tapd.sock" \
  node "$REPO/dist/cli/tapctl.js" qemu -v -b uplink0 --model "$MODEL" -- \
  -accel tcg -m 256 -nodefaults -nographic -serial stdio -monitor none -no-reboot \
  -kernel "$GUEST_KERNEL" -initrd "$GUEST_INITRD" -append "$GUEST_CMDLINE" \
  >"$work/serial.log" 2>"$work/tapctl.log" &
vm=$!
timeout 60 tail -f --pid=$vm "$work/serial.log" 2>/dev/null | grep --line-buffered -o 'TAPD-GUEST .*' | sed -u 's/^/   guest: /' || true
wait $vm && status=0 || status=$?
sed -e 's/ -kernel .*//' -e 's/^/   /' "$work/tapctl.log" | cut -c1-160

say "what the LAN and tapd saw"
sed 's/^/   dnsmasq lease: /' "$SANDBOX_STATE_DIR/dnsmasq.leases"
for _ in $(seq 100); do grep -q '"event":"lease_end"' "$work/tapd.log" && break; sleep 0.05; done
node -e '
  for (const l of require("fs").readFileSync(process.argv[1], "utf8").split("\n")) {
    if (!l.startsWith("{")) continue;
    const e = JSON.parse(l);
    if (["bridge_created", "hook", "lease_start", "lease_end"].includes(e.event))
      console.log(`   tapd: ${e.event} ${[e.bridge, e.script && e.script.split("/").pop(), e.ifname, e.mac, e.uid !== undefined ? "uid " + e.uid : "", e.reason || ""].filter(Boolean).join(" ")}`.slice(0, 150));
  }' "$work/tapd.log"

if grep -q 'TAPD-GUEST LEASE' "$work/serial.log" && grep -q 'TAPD-GUEST FETCH ok' "$work/serial.log" && [ "$status" = 0 ]; then
  say "OK: the VM got a DHCP lease on the LAN through tapd's bridged TAP, and fetched a page"
else
  say "FAILED (tapctl exit $status)"; cat "$work/tapctl.log"; tail -20 "$work/serial.log"; exit 1
fi
