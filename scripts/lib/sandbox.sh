# shellcheck shell=bash
# Simulated LAN for tapd's demo and tests (the bench makes its own namespace with test/helpers/netns.ts). Source it, then call the functions.
# Everything lives in network namespaces created here; nothing in the root namespace changes.
#
#   ${PREFIX}-lan   lan0 198.18.0.1/24: dnsmasq (DHCP 198.18.0.100-199, router 198.18.0.1)
#                   and busybox httpd on :80 serving index.html ("hello from the tapd sandbox LAN")
#        |  veth
#   ${PREFIX}-host  uplink0 198.18.0.2/24, default via 198.18.0.1: the host's "physical NIC".
#                   sandbox_bridge_uplink moves that onto br0 with uplink0 enslaved (bridged host).
#
# Functions (all return non-zero on failure; progress and errors go to stderr):
#   sandbox_lan_up PREFIX          build it; sets SANDBOX_STATE_DIR/SANDBOX_HOST_NS/SANDBOX_LAN_NS
#                                  and prints the state dir on stdout. A stale sandbox with the
#                                  same PREFIX is torn down first.
#   sandbox_bridge_uplink PREFIX   br0 in the host ns, uplink0's address + default route moved to it
#   sandbox_tap_add PREFIX NAME UID [multi_queue]
#                                  persistent TAP owned by UID in the host ns, up, on br0 if present
#   sandbox_exec_as NS UID GID CMD...
#                                  run CMD in namespace NS as UID:GID (no supplementary groups, no
#                                  caps); if /dev/net/tun is not world-rw, a 0666 tun node is
#                                  mounted over it in that command's private mount namespace only
#   sandbox_lan_down PREFIX        kill the sandbox's processes by pid (and any process still in
#                                  its namespaces), delete both namespaces, remove the state dir.
#                                  Safe to call twice and after a partial setup.
#   sandbox_state_dir PREFIX       print the state dir: dnsmasq.leases, dnsmasq.log, www/, *.pid
#   sandbox_ensure_tools           apt-get install (quietly) dnsmasq-base/busybox-static/iproute2
#                                  if missing (sandbox_lan_up calls it)
#
# Addresses are fixed (every sandbox is its own set of namespaces), so several sandboxes with
# different prefixes can coexist.

SANDBOX_LAN_ADDR=198.18.0.1
SANDBOX_UPLINK_ADDR=198.18.0.2
SANDBOX_PREFIXLEN=24
SANDBOX_DHCP_RANGE=198.18.0.100,198.18.0.199,255.255.255.0
SANDBOX_HTTP_FIRST_LINE='hello from the tapd sandbox LAN'

_sandbox_log() { echo "sandbox: $*" >&2; }

_sandbox_check_prefix() {
  if [[ ! ${1:-} =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$ ]]; then
    _sandbox_log "bad PREFIX '${1:-}' (letters, digits, _ . -; at most 41 chars)"
    return 1
  fi
}

sandbox_state_dir() {
  _sandbox_check_prefix "${1:-}" || return 1
  echo "${SANDBOX_STATE_ROOT:-${TMPDIR:-/tmp}}/tapd-sandbox.$1"
}

sandbox_ensure_tools() {
  local pkgs=()
  command -v dnsmasq >/dev/null 2>&1 || [[ -x /usr/sbin/dnsmasq ]] || pkgs+=(dnsmasq-base)
  [[ -x /bin/busybox ]] || command -v busybox >/dev/null 2>&1 || pkgs+=(busybox-static)
  command -v ip >/dev/null 2>&1 || pkgs+=(iproute2)
  command -v setpriv >/dev/null 2>&1 || pkgs+=(util-linux)
  ((${#pkgs[@]})) || return 0
  _sandbox_log "installing ${pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null; }
}

_sandbox_busybox() {
  if [[ -x /bin/busybox ]]; then echo /bin/busybox; else command -v busybox; fi
}

_sandbox_dnsmasq() {
  if command -v dnsmasq >/dev/null 2>&1; then command -v dnsmasq; else echo /usr/sbin/dnsmasq; fi
}

# _sandbox_wait_listen NS PROTO PORT PID: until something listens on PORT in NS (max ~5 s).
_sandbox_wait_listen() {
  local ns=$1 proto=$2 port=$3 pid=$4 i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -n $(ip netns exec "$ns" ss -Hn"$proto"l "sport = :$port" 2>/dev/null) ]]; then
      return 0
    fi
    sleep 0.05
  done
  return 1
}

sandbox_lan_up() {
  local p=${1:-}
  _sandbox_check_prefix "$p" || return 1
  local host=$p-host lan=$p-lan dir
  dir=$(sandbox_state_dir "$p") || return 1
  sandbox_ensure_tools || return 1
  if [[ -e $dir ]] || ip netns list | grep -qE "^($host|$lan)( |$)"; then
    _sandbox_log "tearing down a stale sandbox '$p'"
    sandbox_lan_down "$p"
  fi
  if ! _sandbox_lan_up "$p" "$host" "$lan" "$dir"; then
    _sandbox_log "setup of '$p' failed; tearing down"
    sandbox_lan_down "$p"
    return 1
  fi
  # shellcheck disable=SC2034 # for the caller
  SANDBOX_STATE_DIR=$dir SANDBOX_HOST_NS=$host SANDBOX_LAN_NS=$lan
  echo "$dir"
}

_sandbox_lan_up() {
  local p=$1 host=$2 lan=$3 dir=$4 pid bb
  mkdir -p "$dir/www" || return 1
  chmod 0755 "$dir"
  printf '%s\n' "$SANDBOX_HTTP_FIRST_LINE" "sandbox $p" >"$dir/www/index.html"

  ip netns add "$lan" || return 1
  ip netns add "$host" || return 1
  ip -n "$lan" link set lo up &&
    ip -n "$host" link set lo up &&
    ip -n "$host" link add uplink0 type veth peer name lan0 netns "$lan" &&
    ip -n "$lan" addr add "$SANDBOX_LAN_ADDR/$SANDBOX_PREFIXLEN" dev lan0 &&
    ip -n "$lan" link set lan0 up &&
    ip -n "$host" addr add "$SANDBOX_UPLINK_ADDR/$SANDBOX_PREFIXLEN" dev uplink0 &&
    ip -n "$host" link set uplink0 up &&
    ip -n "$host" route add default via "$SANDBOX_LAN_ADDR" dev uplink0 || return 1

  # DHCP server. --no-ping: otherwise each first lease waits ~3 s for an ICMP probe.
  : >"$dir/dnsmasq.leases"
  ip netns exec "$lan" "$(_sandbox_dnsmasq)" --keep-in-foreground --conf-file=/dev/null \
    --pid-file="$dir/dnsmasq.pid" --dhcp-leasefile="$dir/dnsmasq.leases" \
    --log-facility="$dir/dnsmasq.log" --log-dhcp \
    --interface=lan0 --bind-dynamic --no-resolv --no-hosts --port=0 --no-ping \
    --dhcp-authoritative --dhcp-range="$SANDBOX_DHCP_RANGE" \
    --dhcp-option=3,"$SANDBOX_LAN_ADDR" \
    </dev/null >>"$dir/dnsmasq.out" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/dnsmasq.pid"
  if ! _sandbox_wait_listen "$lan" u 67 "$pid"; then
    _sandbox_log "dnsmasq did not start: $(tail -n 5 "$dir/dnsmasq.out" "$dir/dnsmasq.log" 2>/dev/null)"
    return 1
  fi

  # Web server of the LAN.
  bb=$(_sandbox_busybox)
  ip netns exec "$lan" "$bb" httpd -f -p "$SANDBOX_LAN_ADDR:80" -h "$dir/www" \
    </dev/null >>"$dir/httpd.out" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/httpd.pid"
  if ! _sandbox_wait_listen "$lan" t 80 "$pid"; then
    _sandbox_log "httpd did not start: $(tail -n 5 "$dir/httpd.out" 2>/dev/null)"
    return 1
  fi
  _sandbox_log "LAN '$p' up: namespaces $host, $lan; state in $dir"
}

sandbox_bridge_uplink() {
  local p=${1:-}
  _sandbox_check_prefix "$p" || return 1
  local ns=$p-host mac addrs gws a g
  if ip -n "$ns" link show br0 >/dev/null 2>&1; then
    _sandbox_log "br0 already exists in $ns"
    return 0
  fi
  mac=$(ip -n "$ns" -o link show uplink0 | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p') || return 1
  addrs=$(ip -n "$ns" -4 -o addr show dev uplink0 | awk '{ print $4 }')
  gws=$(ip -n "$ns" -4 route show default dev uplink0 | awk '$2 == "via" { print $3 }')
  ip -n "$ns" link add br0 type bridge stp_state 0 forward_delay 0 &&
    ip -n "$ns" link set br0 address "$mac" &&
    ip -n "$ns" addr flush dev uplink0 &&
    ip -n "$ns" link set uplink0 master br0 &&
    ip -n "$ns" link set br0 up || return 1
  for a in $addrs; do ip -n "$ns" addr add "$a" dev br0 || return 1; done
  for g in $gws; do ip -n "$ns" route replace default via "$g" dev br0 || return 1; done
  _sandbox_log "bridged: uplink0 enslaved to br0 in $ns (br0 has ${addrs//$'\n'/ })"
}

sandbox_tap_add() {
  local p=${1:-} name=${2:-} uid=${3:-} mq=${4:-}
  _sandbox_check_prefix "$p" || return 1
  if [[ -z $name || -z $uid ]]; then
    _sandbox_log "usage: sandbox_tap_add PREFIX NAME UID [multi_queue]"
    return 1
  fi
  local ns=$p-host
  # shellcheck disable=SC2086 # $mq is empty or the single word multi_queue
  ip -n "$ns" tuntap add mode tap name "$name" user "$uid" $mq || return 1
  if ip -n "$ns" link show br0 >/dev/null 2>&1; then
    ip -n "$ns" link set "$name" master br0 || return 1
  fi
  ip -n "$ns" link set "$name" up
}

sandbox_exec_as() {
  local ns=${1:-} uid=${2:-} gid=${3:-}
  if [[ -z $ns || -z $uid || -z $gid || $# -lt 4 ]]; then
    _sandbox_log "usage: sandbox_exec_as NS UID GID CMD..."
    return 1
  fi
  shift 3
  # `ip netns exec` gives the command its own (slave) mount namespace, so the tmpfs over
  # /dev/net is seen by this command only and disappears with it.
  # shellcheck disable=SC2016 # expanded by the inner bash
  ip netns exec "$ns" bash -c '
    uid=$1 gid=$2; shift 2
    if [[ $(stat -c %a /dev/net/tun 2>/dev/null) != *66 ]]; then
      mount -t tmpfs -o mode=0755,size=16k sandbox-tun /dev/net &&
        mknod -m 0666 /dev/net/tun c 10 200 || exit 1
    fi
    exec setpriv --reuid "$uid" --regid "$gid" --clear-groups --inh-caps=-all -- "$@"
  ' sandbox-exec "$uid" "$gid" "$@"
}

# _sandbox_kill PID: TERM, wait up to ~3 s, then KILL.
_sandbox_kill() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 60; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null
  for ((i = 0; i < 40; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
}

sandbox_lan_down() {
  local p=${1:-}
  _sandbox_check_prefix "$p" || return 1
  local dir ns f pid want
  dir=$(sandbox_state_dir "$p") || return 1
  # 1. The processes this file started, by recorded pid (checked to still be what we started).
  for f in dnsmasq httpd; do
    [[ -f $dir/$f.pid ]] || continue
    pid=$(<"$dir/$f.pid")
    [[ $pid =~ ^[0-9]+$ ]] || continue
    want=$f
    [[ $f == httpd ]] && want=busybox
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$want"* ]]; then
      _sandbox_kill "$pid"
    fi
  done
  # 2. Anything still running inside the sandbox's namespaces (e.g. a QEMU a caller left):
  #    a namespace with a process in it outlives `ip netns del`.
  for ns in "$p-host" "$p-lan"; do
    ip netns list 2>/dev/null | grep -qE "^$ns( |$)" || continue
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      _sandbox_kill "$pid"
    done
    ip netns del "$ns" 2>/dev/null || _sandbox_log "could not delete namespace $ns"
  done
  rm -rf -- "$dir"
  return 0
}
