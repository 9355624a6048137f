#!/usr/bin/env bash
# Install everything dialout-gateway needs on a fresh Debian machine, idempotently.
#
#   scripts/setup.sh          runtime: build tools, SIPp, the pjsua2 capacity wheel, the venv
#   scripts/setup.sh --test   the same, plus what the test suite needs (PostgreSQL, Kamailio, baresip, promtool, SIPVicious)
#
# A second run with nothing changed takes about a second: every step checks
# before it acts (dpkg for packages, a stamp for the venv, the wheel cache).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$top/.venv}
log() { echo "setup: $*" >&2; }

packages=(build-essential pkg-config swig libsrtp2-dev libopus-dev libssl-dev uuid-dev
          python3-dev python3-venv dpkg-dev ca-certificates openssl sip-tester)
if [ "${1:-}" = "--test" ]; then
  # A throw-away PostgreSQL, the Kamailio dispatcher of the topology test, and
  # baresip as a real SIP user agent on the trunk side (its -core package holds
  # the binary and every module the interop test loads: g711, ausine, aubridge,
  # menu, ctrl_tcp; the `baresip` package would add GUI and video recommends).
  # Kamailio's app_python3 for the plugin's test (tests/integration/test_kamailio_plugin.py).
  # Prometheus for its promtool, which checks and unit-tests docker/prometheus/alerts.yml
  # (tests/test_monitoring.py); the server itself is not used.
  # SIPVicious (svmap, svwar, svcrack), the toll-fraud scanner aimed at the gateway
  # by tests/integration/test_scanners.py.
  packages+=(postgresql kamailio kamailio-python3-modules baresip-core prometheus sipvicious)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python >= 3.11 for the venv: the first that fits.
python=""
for candidate in ${PYTHON:-} python3 python3.13 python3.12 python3.11; do
  if command -v "$candidate" >/dev/null 2>&1 \
     && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python=$candidate; break
  fi
done
[ -n "$python" ] || { log "Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)"; exit 1; }

if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv with $python"
  "$python" -m venv "$venv" || {
    log "python venv module missing; installing python3-venv"; apt-get install -y -qq python3-venv >/dev/null
    "$python" -m venv "$venv"; }
fi

# The capacity pjsua2 wheel (built once per machine, cached outside the tree).
wheel=$("$top/scripts/build_pjsua2.sh" "$venv/bin/python")
wheel_stamp="$venv/.pjsua2-$(basename "$wheel")-$(sha256sum "$wheel" | cut -c1-12)"
if [ ! -f "$wheel_stamp" ]; then
  log "installing $(basename "$wheel")"
  "$venv/bin/pip" -q install --disable-pip-version-check --force-reinstall --no-deps "$wheel"
  rm -f "$venv"/.pjsua2-*
  touch "$wheel_stamp"
fi

# The project itself, editable, with test extras; redone when pyproject or setup.py changes.
# setup.py builds gateway._sipcore (csrc/) against the pjsua2 build's own headers, so
# pip must see the installed pjsua2 (no build isolation) and that build's directory.
export PJSUA2_BUILD_DIR
PJSUA2_BUILD_DIR=$(dirname "$wheel")
"$venv/bin/pip" -q install --disable-pip-version-check "setuptools>=68" wheel >/dev/null
deps_stamp="$venv/.deps-$(cat "$top/pyproject.toml" "$top/setup.py" | sha256sum | cut -c1-12)"
if [ ! -f "$deps_stamp" ]; then
  log "installing Python dependencies"
  # compat mode: a path entry to the repo, so packages added later import too.
  "$venv/bin/pip" -q install --disable-pip-version-check --no-build-isolation \
    --config-settings editable_mode=compat -e "$top[test]"
  rm -f "$venv"/.deps-*
  touch "$deps_stamp"
fi

# The C extension, rebuilt whenever its sources or the pjsua2 build change (seconds).
ext_stamp="$venv/.sipcore-$(cat "$top"/csrc/* "$top/setup.py" "$wheel" | sha256sum | cut -c1-12)"
if [ ! -f "$ext_stamp" ] || ! ls "$top"/gateway/_sipcore*.so >/dev/null 2>&1; then
  log "building the gateway's C extension (csrc/)"
  (cd "$top" && "$venv/bin/python" setup.py -q build_ext --inplace --force >/dev/null 2>"$venv/.sipcore-build.log") \
    || { cat "$venv/.sipcore-build.log" >&2; log "the C extension failed to build"; exit 1; }
  rm -f "$venv"/.sipcore-*
  touch "$ext_stamp"
fi
