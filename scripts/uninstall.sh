#!/bin/sh
# Remove what scripts/install.sh installed, as listed in its install-manifest.
#
#   sudo scripts/uninstall.sh [--prefix /usr] [--purge]
#   DESTDIR=/tmp/root scripts/uninstall.sh ...     (or --destdir DIR)
#
# Use the same --prefix (and DESTDIR) as for install.sh. The configuration
# /etc/tapd/tapd.conf is removed only while it is still the default install.sh
# put there; an edited one stays unless --purge. --purge also removes
# tapd.conf.dist-new, the tapd user and group, and /run/tapd.
# What `systemctl enable` made (the sockets.target.wants/ symlink) goes too, also when
# systemd is not running (enabled in a chroot, or the host has since left systemd).
set -eu
export LC_ALL=C

me=uninstall.sh
die() { echo "$me: $*" >&2; exit 1; }
say() { echo "$*"; }

prefix=/usr
purge=no
destdir=${DESTDIR:-}

while [ $# -gt 0 ]; do
  case $1 in
    --prefix) [ $# -ge 2 ] || die "$1 needs a value"; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --destdir) [ $# -ge 2 ] || die "$1 needs a value"; destdir=$2; shift 2 ;;
    --destdir=*) destdir=${1#*=}; shift ;;
    --purge) purge=yes; shift ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
case $prefix in /*) ;; *) die "not an absolute path: $prefix" ;; esac
if [ -n "$destdir" ]; then
  case $destdir in /*) ;; *) die "DESTDIR must be an absolute path: $destdir" ;; esac
  destdir=${destdir%/}
fi
[ "$(id -u)" = 0 ] || die "run as root"

libdir=${prefix%/}/lib/tapd
manifest=$destdir$libdir/install-manifest
[ -f "$manifest" ] || die "no tapd installation found: $manifest does not exist (wrong --prefix or DESTDIR?)"
grep -qx "tree $libdir" "$manifest" || die "$manifest does not describe $libdir"

# A live system with systemd as init: stop and disable first, so nothing runs
# from files about to disappear.
live_systemd=no
if [ -z "$destdir" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  live_systemd=yes
  systemctl disable --now tapd.socket tapd.service >/dev/null 2>&1 || true
  say "stopped    tapd.socket tapd.service"
fi

# Manifest lines: `tree DIR`, `file PATH`, `conf PATH SHA256|-`, `dir DIR` (removed when empty).
# Paths are absolute, without DESTDIR, and never contain blanks (install.sh refuses those).
dirs=
while read -r kind path sum; do
  case $kind in
    ''|'#'*) continue ;;
  esac
  case $path in
    */../*|*/..) die "bad manifest line: $kind $path" ;;
    /?*) ;;
    *) die "bad manifest line: $kind $path" ;;
  esac
  case $kind in
    tree) ;;
    file)
      if [ -e "$destdir$path" ] || [ -L "$destdir$path" ]; then
        rm -f "$destdir$path"
        say "removed    $path"
      fi
      ;;
    conf)
      # SHA256 of the default install.sh put there, or - when the file was already the admin's.
      if [ "$purge" = yes ] && [ -f "$destdir$path.dist-new" ]; then
        rm -f "$destdir$path.dist-new"
        say "removed    $path.dist-new"
      fi
      [ -f "$destdir$path" ] || continue
      if [ "$purge" = yes ] || [ "$(sha256sum <"$destdir$path" | cut -d' ' -f1)" = "$sum" ]; then
        rm -f "$destdir$path"
        say "removed    $path"
      else
        say "kept       $path (edited; --purge removes it)"
      fi
      ;;
    dir) dirs="$dirs $path" ;;
    *) die "bad manifest line: $kind $path" ;;
  esac
done <"$manifest"

# `systemctl enable tapd.socket` (or tapd.service, whose Also= enables the socket) links the
# units into a target's .wants/ directory; systemctl disable above does the same when it can.
for link in "$destdir"/etc/systemd/system/*.wants/tapd.socket "$destdir"/etc/systemd/system/*.wants/tapd.service; do
  [ -L "$link" ] || continue
  rm -f "$link"
  say "removed    ${link#"$destdir"}"
  rmdir "$(dirname "$link")" 2>/dev/null || true
done

rm -rf "$destdir$libdir"
say "removed    $libdir/"

for d in $dirs; do
  if [ -d "$destdir$d" ]; then
    if rmdir "$destdir$d" 2>/dev/null; then
      say "removed    $d/"
    else
      say "kept       $d/ (not empty)"
    fi
  fi
done

if [ "$purge" = yes ] && [ -z "$destdir" ]; then
  rm -rf /run/tapd
  if getent passwd tapd >/dev/null; then
    userdel tapd
    say "removed    user tapd"
  fi
  if getent group tapd >/dev/null; then
    groupdel tapd
    say "removed    group tapd"
  fi
fi

[ "$live_systemd" = no ] || systemctl daemon-reload
say "tapd uninstalled."
[ "$purge" = yes ] || [ -n "$destdir" ] || say "The tapd user and group were kept (--purge removes them)."
