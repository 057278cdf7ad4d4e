#!/bin/sh
# Install the built tapd (run `npm ci && npm run build` first, as a normal user).
#
#   sudo scripts/install.sh [--prefix /usr] [--sysconfdir /etc] [--node /usr/bin/node]
#                           [--polkitdir /usr/share/polkit-1/actions]
#                           [--create-user | --no-create-user]
#   DESTDIR=/tmp/root scripts/install.sh ...     (packagers; or --destdir DIR)
#
# What goes where (PREFIX=/usr):
#   /usr/lib/tapd/                 package.json, dist/, production node_modules/,
#                                  hooks/qemu-ifup, hooks/qemu-ifdown (samples),
#                                  tapd-bridge-up (uplink bridge script), tapd-run (tapd as
#                                  the unit runs it, for hosts without systemd), install-manifest
#   /usr/bin/tapd, tapctl          sh wrappers: exec NODE /usr/lib/tapd/dist/cli/X.js "$@"
#   /usr/bin/tapd-bridge-helper    a static C program, compiled here from native/ (needs cc
#                                  and libc6-dev); no setuid bit, no capabilities
#   /usr/lib/systemd/system/tapd.socket, tapd.service
#   /usr/lib/udev/rules.d/70-tapd-macvtap.rules   (group tapd rw on macvtap /dev/tapN)
#   /etc/tapd/tapd.conf            commented default; an existing one is never
#                                  touched, the new default goes to tapd.conf.dist-new
#   /usr/share/polkit-1/actions/org.tapd.policy
#   /usr/share/doc/tapd/sudoers.sample   (not enabled), and docs/*.md
#   /usr/share/man/man{1,5,8}/       tapctl(1), tapd.conf(5), tapd(8), tapd-bridge-helper(8)
#                                  (generated from --help and docs/policy.md by docs/man/gen-man.mjs)
#   /usr/share/bash-completion/completions/tapctl, /usr/share/zsh/vendor-completions/_tapctl
#   the `tapd` system user and group (not with DESTDIR unless --create-user)
#
# Everything is root:root, files 0644 or 0755, directories 0755, and the script
# refuses to install when any directory on the way to /usr/lib/tapd (up to /, or
# up to DESTDIR) is not root-owned or is group/other-writable: tapd runs with
# CAP_NET_ADMIN, so whoever can change its code or interpreter owns the network.
# Running it again changes nothing. scripts/uninstall.sh undoes it.
set -eu
umask 022
export LC_ALL=C

me=install.sh
die() { echo "$me: $*" >&2; exit 1; }
say() { echo "$*"; }

prefix=/usr
sysconfdir=/etc
polkitdir=/usr/share/polkit-1/actions
node=
create_user=
destdir=${DESTDIR:-}

while [ $# -gt 0 ]; do
  case $1 in
    --prefix) [ $# -ge 2 ] || die "$1 needs a value"; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --sysconfdir) [ $# -ge 2 ] || die "$1 needs a value"; sysconfdir=$2; shift 2 ;;
    --sysconfdir=*) sysconfdir=${1#*=}; shift ;;
    --polkitdir) [ $# -ge 2 ] || die "$1 needs a value"; polkitdir=$2; shift 2 ;;
    --polkitdir=*) polkitdir=${1#*=}; shift ;;
    --node) [ $# -ge 2 ] || die "$1 needs a value"; node=$2; shift 2 ;;
    --node=*) node=${1#*=}; shift ;;
    --destdir) [ $# -ge 2 ] || die "$1 needs a value"; destdir=$2; shift 2 ;;
    --destdir=*) destdir=${1#*=}; shift ;;
    --create-user) create_user=yes; shift ;;
    --no-create-user) create_user=no; shift ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

# Paths end up in unit files, wrappers and sed expressions: keep them plain.
for p in "$prefix" "$sysconfdir" "$polkitdir" ${node:+"$node"}; do
  case $p in
    /*) ;;
    *) die "not an absolute path: $p" ;;
  esac
  case $p in
    *[!A-Za-z0-9._/+-]*|*/../*|*/..) die "path with unsupported characters: $p" ;;
  esac
done
if [ -n "$destdir" ]; then
  case $destdir in /*) ;; *) die "DESTDIR must be an absolute path: $destdir" ;; esac
  destdir=${destdir%/}
  [ -d "$destdir" ] || die "DESTDIR $destdir does not exist"
fi
prefix=${prefix%/}; [ -n "$prefix" ] || prefix=/
[ -n "$create_user" ] || { [ -n "$destdir" ] && create_user=no || create_user=yes; }
[ -n "$node" ] || node=/usr/bin/node

bindir=${prefix%/}/bin
libdir=${prefix%/}/lib/tapd
unitdir=${prefix%/}/lib/systemd/system
docdir=${prefix%/}/share/doc/tapd
confdir=${sysconfdir%/}/tapd

[ "$(id -u)" = 0 ] || die "run as root (packagers without root: fakeroot $0 --destdir DIR)"

# Two owners of /usr/lib/tapd would undo each other: the Debian package's files belong to dpkg.
if [ -z "$destdir" ] && command -v dpkg-query >/dev/null &&
  dpkg-query -W -f='${Status}' tapd 2>/dev/null | grep -q ' installed$'; then
  die "the Debian package tapd is installed: upgrade it with apt or dpkg (or remove it first: dpkg --purge tapd)"
fi

src=$(cd "$(dirname "$0")/.." && pwd -P)
for f in dist/cli/tapd.js dist/cli/tapctl.js package.json package-lock.json \
         native/build.sh native/tapd-bridge-helper.c native/tapd-reply.c native/tapd-reply.h \
         systemd/tapd.socket systemd/tapd.service systemd/tapd.sudoers.sample scripts/tapd-run \
         docs/man/gen-man.mjs completion/tapctl.bash completion/_tapctl; do
  [ -f "$src/$f" ] || die "$src/$f is missing (build first: npm ci && npm run build)"
done

changed=0
unchanged=0
notes=
note() { notes="$notes
  $*"; }

# --- trust checks --------------------------------------------------------------

# writable_by_others MODE: is octal MODE (as `stat -c %a` prints it) group- or other-writable?
writable_by_others() { [ $((0$1 & 022)) -ne 0 ]; }

# check_dir_chain DIR: DIR and every directory above it, up to DESTDIR (or /),
# must be root-owned and not group/other-writable. Missing ones are fine (they
# are created root:root 0755). For a live install the symlink-free path is
# checked too, so /usr/lib/tapd -> /home/x/tapd is caught.
check_dir_chain() {
  _start=$1
  _d=$1
  while :; do
    if [ -e "$_d" ]; then
      [ -d "$_d" ] || die "refusing to install: $_d is not a directory"
      _uid=$(stat -L -c %u "$_d")
      _mode=$(stat -L -c %a "$_d")
      [ "$_uid" = 0 ] || die "refusing to install: $_d is owned by uid $_uid, not root"
      ! writable_by_others "$_mode" || die "refusing to install: $_d is writable by group or others (mode $_mode)"
    fi
    [ "$_d" = "${destdir:-/}" ] || [ "$_d" = / ] && break
    _d=$(dirname "$_d")
  done
  if [ -z "$destdir" ] && [ "$(readlink -m "$_start")" != "$_start" ]; then
    check_dir_chain "$(readlink -m "$_start")"
  fi
}

# The interpreter runs the daemon with CAP_NET_ADMIN: it must be as trusted as
# the code. Only checked for a live install; a DESTDIR's node is the target's.
if [ -z "$destdir" ]; then
  if [ ! -x "$node" ]; then
    alt=$(command -v node 2>/dev/null || true)
    [ -z "$alt" ] || die "no executable $node; found $alt: pass --node $alt if that is the node to run tapd with"
    die "no executable $node (install Node.js 20 or later, or pass --node PATH)"
  fi
  realnode=$(readlink -f "$node")
  node_uid=$(stat -c %u "$realnode")
  node_mode=$(stat -c %a "$realnode")
  [ "$node_uid" = 0 ] || die "refusing: $realnode (node) is owned by uid $node_uid, not root"
  ! writable_by_others "$node_mode" || die "refusing: $realnode (node) is writable by group or others"
  [ $((0$node_mode & 01)) -ne 0 ] || die "$realnode (node) is not executable by others: the tapd user could not run it"
  check_dir_chain "$(dirname "$realnode")"
  major=$("$node" -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 20 ] || die "$node is Node.js $major; tapd needs 20 or later"
fi

[ ! -L "$destdir$libdir" ] || die "refusing to install: $destdir$libdir is a symlink"
check_dir_chain "$destdir$libdir"
check_dir_chain "$destdir$bindir"
check_dir_chain "$destdir$unitdir"
check_dir_chain "$destdir$confdir"

# --- helpers ---------------------------------------------------------------------

# mkdirs DIR: create DIR and missing parents, root:root 0755.
mkdirs() {
  [ -d "$1" ] && return 0
  mkdirs "$(dirname "$1")"
  mkdir -m 0755 "$1"
  chown 0:0 "$1"
}

# put MODE SRC DEST: install SRC as $destdir/DEST, root:root MODE, atomically,
# and only when something differs.
put() {
  dst=$destdir$3
  if [ -f "$dst" ] && [ ! -L "$dst" ] && cmp -s "$2" "$dst" && [ "$(stat -c '%u:%g %a' "$dst")" = "0:0 ${1#0}" ]; then
    unchanged=$((unchanged + 1))
    return 0
  fi
  mkdirs "$(dirname "$dst")"
  tmp=$(mktemp "$dst.XXXXXX")
  cat "$2" >"$tmp"
  chown 0:0 "$tmp"
  chmod "$1" "$tmp"
  mv -f "$tmp" "$dst"
  say "installed  $3"
  changed=$((changed + 1))
}

# tree_listing DIR: type, mode, owner and path of everything under DIR, sha256 of files.
tree_listing() {
  (cd "$1" && find . -printf '%y %m %U:%G %p\n' | sort &&
    find . -type f -print0 | sort -z | xargs -0r sha256sum)
}

work=$(mktemp -d "${TMPDIR:-/tmp}/tapd-install.XXXXXX")
stage=
cleanup() {
  rm -rf "$work"
  [ -z "$stage" ] || rm -rf "$stage"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# --- the tapd user and group -----------------------------------------------------

if [ "$create_user" = yes ]; then
  if [ -n "$destdir" ]; then
    if [ ! -f "$destdir/etc/passwd" ] || [ ! -f "$destdir/etc/group" ]; then
      die "--create-user with DESTDIR needs $destdir/etc/passwd and $destdir/etc/group"
    fi
    ua_root="--prefix $destdir"
    has_group() { grep -q '^tapd:' "$destdir/etc/group"; }
    has_user() { grep -q '^tapd:' "$destdir/etc/passwd"; }
  else
    ua_root=
    has_group() { getent group tapd >/dev/null; }
    has_user() { getent passwd tapd >/dev/null; }
  fi
  nologin=/usr/sbin/nologin
  [ -x "$destdir$nologin" ] || nologin=/sbin/nologin
  if ! has_group; then
    # shellcheck disable=SC2086
    groupadd $ua_root --system tapd
    say "created    group tapd"
    changed=$((changed + 1))
  fi
  if ! has_user; then
    # shellcheck disable=SC2086
    useradd $ua_root --system --gid tapd --no-create-home --home-dir /nonexistent \
      --shell "$nologin" --comment "tapd daemon" tapd
    say "created    user tapd (system, no home, $nologin)"
    changed=$((changed + 1))
  fi
fi

# --- /usr/lib/tapd: staged complete, swapped in only when it differs -------------

mkdirs "$destdir$(dirname "$libdir")"
stage=$(mktemp -d "$destdir$(dirname "$libdir")/.tapd-new.XXXXXX")

cp -R "$src/dist" "$stage/dist"
# The Node bridge helper that builds before the C one left in dist/: never shipped.
rm -f "$stage"/dist/cli/tapd-bridge-helper.* "$stage"/dist/cli/bridge-helper-args.*
cp "$src/package.json" "$stage/package.json"

# Production dependencies exactly as locked. Install scripts are not run (this
# is root, and no runtime dependency needs one); optional dependencies are kept:
# ffi-rs's native binary is one.
mkdir "$work/npm"
cp "$src/package.json" "$src/package-lock.json" "$work/npm/"
(cd "$work/npm" && npm ci --omit=dev --ignore-scripts --no-bin-links --no-audit --no-fund \
  --prefer-offline --loglevel=error >"$work/npm.log" 2>&1) || {
  cat "$work/npm.log" >&2
  die "npm ci --omit=dev failed"
}
if [ -d "$work/npm/node_modules" ]; then
  rm -f "$work/npm/node_modules/.package-lock.json"
  cp -R "$work/npm/node_modules" "$stage/node_modules"
  # What the packages publish for their own development is not needed to run them: tests,
  # benchmarks, docs sites and images, dotfiles (.github/, .eslintrc, .gitattributes, ...).
  find "$stage/node_modules" -depth -name '.*' -exec rm -rf {} +
  for pkg in "$stage"/node_modules/* "$stage"/node_modules/@*/*; do
    [ -d "$pkg" ] || continue
    (cd "$pkg" && rm -rf test tests benchmarks benchmark docs docsify examples example \
      ./*.png favicon.ico index.html CNAME CONTRIBUTING.md inc-version.sh)
  done
fi

# Sample up/down hooks (QEMU's `script IFNAME` convention) under hooks/; the
# uplink bridge script where tapd.conf and docs/policy.md name it.
mkdir "$stage/hooks"
for h in hooks/qemu-ifup hooks/qemu-ifdown tapd-bridge-up; do
  if [ -f "$src/scripts/${h#hooks/}" ]; then
    cp "$src/scripts/${h#hooks/}" "$stage/$h"
    chmod 0755 "$stage/$h"
  else
    note "scripts/${h#hooks/} not in the source tree: $libdir/$h not installed"
  fi
done
# The command line of tapd.service for hosts without systemd, with this prefix's tapd.
sed "s|/usr/bin/tapd |$bindir/tapd |g; s|/etc/tapd/|$confdir/|g" "$src/scripts/tapd-run" >"$stage/tapd-run"
chmod 0755 "$stage/tapd-run"

# Normalize: root:root, directories 0755, files 0755 when executable else 0644,
# nothing else (no symlinks, devices or fifos: they could point anywhere).
odd=$(find "$stage" ! -type f ! -type d | head -n 5)
[ -z "$odd" ] || die "refusing: not a regular file or directory: $odd"
chown -R 0:0 "$stage"
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -perm /111 -exec chmod 0755 {} +
find "$stage" -type f ! -perm /111 -exec chmod 0644 {} +
# The build output is run through `node FILE` by the wrappers: never executable by itself.
find "$stage/dist" -type f -exec chmod 0644 {} +

# The runtime dependencies must load (a missing native binary shows up here,
# not at the first client connection).
runnode=$node
[ -x "$runnode" ] || runnode=$(command -v node 2>/dev/null) || die "no node on this machine to check the dependencies with"
(cd "$stage" && "$runnode" -e '
  for (const d of Object.keys(require("./package.json").dependencies || {})) require(d);
' </dev/null) || die "the production dependencies in $stage/node_modules do not load"

# --- files outside /usr/lib/tapd ---------------------------------------------------

manifest=$work/manifest
{
  echo "# Installed by tapd's scripts/install.sh; read by scripts/uninstall.sh."
  echo "# prefix=$prefix sysconfdir=$sysconfdir polkitdir=$polkitdir node=$node"
  echo "tree $libdir"
} >"$manifest"
record() { echo "$*" >>"$manifest"; }

for cmd in tapd tapctl; do
  # node's flags for this command live on its script's first line ("#!/usr/bin/env -S node FLAGS").
  flags=$(sed -n '1s|^#!/usr/bin/env -S node ||p' "$src/dist/cli/$cmd.js")
  printf '#!/bin/sh\n# Generated by tapd'"'"'s install.sh.\nexec %s %s%s/dist/cli/%s.js "$@"\n' \
    "$node" "${flags:+$flags }" "$libdir" "$cmd" >"$work/$cmd"
  put 0755 "$work/$cmd" "$bindir/$cmd"
  record "file $bindir/$cmd"
done

# QEMU runs the bridge helper once per NIC: a small static program, built from the source
# being installed (not whatever native/build/ holds), so it always matches it.
sh "$src/native/build.sh" "$work/native" >"$work/cc.log" 2>&1 || {
  cat "$work/cc.log" >&2
  die "building tapd-bridge-helper failed (it needs a C compiler and libc headers: apt install gcc libc6-dev)"
}
put 0755 "$work/native/tapd-bridge-helper" "$bindir/tapd-bridge-helper"
record "file $bindir/tapd-bridge-helper"

sed -e "s|/usr/bin/tapd |$bindir/tapd |g" -e "s|/etc/tapd/|$confdir/|g" \
  "$src/systemd/tapd.service" >"$work/tapd.service"
put 0644 "$work/tapd.service" "$unitdir/tapd.service"
record "file $unitdir/tapd.service"
put 0644 "$src/systemd/tapd.socket" "$unitdir/tapd.socket"
record "file $unitdir/tapd.socket"
# macvtap networks: group tapd may open /dev/tapN (udev; see the rule's comment).
udevdir=${prefix%/}/lib/udev/rules.d
put 0644 "$src/systemd/70-tapd-macvtap.rules" "$udevdir/70-tapd-macvtap.rules"
record "file $udevdir/70-tapd-macvtap.rules"

if [ -f "$src/systemd/org.tapd.policy" ]; then
  put 0644 "$src/systemd/org.tapd.policy" "$polkitdir/org.tapd.policy"
  record "file $polkitdir/org.tapd.policy"
else
  note "systemd/org.tapd.policy not in the source tree: polkit action not installed"
fi

put 0644 "$src/systemd/tapd.sudoers.sample" "$docdir/sudoers.sample"
record "file $docdir/sudoers.sample"
for doc in "$src"/docs/*.md; do
  [ -f "$doc" ] || continue
  put 0644 "$doc" "$docdir/${doc##*/}"
  record "file $docdir/${doc##*/}"
done
record "dir $docdir"

# Man pages, generated here from the built programs' --help and docs/policy.md (so they match
# this build), compressed without a timestamp so that a second run changes nothing.
mkdir "$work/man"
"$runnode" "$src/docs/man/gen-man.mjs" --dist "$src/dist" --out "$work/man" </dev/null >"$work/man.log" 2>&1 || {
  cat "$work/man.log" >&2
  die "generating the man pages failed"
}
for page in "$work"/man/*.[158]; do
  [ -f "$page" ] || die "no man pages were generated"
  gzip -9n <"$page" >"$page.gz"
  sect=${page##*.}
  put 0644 "$page.gz" "${prefix%/}/share/man/man$sect/${page##*/}.gz"
  record "file ${prefix%/}/share/man/man$sect/${page##*/}.gz"
done

put 0644 "$src/completion/tapctl.bash" "${prefix%/}/share/bash-completion/completions/tapctl"
record "file ${prefix%/}/share/bash-completion/completions/tapctl"
put 0644 "$src/completion/_tapctl" "${prefix%/}/share/zsh/vendor-completions/_tapctl"
record "file ${prefix%/}/share/zsh/vendor-completions/_tapctl"

# The configuration belongs to the admin once it exists: never overwritten.
if [ -f "$src/systemd/tapd.conf" ]; then
  conf=$confdir/tapd.conf
  sum=$(sha256sum <"$src/systemd/tapd.conf" | cut -d' ' -f1)
  if [ ! -e "$destdir$conf" ]; then
    put 0644 "$src/systemd/tapd.conf" "$conf"
    record "conf $conf $sum"
  elif cmp -s "$src/systemd/tapd.conf" "$destdir$conf"; then
    unchanged=$((unchanged + 1))
    record "conf $conf $sum"
  else
    put 0644 "$src/systemd/tapd.conf" "$conf.dist-new"
    record "conf $conf -"
    record "file $conf.dist-new"
    note "kept your $conf; the new default is $conf.dist-new (diff them)"
  fi
  record "dir $confdir"
else
  note "systemd/tapd.conf not in the source tree: no default $confdir/tapd.conf installed"
fi

cp "$manifest" "$stage/install-manifest"
chmod 0644 "$stage/install-manifest"

# Swap the staged tree in. Between the two renames $libdir is briefly missing;
# a daemon started in that instant fails and systemd restarts it.
if [ -d "$destdir$libdir" ] && [ "$(tree_listing "$stage")" = "$(tree_listing "$destdir$libdir")" ]; then
  rm -rf "$stage"
  unchanged=$((unchanged + 1))
else
  if [ -e "$destdir$libdir" ]; then
    old=$(mktemp -d "$destdir$(dirname "$libdir")/.tapd-old.XXXXXX")
    mv "$destdir$libdir" "$old/tapd"
    mv "$stage" "$destdir$libdir"
    rm -rf "$old"
  else
    mv "$stage" "$destdir$libdir"
  fi
  say "installed  $libdir/ (dist, node_modules, hooks)"
  changed=$((changed + 1))
fi
stage=

# --- verify the result --------------------------------------------------------------

bad=$(find "$destdir$libdir" \( ! -user 0 -o ! -group 0 -o \( -type d ! -perm 0755 \) \
  -o \( -type f ! -perm 0644 ! -perm 0755 \) -o \( ! -type f ! -type d \) \) -print | head -n 5)
[ -z "$bad" ] || die "installed tree has unexpected owners or modes: $bad"
check_dir_chain "$destdir$libdir"
for cmd in tapd tapctl tapd-bridge-helper; do
  [ "$(stat -c '%u:%g %a' "$destdir$bindir/$cmd")" = "0:0 755" ] || die "$bindir/$cmd has unexpected owner or mode"
done

# Opening /dev/net/tun grants nothing by itself (creating a TAP needs
# CAP_NET_ADMIN), so udev makes it 0666; the tapd user needs that.
if [ -z "$destdir" ] && [ -c /dev/net/tun ]; then
  tun_mode=$(stat -c %a /dev/net/tun)
  [ $((0$tun_mode & 06)) -eq 6 ] ||
    note "/dev/net/tun is mode $tun_mode: the tapd user cannot open it (udev's default rule makes it 0666: KERNEL==\"tun\", MODE=\"0666\")"
fi

# An existing configuration meets new code: say so now if it no longer passes.
if [ -z "$destdir" ] && [ -f "$confdir/tapd.conf" ] &&
  ! "$bindir/tapd" --check-config --config "$confdir/tapd.conf" >"$work/check.log" 2>&1; then
  note "$confdir/tapd.conf does not pass \`tapd --check-config\`:
$(sed 's/^/    /' "$work/check.log")"
fi

# --- report -----------------------------------------------------------------------

if [ "$changed" = 0 ]; then
  say "tapd is already installed as it should be ($unchanged items checked, nothing changed)."
else
  say "$changed changed, $unchanged already up to date."
fi
[ -z "$notes" ] || say "Notes:$notes"
if [ -n "$destdir" ]; then
  say "Installed into DESTDIR $destdir. The target still needs the tapd system user and group
(useradd --system --gid tapd --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tapd)."
elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  say "Next steps:
  systemctl daemon-reload && systemctl enable --now tapd.socket
  usermod -aG tapd YOU          # who may use the socket; log in again afterwards
  edit $confdir/tapd.conf, then check it: $bindir/tapd --check-config
  (if tapd was already running: systemctl restart tapd.service)"
else
  # No systemd as init (sysvinit, OpenRC, runit, a container): nothing binds the socket for
  # tapd, so it is started directly, as the unit would run it.
  say "Next steps (systemd is not running here, so the units are installed but unused):
  usermod -aG tapd YOU          # who may use the socket; log in again afterwards
  edit $confdir/tapd.conf, then check it: $bindir/tapd --check-config
  start tapd as root from your init system (it stays in the foreground, logs to stdout):
    $libdir/tapd-run
  which creates /run/tapd (owner tapd) and runs, with the unit's user and only capability:
    setpriv --reuid tapd --regid tapd --init-groups --inh-caps -all,+net_admin \\
      --ambient-caps -all,+net_admin --bounding-set -all,+net_admin --no-new-privs -- \\
      $bindir/tapd --config $confdir/tapd.conf --socket /run/tapd/tapd.sock \\
      --state-dir /run/tapd/state --socket-mode 0660"
fi
