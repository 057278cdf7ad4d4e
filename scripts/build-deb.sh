#!/bin/sh
# Builds the Debian package from this tree:   npm run deb   (or: sudo scripts/build-deb.sh)
#
#   scripts/build-deb.sh [--out DIR] [--no-build]
#
# Result: DIR/tapd_VERSION_ARCH.deb (DIR defaults to .cache/deb). The file tree is exactly what
# scripts/install.sh installs (so both ways to install cannot drift), staged with --destdir,
# with the Debian specifics on top: the units in /lib/systemd/system (Debian 12's place),
# packaging/deb/ (control, maintainer scripts, conffiles, copyright, changelog,
# lintian overrides), md5sums. Architecture is the build machine's: ffi-rs's native binary in
# node_modules is per architecture. Needs root or fakeroot (install.sh makes root-owned files),
# npm (production node_modules from the lockfile) and dpkg-deb.
set -eu
umask 022
export LC_ALL=C

me=build-deb.sh
die() { echo "$me: $*" >&2; exit 1; }

src=$(cd "$(dirname "$0")/.." && pwd -P)
out=$src/.cache/deb
build=yes
while [ $# -gt 0 ]; do
  case $1 in
    --out) [ $# -ge 2 ] || die "$1 needs a value"; out=$2; shift 2 ;;
    --out=*) out=${1#*=}; shift ;;
    --no-build) build=no; shift ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  command -v fakeroot >/dev/null || die "run as root, or install fakeroot"
  exec fakeroot "$0" --out "$out" $( [ $build = yes ] || echo --no-build )
fi
command -v dpkg-shlibdeps >/dev/null || die "dpkg-shlibdeps is missing (apt-get install dpkg-dev)"

cd "$src"
version=$(node -p 'require("./package.json").version')
arch=$(dpkg --print-architecture)
deb_version=$(sed -n '1s/^tapd (\([^)]*\)).*/\1/p' packaging/deb/changelog)
[ "$deb_version" = "$version" ] || die "packaging/deb/changelog is at $deb_version, package.json at $version: add a changelog entry"
maintainer=$(sed -n 's/^ -- \(.*>\)  .*/\1/p' packaging/deb/changelog | head -n 1)
: "${SOURCE_DATE_EPOCH:=$(date -d "$(sed -n 's/^ -- .*>  //p' packaging/deb/changelog | head -n 1)" +%s)}"
export SOURCE_DATE_EPOCH

if [ $build = yes ]; then
  npm run --silent build
fi

mkdir -p "$out"
stage=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
trap 'exit 130' INT TERM HUP
chmod 0755 "$stage"

sh scripts/install.sh --destdir "$stage" --no-create-user >"$stage.log" 2>&1 || {
  cat "$stage.log" >&2
  rm -f "$stage.log"
  die "install.sh --destdir failed"
}
rm -f "$stage.log"

# dpkg keeps the file list: install.sh's manifest is for uninstall.sh, which must not touch a
# package's files (it refuses without the manifest).
rm "$stage/usr/lib/tapd/install-manifest"
# Debian 12 ships units in /lib/systemd/system (usrmerge makes it /usr/lib too).
mkdir -p "$stage/lib/systemd"
mv "$stage/usr/lib/systemd/system" "$stage/lib/systemd/system"
rmdir "$stage/usr/lib/systemd"

doc=$stage/usr/share/doc/tapd
install -m 0644 packaging/deb/copyright "$doc/copyright"
gzip -9n <packaging/deb/changelog >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"
install -d -m 0755 "$stage/usr/share/lintian/overrides"
install -m 0644 packaging/deb/lintian-overrides "$stage/usr/share/lintian/overrides/tapd"

install -d -m 0755 "$stage/DEBIAN"
for f in postinst prerm postrm; do install -m 0755 "packaging/deb/$f" "$stage/DEBIAN/$f"; done
install -m 0644 packaging/deb/conffiles "$stage/DEBIAN/conffiles"
while read -r conf; do
  [ -f "$stage$conf" ] || die "conffile $conf is not in the package"
done <packaging/deb/conffiles
# The native modules (ffi-rs) link against libc: their shared-library dependencies, as
# dpkg-shlibdeps computes them (it wants a debian/control to read; a minimal one will do).
shlibdir=$(mktemp -d "$out/.shlibs.XXXXXX")
mkdir "$shlibdir/debian"
printf 'Source: tapd\n\nPackage: tapd\nArchitecture: any\n' >"$shlibdir/debian/control"
natives=$(find "$stage" -type f -name '*.node' | sort)
[ -n "$natives" ] || die "no native module (*.node) in node_modules: is ffi-rs's binary missing?"
# shellcheck disable=SC2086
shlibs=$(cd "$shlibdir" && dpkg-shlibdeps -O $natives 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
rm -rf "$shlibdir"
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no library dependencies for $natives"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@SIZE@|$size|" -e "s|@MAINTAINER@|$maintainer|" -e "s|@SHLIBS@|$shlibs|" \
  packaging/deb/control.in >"$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums"

# Same tree, same bytes: every mtime is the changelog's date.
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
deb=$out/tapd_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb.tmp" >/dev/null
mv -f "$deb.tmp" "$deb"
echo "$deb ($(du -k "$deb" | cut -f1) KiB, installed $size KiB)"
