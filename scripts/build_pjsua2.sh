#!/usr/bin/env bash
# Build a high-capacity pjsua2 Python wheel from pjproject source, once per machine.
#
# The PyPI pjsua2 wheels are compiled with PJSUA_MAX_CALLS=4 and a 64-handle
# select() ioqueue, so they cannot carry a gateway. This script builds
# pjproject with scripts/config_site.h and the epoll ioqueue, then the SWIG
# binding, and caches the result outside the work tree:
#
#   ${DIALOUT_CACHE:-~/.cache/dialout-gateway}/wheels/<key>/
#       pjsua2-<version>-*.whl   the binding (pjsua2.py, _pjsua2.so, pjsua2_build.py)
#       include/                 the configured headers of that very build
#       cflags                   the defines the build compiled with
#       build-info.json          pjproject version, source, sha256, key
#
# The gateway's own C extension (csrc/, built by setup.py) compiles against
# include/ and cflags and links to _pjsua2.so, so its struct layouts come
# from the compiler and both share one pjsip instance.
#
# <key> hashes config_site.h, the configure flags, this script, the Python
# version and the source's sha256. A second run with the same inputs prints
# the cached wheel's path and does nothing else.
#
# Source: $PJPROJECT_SRC (a release tarball or a checkout) when set; otherwise
# the source pinned in scripts/pjproject.lock (the orig-Xpjproject component
# of Debian's `asterisk` source package), fetched with a private apt
# configuration built from this machine's own Debian mirror.
#
# Usage: scripts/build_pjsua2.sh [PYTHON]     prints the wheel path on stdout
set -euo pipefail

PYTHON=${1:-python3}
case $PYTHON in */*) [ "${PYTHON#/}" != "$PYTHON" ] || PYTHON=$PWD/$PYTHON ;; esac  # the build cds around
here=$(cd "$(dirname "$0")" && pwd)
cache=${DIALOUT_CACHE:-$HOME/.cache/dialout-gateway}
log() { echo "build_pjsua2: $*" >&2; }
die() { log "$*"; exit 1; }

pin() { sed -nE "s/^$1=(.*)$/\1/p" "$here/pjproject.lock"; }
pin_version=$(pin version)
pin_package=$(pin debian_package)
pin_debian_version=$(pin debian_version)
pin_sha256=$(pin sha256)

configure_flags=(
  --enable-epoll --disable-video --disable-sound --disable-libwebrtc
  --disable-opencore-amr --disable-silk --disable-sdl --disable-ffmpeg
  --disable-openh264 --disable-v4l2 --disable-libyuv --disable-bcg729
  --disable-gsm-codec --disable-speex-codec --disable-speex-aec
  --disable-ilbc-codec --disable-g7221-codec --disable-resample
  --with-external-srtp --disable-upnp
)
cflags="-fPIC -O2"

fetch_from_debian() {
  # A deb-src entry for unstable, on the mirror this machine already uses.
  local uri
  uri=$(grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
        | grep -v security | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hE '^\s*deb\s' /etc/apt/sources.list 2>/dev/null | awk '{for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
          | grep -v security | head -n1 || true)
  fi
  [ -n "$uri" ] || die "cannot find a Debian mirror in /etc/apt; set PJPROJECT_SRC to a pjproject tarball"
  local apt_dir=$cache/apt
  mkdir -p "$apt_dir/lists/partial" "$cache/src"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri unstable main" > "$apt_dir/sources.list"
  local apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
                  -o "Dir::State::Lists=$apt_dir/lists" -o APT::Sandbox::User=root)
  local upstream=${pin_debian_version#*:}; upstream=${upstream%-*}
  local tarball=$cache/src/${pin_package}_${upstream}.orig-Xpjproject.tar.xz
  if [ ! -f "$tarball" ]; then
    log "fetching $pin_package $pin_debian_version's pjproject component from Debian unstable ($uri)"
    apt-get "${apt_opts[@]}" -qq update >&2
    if ! (cd "$cache/src" && apt-get "${apt_opts[@]}" -qq source --download-only "$pin_package=$pin_debian_version" >&2); then
      [ "${PJPROJECT_PIN_STRICT:-0}" = 1 ] && die "Debian no longer carries $pin_package $pin_debian_version (PJPROJECT_PIN_STRICT=1)"
      log "WARNING: Debian no longer carries the pinned $pin_package $pin_debian_version; taking the newest one."
      log "WARNING: its sha256 will differ from scripts/pjproject.lock and is recorded in the wheel; bump the pin deliberately."
      (cd "$cache/src" && apt-get "${apt_opts[@]}" -qq source --download-only "$pin_package" >&2)
      tarball=$(ls -t "$cache"/src/"${pin_package}"_*orig-Xpjproject.tar.xz 2>/dev/null | head -n1 || true)
    fi
    [ -f "$tarball" ] || die "$pin_package source has no orig-Xpjproject component"
  fi
  echo "$tarball"
}

src=${PJPROJECT_SRC:-}
[ -n "$src" ] || src=$(fetch_from_debian)
if [ -d "$src" ]; then
  src_sha256="directory:$(cd "$src" && git rev-parse HEAD 2>/dev/null || echo unversioned)"
else
  src_sha256=$(sha256sum "$src" | cut -d' ' -f1)
  if [ -z "${PJPROJECT_SRC:-}" ] && [ "$src_sha256" != "$pin_sha256" ]; then
    [ "${PJPROJECT_PIN_STRICT:-0}" = 1 ] && die "$src has sha256 $src_sha256, not the pinned $pin_sha256 (PJPROJECT_PIN_STRICT=1)"
    log "WARNING: $src has sha256 $src_sha256, not the pinned $pin_sha256 (recorded in the wheel)"
  fi
fi

py_tag=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
key=$( { cat "$here/config_site.h" "$0"; echo "$cflags ${configure_flags[*]} $py_tag $src_sha256"; } \
       | sha256sum | cut -c1-16)
wheel_dir=$cache/wheels/$key
existing=$(ls "$wheel_dir"/pjsua2-*.whl 2>/dev/null | head -n1 || true)
if [ -n "$existing" ] && [ -f "$wheel_dir/build-info.json" ]; then
  echo "$existing"
  exit 0
fi

log "no cached build for key $key; building pjproject (about 3 minutes on 2 cores)"
work=$(mktemp -d "${TMPDIR:-/tmp}/pjbuild.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
if [ -d "$src" ]; then
  cp -a "$src/." "$work/src/"
else
  tar -xf "$src" -C "$work/src" --strip-components=1
fi
cd "$work/src"
[ -f version.mak ] || die "$src is not a pjproject tree (no version.mak)"

version=$(awk -F':=' '/export PJ_VERSION_MAJOR/{ma=$2} /export PJ_VERSION_MINOR/{mi=$2} /export PJ_VERSION_REV/{re=$2}
          END{gsub(/ /,"",ma); gsub(/ /,"",mi); gsub(/ /,"",re); v=ma"."mi; if (re!="") v=v"."re; print v}' version.mak)
[ "$version" = "$pin_version" ] || [ -n "${PJPROJECT_SRC:-}" ] \
  || die "pjproject $version is not the pinned $pin_version (scripts/pjproject.lock)"
log "pjproject $version (sha256 $src_sha256)"

# Debian's repack strips the BlackBerry/Intel audio device source; it is
# disabled anyway, but the makefile still lists it.
touch pjmedia/src/pjmedia-audiodev/bdimad_dev.c
cp "$here/config_site.h" pjlib/include/pj/config_site.h

jobs=$(nproc 2>/dev/null || echo 2)
CFLAGS="$cflags" CXXFLAGS="$cflags" ./configure "${configure_flags[@]}" > "$work/configure.log" 2>&1 \
  || { tail -n 30 "$work/configure.log" >&2; die "configure failed"; }
make dep -j"$jobs" > "$work/make.log" 2>&1 && make -j"$jobs" >> "$work/make.log" 2>&1 \
  || { tail -n 40 "$work/make.log" >&2; die "make failed"; }

# The SWIG binding, unmodified: the gateway drives calls through its own C
# extension (csrc/), so pjsua2 serves only the endpoint, transports and log.
cd pjsip-apps/src/swig/python
defines=$(make --no-print-directory -f helper.mak cflags | grep '^-D' | sort -u | tr '\n' ' ')
"$PYTHON" -m pip -q install --disable-pip-version-check setuptools wheel >&2
make pjsua2_wrap.cpp > "$work/swig.log" 2>&1 || { tail -n 30 "$work/swig.log" >&2; die "swig failed"; }
"$PYTHON" setup.py -q bdist_wheel > "$work/wheel.log" 2>&1 || { tail -n 30 "$work/wheel.log" >&2; die "wheel build failed"; }

# Record what was built inside the wheel itself (pjsua2_build.py).
built=$(ls dist/pjsua2-*.whl | head -n1)
"$PYTHON" -m wheel unpack -d "$work/unpacked" "$built" >&2
unpacked=$(ls -d "$work"/unpacked/pjsua2-*)
cat > "$unpacked/pjsua2_build.py" <<EOF
"""How this pjsua2 wheel was built (written by dialout-gateway's scripts/build_pjsua2.sh)."""
PJPROJECT_VERSION = "$version"
SOURCE = "$(basename "$src")"
SOURCE_SHA256 = "$src_sha256"
PINNED_SHA256 = "$pin_sha256"
CONFIG_SITE_SHA256 = "$(sha256sum "$here/config_site.h" | cut -d' ' -f1)"
BUILD_KEY = "$key"
EOF
mkdir -p "$work/dist"
"$PYTHON" -m wheel pack -d "$work/dist" "$unpacked" >&2

rm -rf "$wheel_dir"
mkdir -p "$wheel_dir/include"
cd "$work/src"
for d in pjlib pjlib-util pjnath pjmedia pjsip; do cp -a "$d/include/." "$wheel_dir/include/"; done
echo "$defines" > "$wheel_dir/cflags"
cat > "$wheel_dir/build-info.json" <<EOF
{"pjproject_version": "$version", "source": "$(basename "$src")", "source_sha256": "$src_sha256",
 "pinned_sha256": "$pin_sha256", "key": "$key"}
EOF
cp "$work"/dist/pjsua2-*.whl "$wheel_dir/"
ls "$wheel_dir"/pjsua2-*.whl | head -n1
log "cached in $wheel_dir"
