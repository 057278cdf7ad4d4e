# Installs what tapd's build, tests, demo and bench need, only where missing. Sourced.
TAPD_DEBS=(qemu-system-x86 qemu-system-common dnsmasq-base busybox-static tcpdump iproute2 util-linux
  gcc libc6-dev cpio xz-utils zstd polkitd pkexec dbus-daemon systemd procps libnss-extrausers)

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
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # ffi-rs ships its binary as an optional dependency: never --omit=optional.
  if [ ! -d node_modules/ffi-rs ] || [ ! -d node_modules/vitest ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "== installing npm packages"
    npm ci --no-audit --no-fund --loglevel=error
  fi
}
