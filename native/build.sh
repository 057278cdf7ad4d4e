#!/bin/sh
# Builds tapd-bridge-helper: native/build.sh [OUTDIR]   (default native/build; CC=... to choose)
# Static where the toolchain allows (glibc's libc.a: libc6-dev), so nothing it loads at run time
# can be swapped under it; a dynamic build otherwise. Unprivileged: no setuid, no capabilities.
set -eu
here=$(cd "$(dirname "$0")" && pwd -P)
out=${1:-$here/build}
cc=${CC:-cc}
mkdir -p "$out"
src="$here/tapd-bridge-helper.c $here/tapd-reply.c"
flags="-std=gnu11 -D_GNU_SOURCE -Os -Wall -Wextra -Werror -fstack-protector-strong -D_FORTIFY_SOURCE=2 -Wl,-z,relro,-z,now -Wl,--build-id=none"
tmp="$out/.tapd-bridge-helper.$$"
trap 'rm -f "$tmp"' EXIT
# shellcheck disable=SC2086
if $cc $flags -static-pie -fPIE -o "$tmp" $src 2>/dev/null || $cc $flags -static -o "$tmp" $src 2>/dev/null; then
  :
else
  echo "build.sh: no static libc here; building tapd-bridge-helper dynamically" >&2
  # shellcheck disable=SC2086
  $cc $flags -fPIE -pie -o "$tmp" $src
fi
strip "$tmp" 2>/dev/null || true
chmod 0755 "$tmp"
mv -f "$tmp" "$out/tapd-bridge-helper"
