#!/usr/bin/env bash
# Build a high-capacity pjsua2 Python wheel from pjproject source, once per machine.
#
# The PyPI pjsua2 wheels are compiled with PJSUA_MAX_CALLS=4 and a 64-handle
# select() ioqueue, so they cannot carry a gateway. This script builds
# pjproject with scripts/config_site.h and the epoll ioqueue, then the SWIG
# binding, and caches the wheel outside the work tree:
#
#   ${DIALOUT_CACHE:-~/.cache/dialout-gateway}/wheels/<key>/pjsua2-<version>-*.whl
#
# <key> hashes config_site.h, the configure flags, this script and the Python
# version; the pjproject version is in the wheel's file name. A second run with
# the same inputs prints the cached wheel's path and does nothing else.
#
# Source: $PJPROJECT_SRC (a release tarball or a checkout) when set; otherwise
# the orig-Xpjproject component of Debian unstable's `asterisk` source package,
# fetched with a private apt configuration built from this machine's own
# Debian mirror (no mirror host is written in this repository).
#
# Usage: scripts/build_pjsua2.sh [PYTHON]     prints the wheel path on stdout
set -euo pipefail

PYTHON=${1:-python3}
case $PYTHON in */*) [ "${PYTHON#/}" != "$PYTHON" ] || PYTHON=$PWD/$PYTHON ;; esac  # the build cds around
here=$(cd "$(dirname "$0")" && pwd)
cache=${DIALOUT_CACHE:-$HOME/.cache/dialout-gateway}
min_version=2.14
log() { echo "build_pjsua2: $*" >&2; }

configure_flags=(
  --enable-epoll --disable-video --disable-sound --disable-libwebrtc
  --disable-opencore-amr --disable-silk --disable-sdl --disable-ffmpeg
  --disable-openh264 --disable-v4l2 --disable-libyuv --disable-bcg729
  --disable-gsm-codec --disable-speex-codec --disable-speex-aec
  --disable-ilbc-codec --disable-g7221-codec --disable-resample
  --with-external-srtp --disable-upnp
)
cflags="-fPIC -O2"

py_tag=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
key=$( { cat "$here/config_site.h" "$0"; echo "$cflags ${configure_flags[*]} $py_tag ${PJPROJECT_SRC:-debian}"; } \
       | sha256sum | cut -c1-16)
wheel_dir=$cache/wheels/$key
existing=$(ls "$wheel_dir"/pjsua2-*.whl 2>/dev/null | head -n1 || true)
if [ -n "$existing" ]; then
  echo "$existing"
  exit 0
fi

log "no cached wheel for key $key; building pjproject (about 3 minutes on 2 cores)"
work=$(mktemp -d "${TMPDIR:-/tmp}/pjbuild.XXXXXX")
trap 'rm -rf "$work"' EXIT

fetch_from_debian() {
  # A deb-src entry for unstable, on the mirror this machine already uses.
  local uri
  uri=$(grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
        | grep -v security | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hE '^\s*deb\s' /etc/apt/sources.list 2>/dev/null | awk '{for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
          | grep -v security | head -n1 || true)
  fi
  [ -n "$uri" ] || { log "cannot find a Debian mirror in /etc/apt; set PJPROJECT_SRC to a pjproject tarball"; exit 1; }
  local apt_dir=$cache/apt
  mkdir -p "$apt_dir/lists/partial" "$cache/src"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri unstable main" > "$apt_dir/sources.list"
  local apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
                  -o "Dir::State::Lists=$apt_dir/lists" -o APT::Sandbox::User=root)
  local tarball
  tarball=$(ls "$cache"/src/asterisk_*orig-Xpjproject.tar.xz 2>/dev/null | tail -n1 || true)
  if [ -z "$tarball" ]; then
    log "fetching asterisk's pjproject component from Debian unstable ($uri)"
    apt-get "${apt_opts[@]}" -qq update >&2
    (cd "$cache/src" && apt-get "${apt_opts[@]}" -qq source --download-only asterisk >&2)
    tarball=$(ls "$cache"/src/asterisk_*orig-Xpjproject.tar.xz 2>/dev/null | tail -n1 || true)
    [ -n "$tarball" ] || { log "asterisk source has no orig-Xpjproject component"; exit 1; }
  fi
  echo "$tarball"
}

src=${PJPROJECT_SRC:-}
[ -n "$src" ] || src=$(fetch_from_debian)
mkdir -p "$work/src"
if [ -d "$src" ]; then
  cp -a "$src/." "$work/src/"
else
  tar -xf "$src" -C "$work/src" --strip-components=1
fi
cd "$work/src"
[ -f version.mak ] || { log "$src is not a pjproject tree (no version.mak)"; exit 1; }

version=$(awk -F':=' '/export PJ_VERSION_MAJOR/{ma=$2} /export PJ_VERSION_MINOR/{mi=$2} /export PJ_VERSION_REV/{re=$2}
          END{gsub(/ /,"",ma); gsub(/ /,"",mi); gsub(/ /,"",re); v=ma"."mi; if (re!="") v=v"."re; print v}' version.mak)
if ! "$PYTHON" -c "import sys; a=[int(x) for x in '$version'.split('.')]; b=[int(x) for x in '$min_version'.split('.')]; sys.exit(a < b)"; then
  log "pjproject $version is older than $min_version"; exit 1
fi
log "pjproject $version"

# Debian's repack strips the BlackBerry/Intel audio device source; it is
# disabled anyway, but the makefile still lists it.
touch pjmedia/src/pjmedia-audiodev/bdimad_dev.c
cp "$here/config_site.h" pjlib/include/pj/config_site.h

jobs=$(nproc 2>/dev/null || echo 2)
CFLAGS="$cflags" CXXFLAGS="$cflags" ./configure "${configure_flags[@]}" > "$work/configure.log" 2>&1 \
  || { tail -n 30 "$work/configure.log" >&2; log "configure failed"; exit 1; }
make dep -j"$jobs" > "$work/make.log" 2>&1 && make -j"$jobs" >> "$work/make.log" 2>&1 \
  || { tail -n 40 "$work/make.log" >&2; log "make failed"; exit 1; }

# SWIG directors dispatch every virtual callback of a Python subclass into
# Python, overridden or not. A relayed call fires stream, media-transport and
# media-state callbacks the gateway does not use (about 8 % of the CPU of a
# bare relay), so only the Call callbacks gateway/legs.py overrides stay
# directed; the others run pjsua2's own C++ implementation directly.
python_callbacks="onCallState onCallTsxState onCallSdpCreated onCallRxReinvite onCallTransferRequest onCallReplaceRequest"
nodirector=""
for cb in $(sed -nE 's/^[[:space:]]*(virtual [a-z_]+ )?(on[A-Z][A-Za-z]+)\(.*/\2/p' pjsip/include/pjsua2/call.hpp | sort -u); do
  case " $python_callbacks " in *" $cb "*) ;; *) nodirector+="%feature(\"nodirector\") pj::Call::$cb;\n" ;; esac
done
sed -i "s/^%feature(\"director\") Call;/&\n$nodirector/" pjsip-apps/src/swig/pjsua2.i
log "SWIG directors kept for: $python_callbacks"

cd pjsip-apps/src/swig/python
"$PYTHON" -m pip -q install --disable-pip-version-check setuptools wheel >&2
make pjsua2_wrap.cpp > "$work/swig.log" 2>&1 || { tail -n 30 "$work/swig.log" >&2; log "swig failed"; exit 1; }
"$PYTHON" setup.py -q bdist_wheel > "$work/wheel.log" 2>&1 || { tail -n 30 "$work/wheel.log" >&2; log "wheel build failed"; exit 1; }

mkdir -p "$wheel_dir"
cp dist/pjsua2-*.whl "$wheel_dir/"
ls "$wheel_dir"/pjsua2-*.whl | head -n1
log "cached in $wheel_dir"
