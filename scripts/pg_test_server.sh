#!/usr/bin/env bash
# A throw-away PostgreSQL server on loopback, for the store tests.
#
#   scripts/pg_test_server.sh start    start it (idempotent) and print its URL on stdout
#   scripts/pg_test_server.sh url      print the URL of the running server
#   scripts/pg_test_server.sh stop     stop it and delete its data directory
#
# Uses the Debian `postgresql` package (scripts/setup.sh --test installs it).
# The data directory is $DIALOUT_PG_DIR (default /tmp/dialout-pg-test-$UID).
# Trust authentication on 127.0.0.1 only; no TCP on other interfaces; fsync off
# (the data is disposable). PostgreSQL refuses to run as root, so as root the
# server runs as the `postgres` user from a directory that user owns.
set -euo pipefail

dir=${DIALOUT_PG_DIR:-${TMPDIR:-/tmp}/dialout-pg-test-$(id -u)}
data=$dir/data
log() { echo "pg_test_server: $*" >&2; }

bindir=""
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
  [ -x "$d/initdb" ] && { bindir=$d; break; }
done
if [ -z "$bindir" ]; then
  log "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; run scripts/setup.sh --test (Debian package postgresql)"
  exit 1
fi

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

url() {
  local port
  port=$(cat "$dir/port" 2>/dev/null) || return 1
  echo "postgresql://postgres@127.0.0.1:$port/postgres"
}

running() {
  [ -f "$data/PG_VERSION" ] && as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1
}

free_port() {
  python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

start() {
  if running; then
    url
    return 0
  fi
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$dir"
    chmod 700 "$dir"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    rm -rf "$data"
    as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
      || { log "initdb failed:"; cat "$dir/initdb.log" >&2; exit 1; }
  fi
  local port
  port=$(free_port)
  echo "$port" >"$dir/port"
  # pg_hba: loopback only, trust.
  as_owner sh -c "printf '%s\n' 'local all all trust' 'host all all 127.0.0.1/32 trust' >'$data/pg_hba.conf'"
  if ! as_owner "$bindir/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
      start >/dev/null; then
    log "server failed to start; log follows:"
    cat "$dir/server.log" >&2 || true
    exit 1
  fi
  url
}

stop() {
  if running; then
    as_owner "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) running && url || { log "not running"; exit 1; } ;;
  *) echo "usage: $0 start|url|stop" >&2; exit 2 ;;
esac
