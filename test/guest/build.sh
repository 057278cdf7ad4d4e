#!/usr/bin/env bash
# Build (once) the tiny tapd test guest into <repo>/.cache/guest/:
#   kernel/vmlinux   uncompressed kernel extracted from Debian's generic amd64 vmlinuz;
#                    QEMU boots it through PVH (qemu-system-x86_64 -kernel vmlinux)
#   kernel/vmlinuz   the original bzImage (fallback)
#   initramfs.cpio.gz  busybox-static + NIC driver modules + test/guest/init
# The kernel package is fetched with `apt-get download` and unpacked with `dpkg-deb -x`;
# nothing is installed on this machine except, if missing, the tools listed in need_pkgs.
#
# stdout: shell assignments, so callers can `eval "$(bash test/guest/build.sh)"`:
#   GUEST_KERNEL=... GUEST_INITRD=... GUEST_BZIMAGE=... GUEST_KERNEL_VERSION=... GUEST_CMDLINE=...
# GUEST_CMDLINE is the base kernel command line (append tapd.url=/tapd.serve=/tapd.hold= etc.);
# ipv6.disable=1 keeps the guest quiet and avoids QEMU e1000's 1 s RX hold after the IPv6
# multicast joins rewrite RCTL right at link-up (the DHCP offer would wait ~1 s).
# Boot: qemu-system-x86_64 -accel tcg -m 256 -nodefaults -nographic -serial stdio -monitor none
#   -no-reboot -kernel "$GUEST_KERNEL" -initrd "$GUEST_INITRD" -append "$GUEST_CMDLINE" + NIC args
# Progress goes to stderr. A second run with the cache present only prints.
# Env: TAPD_GUEST_CACHE (cache dir), TAPD_GUEST_KERNEL_PKG (e.g. linux-image-6.1.0-57-amd64),
#      TAPD_GUEST_REBUILD=1 (rebuild everything).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${TAPD_GUEST_CACHE:-$root/.cache/guest}
kdir=$cache/kernel
initrd=$cache/initramfs.cpio.gz

# NIC drivers to ship (module names as in modules.dep, '-' and '_' equivalent).
nic_modules=(virtio_net net_failover failover virtio virtio_pci virtio_ring
  virtio_pci_modern_dev virtio_pci_legacy_dev e1000 8139cp mii 8139too ne2k-pci 8390)

say() { echo "guest/build: $*" >&2; }
die() { say "error: $*"; exit 1; }

shq() { printf "'%s'" "${1//\'/\'\\\'\'}"; } # single-quote for the shell

print_result() {
  echo "GUEST_KERNEL=$(shq "$kdir/vmlinux")"
  echo "GUEST_INITRD=$(shq "$initrd")"
  echo "GUEST_BZIMAGE=$(shq "$kdir/vmlinuz")"
  echo "GUEST_KERNEL_VERSION=$(shq "$(cat "$kdir/version")")"
  echo "GUEST_CMDLINE=$(shq "console=ttyS0 quiet loglevel=1 panic=-1 ipv6.disable=1")"
}

# Hash of everything the initramfs is made from (cheap: a few small files).
inputs_stamp() {
  cat "$here/build.sh" "$here/init" "$here/udhcpc.script" "$kdir/version" "$kdir/modules/load.order" \
    | sha256sum | cut -d' ' -f1
}

cache_ok() {
  [[ ${TAPD_GUEST_REBUILD:-0} != 1 && -f $kdir/.done && -f $initrd && -f $cache/initramfs.stamp ]] \
    && [[ $(cat "$cache/initramfs.stamp") == "$(inputs_stamp)" ]]
}
if cache_ok; then
  print_result
  exit 0
fi
# One builder at a time; whoever waited finds the cache built.
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if cache_ok; then
  print_result
  exit 0
fi

# ---- tools (install quietly, only if missing) --------------------------------------------
need_pkgs=()
dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v xz >/dev/null || need_pkgs+=(xz-utils)
command -v zstd >/dev/null || need_pkgs+=(zstd)
command -v depmod >/dev/null || need_pkgs+=(kmod)
command -v gzip >/dev/null || need_pkgs+=(gzip)
# Not needed to build, but the guest is built to be booted.
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
if ((${#need_pkgs[@]})); then
  say "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null; }
fi
busybox=/bin/busybox
[[ -x $busybox ]] || busybox=$(command -v busybox)

work=$(mktemp -d "$cache/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# ---- vmlinux extraction (like the kernel's scripts/extract-vmlinux) ------------------------
u32le() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
hexat() { od -An -tx1 -j "$2" -N "$3" "$1" | tr -d ' \n'; }

# decompress_at IMAGE OFFSET [LENGTH] > vmlinux ; picks the decompressor from the magic.
decompress_at() {
  local img=$1 off=$2 len=${3:-} magic cmd
  magic=$(hexat "$img" "$off" 6)
  case $magic in
    fd377a585a00) cmd=(xz -dc --single-stream) ;;
    1f8b08*) cmd=(gzip -dc) ;;
    28b52ffd*) cmd=(zstd -dcq) ;;
    5d0000*) cmd=(xz -dc --format=lzma) ;;
    *) return 1 ;;
  esac
  if [[ -n $len ]]; then
    tail -c "+$((off + 1))" "$img" | head -c "$len" | "${cmd[@]}" 2>/dev/null || true
  else
    tail -c "+$((off + 1))" "$img" | "${cmd[@]}" 2>/dev/null || true
  fi
}

is_elf() { [[ -s $1 && $(hexat "$1" 0 4) == 7f454c46 ]]; }

extract_vmlinux() { # extract_vmlinux BZIMAGE OUT
  local img=$1 out=$2 setup off len
  # Exact location from the bzImage header (boot protocol >= 2.08): the protected-mode part
  # starts after (setup_sects+1)*512 bytes; payload_offset/payload_length at 0x248/0x24c.
  if [[ $(hexat "$img" $((0x202)) 4) == 48647253 ]]; then # "HdrS"
    setup=$((16#$(hexat "$img" $((0x1f1)) 1)))
    ((setup == 0)) && setup=4
    off=$(((setup + 1) * 512 + $(u32le "$img" $((0x248)))))
    len=$(u32le "$img" $((0x24c)))
    decompress_at "$img" "$off" "$len" >"$out" || true
    is_elf "$out" && return 0
  fi
  # Fallback: scan for compressed-stream magics, try each hit.
  local re hit
  for re in '\xfd7zXZ\x00' '\x1f\x8b\x08' '\x28\xb5\x2f\xfd'; do
    while read -r hit; do
      decompress_at "$img" "${hit%%:*}" >"$out" || continue
      is_elf "$out" && return 0
    done < <(LC_ALL=C grep -obUaP "$re" "$img" | head -n 20)
  done
  return 1
}

# ---- kernel + modules ---------------------------------------------------------------------
if [[ ${TAPD_GUEST_REBUILD:-0} == 1 || ! -f $kdir/.done ]]; then
  pkg=${TAPD_GUEST_KERNEL_PKG:-}
  if [[ -z $pkg ]]; then
    resolve() { apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'; }
    pkg=$(resolve)
    if [[ -z $pkg ]]; then
      apt-get update -qq >/dev/null
      pkg=$(resolve)
    fi
    [[ -n $pkg ]] || die "cannot resolve linux-image-amd64's kernel package"
  fi
  say "fetching $pkg"
  (cd "$work" && apt-get download -qq "$pkg" >/dev/null 2>&1) \
    || { apt-get update -qq >/dev/null && (cd "$work" && apt-get download -qq "$pkg" >/dev/null); }
  deb=$(ls "$work"/*.deb)
  dpkg-deb -x "$deb" "$work/x"
  rm -f "$deb"
  vmlinuz=$(compgen -G "$work/x/boot/vmlinuz-*" | head -n1) || true
  [[ -f $vmlinuz ]] || die "no vmlinuz in $pkg"
  kver=${vmlinuz##*/vmlinuz-}
  mroot=""
  for d in "$work/x/lib/modules/$kver" "$work/x/usr/lib/modules/$kver"; do
    [[ -d $d ]] && { mroot=$d; break; }
  done
  [[ -n $mroot ]] || die "no modules for $kver in $pkg"
  # The package ships no modules.dep (generated at install time): generate it in place.
  if [[ ! -s $mroot/modules.dep ]]; then
    depmod -b "$work/x" "$kver" 2>/dev/null || depmod -b "$work/x/usr" "$kver"
  fi

  rm -rf "$kdir.new"
  mkdir -p "$kdir.new/modules"
  cp "$vmlinuz" "$kdir.new/vmlinuz"
  say "extracting vmlinux from ${vmlinuz##*/}"
  extract_vmlinux "$kdir.new/vmlinuz" "$kdir.new/vmlinux" || die "could not extract vmlinux"
  echo "$kver" >"$kdir.new/version"

  # Dependency closure and load order from modules.dep ("path: dep1 dep2 ..."; a module's
  # deps are listed so that loading them last-to-first satisfies everything).
  declare -A path_of=() deps_of=() seen=()
  while IFS= read -r line; do
    p=${line%%:*}
    n=${p##*/}; n=${n%%.ko*}; n=${n//-/_}
    path_of[$n]=$p
    deps_of[$n]=${line#*:}
  done <"$mroot/modules.dep"
  order=()
  visit() {
    local n=$1 d dn dl i
    [[ -n ${seen[$n]:-} ]] && return
    seen[$n]=1
    read -ra dl <<<"${deps_of[$n]}"
    for ((i = ${#dl[@]} - 1; i >= 0; i--)); do
      d=${dl[i]##*/}; dn=${d%%.ko*}; dn=${dn//-/_}
      visit "$dn"
    done
    order+=("$n")
  }
  for m in "${nic_modules[@]}"; do
    m=${m//-/_}
    if [[ -n ${path_of[$m]:-} ]]; then
      visit "$m"
    elif grep -qE "/${m//_/[-_]}\.ko" "$mroot/modules.builtin" 2>/dev/null; then
      say "$m is built in"
    else
      say "$m not available in $kver (skipped)"
    fi
  done
  : >"$kdir.new/modules/load.order"
  for n in "${order[@]}"; do
    src=$mroot/${path_of[$n]}
    base=${src##*/}
    case $base in
      *.ko.xz) xz -dc "$src" >"$kdir.new/modules/${base%.xz}"; base=${base%.xz} ;;
      *.ko.zst) zstd -dcq "$src" >"$kdir.new/modules/${base%.zst}"; base=${base%.zst} ;;
      *.ko.gz) gzip -dc "$src" >"$kdir.new/modules/${base%.gz}"; base=${base%.gz} ;;
      *) cp "$src" "$kdir.new/modules/$base" ;;
    esac
    echo "$base" >>"$kdir.new/modules/load.order"
  done
  say "modules: $(tr '\n' ' ' <"$kdir.new/modules/load.order")"
  rm -rf "$work/x"
  touch "$kdir.new/.done"
  rm -rf "$kdir"
  mv "$kdir.new" "$kdir"
fi

# ---- initramfs ----------------------------------------------------------------------------
say "building initramfs"
st=$work/root
mkdir -p "$st"/{bin,sbin,usr/bin,usr/sbin,etc,dev,proc,sys,tmp,run,lib/modules,www}
cp "$busybox" "$st/bin/busybox"
"$busybox" --list-full | while read -r a; do
  [[ $a == bin/busybox || -e $st/$a ]] && continue
  ln -s /bin/busybox "$st/$a"
done
install -m 0755 "$here/init" "$st/init"
install -m 0755 "$here/udhcpc.script" "$st/etc/udhcpc.script"
cp "$kdir"/modules/*.ko "$kdir/modules/load.order" "$st/lib/modules/"
# Owners forced to 0:0 and timestamps dropped, so the archive holds nothing of the build host.
(cd "$st" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) \
  | gzip -9n >"$initrd.new"
mv "$initrd.new" "$initrd"
inputs_stamp >"$cache/initramfs.stamp"

# Built as root inside someone else's checkout: hand the cache to the checkout's owner.
owner=$(stat -c %u:%g "$root")
if [[ $(id -u) == 0 && $owner != 0:0 ]]; then
  chown -R "$owner" "$cache" 2>/dev/null || true
fi

print_result
