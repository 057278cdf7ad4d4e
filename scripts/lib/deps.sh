# Installs what tapd's build, tests, demo and bench need, only where missing. Sourced.
TAPD_DEBS=(qemu-system-x86 qemu-system-common dnsmasq-base busybox-static tcpdump iproute2 util-linux
  gcc libc6-dev cpio xz-utils zstd polkitd pkexec dbus-daemon systemd procps
  dpkg-dev lintian mandoc man-db fakeroot
  openvswitch-switch openvswitch-common ovn-central ovn-host ethtool libnss-extrausers
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients)
# Daemons that the packages above would start as services; tests start their own, by hand, in
# namespaces (test/helpers/ovn.ts, test/integration/libvirt.test.ts), so none may run in the root namespace.
TAPD_NO_SERVICES=(ovsdb-server ovs-vswitchd ovn-northd ovn-controller libvirtd virtlogd virtlockd)

ensure_deps() {
  if [ "$(id -u)" != 0 ]; then
    echo "tapd's tests and demo need root (network namespaces, TAP devices); run with sudo" >&2
    exit 1
  fi
  local missing=()
  for p in "${TAPD_DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${missing[*]}"
    apt-get update -qq
    # Maintainer scripts start services through invoke-rc.d / deb-systemd-invoke, which both
    # ask policy-rc.d first: 101 = "action forbidden". Only ours if none was there.
    local policy=/usr/sbin/policy-rc.d ours=0
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\n# tapd deps.sh: no service starts during package installs\nexit 101\n' >"$policy"
      chmod 0755 "$policy"
      ours=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    [ $ours = 1 ] && rm -f "$policy"
    [ $rc = 0 ] || { echo "apt-get install ${missing[*]} failed ($rc)" >&2; exit 1; }
  fi
  # Refuse to go on beside such a daemon in the root namespace (tests must not share or disturb it).
  local d pid root_ns
  # PID 1's namespace where we may read it (not in every container), else our own: test.sh runs
  # in the machine's namespace.
  root_ns=$(readlink /proc/1/ns/net 2>/dev/null || readlink /proc/self/ns/net)
  for d in "${TAPD_NO_SERVICES[@]}"; do
    for pid in $(pgrep -x "$d" || true); do
      if [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$root_ns" ]; then
        echo "$d (pid $pid) runs in the root network namespace; stop it (e.g. 'service openvswitch-switch stop')" \
          "before tapd's tests, which start their own inside namespaces" >&2
        exit 1
      fi
    done
  done
  # ffi-rs ships its binary as an optional dependency: never --omit=optional.
  if [ ! -d node_modules/ffi-rs ] || [ ! -d node_modules/vitest ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "== installing npm packages"
    npm ci --no-audit --no-fund --loglevel=error
  fi
}
