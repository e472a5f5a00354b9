#!/usr/bin/env bash
# Start (or reuse) a PostgreSQL server for nbflow's tests and print its URL.
#
# Order of preference:
#   1. the server at $NBFLOW_TEST_POSTGRES_URL, when it answers;
#   2. the cluster this script started earlier (pidfile under $NBFLOW_PG_DIR);
#   3. a new throw-away cluster: initdb in $NBFLOW_PG_DIR (default /var/tmp/nbflow-pg),
#      listening on 127.0.0.1:$NBFLOW_PG_PORT (default 55432). Missing server binaries are
#      installed with apt-get (Debian/Ubuntu, as root).
#
# The last line printed is `export NBFLOW_TEST_POSTGRES_URL=postgresql://...`, so
#   eval "$(scripts/postgres-up.sh | tail -n 1)"
# configures the current shell. Stop the cluster with scripts/postgres-down.sh.
set -euo pipefail

PG_DIR="${NBFLOW_PG_DIR:-/var/tmp/nbflow-pg}"
PG_PORT="${NBFLOW_PG_PORT:-55432}"
PG_USER="${NBFLOW_PG_USER:-nbflow}"
PG_PASSWORD="${NBFLOW_PG_PASSWORD:-nbflow}"
PG_DB="${NBFLOW_PG_DB:-nbflow_test}"
DATA="$PG_DIR/data"
MARKER="$PG_DIR/started-by-nbflow"
URL="postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"

log() { echo "postgres-up: $*" >&2; }

find_bindir() {
  local candidate
  if command -v pg_ctl >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v pg_ctl)")"; return 0; fi
  for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$candidate/pg_ctl" ] && [ -x "$candidate/initdb" ]; then echo "$candidate"; return 0; fi
  done
  return 1
}

psql_bin() {  # the psql next to the server binaries, else the one on PATH
  if [ -n "${BINDIR:-}" ] && [ -x "$BINDIR/psql" ]; then echo "$BINDIR/psql"; else command -v psql; fi
}

reachable() {  # reachable URL: whether a server answers a query at URL
  local psql
  psql="$(psql_bin)" || return 1
  "$psql" "$1" -tAc 'select 1' >/dev/null 2>&1
}

# as_pg CMD...: run a command as the postgres user (initdb and postgres refuse root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

BINDIR="$(find_bindir || true)"

if [ -n "${NBFLOW_TEST_POSTGRES_URL:-}" ] && reachable "$NBFLOW_TEST_POSTGRES_URL"; then
  log "using the server at NBFLOW_TEST_POSTGRES_URL"
  echo "export NBFLOW_TEST_POSTGRES_URL=$NBFLOW_TEST_POSTGRES_URL"
  exit 0
fi

if [ -z "$BINDIR" ]; then
  if [ "$(id -u)" != 0 ]; then
    log "no PostgreSQL server binaries found; install them (apt-get install postgresql) or run as root"
    exit 1
  fi
  log "installing PostgreSQL with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  # Debian's package starts a default cluster on 5432; we use our own and leave that alone.
  BINDIR="$(find_bindir)"
fi

if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

mkdir -p "$PG_DIR"
[ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR" && chmod 700 "$PG_DIR"

if [ ! -s "$DATA/PG_VERSION" ]; then
  log "initdb in $DATA"
  as_pg "$BINDIR/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --no-locale >/dev/null
  touch "$MARKER"
  [ "$(id -u)" = 0 ] && chown postgres: "$MARKER"
fi

if ! as_pg "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  if ! as_pg "$BINDIR/pg_ctl" -D "$DATA" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $PG_PORT -k $PG_DIR -c max_connections=200 -c fsync=off" start >/dev/null; then
    tail -n 5 "$PG_DIR/server.log" >&2 || true
    log "could not start PostgreSQL on port $PG_PORT (in use? set NBFLOW_PG_PORT to a free port)"
    exit 1
  fi
fi

ADMIN="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
psql_admin() { "$(psql_bin)" "$ADMIN" -v ON_ERROR_STOP=1 -tAc "$1"; }
if [ "$(psql_admin "select 1 from pg_roles where rolname = '$PG_USER'")" != 1 ]; then
  psql_admin "create role $PG_USER login password '$PG_PASSWORD'" >/dev/null
fi
if [ "$(psql_admin "select 1 from pg_database where datname = '$PG_DB'")" != 1 ]; then
  psql_admin "create database $PG_DB owner $PG_USER" >/dev/null
fi

log "ready: $URL"
echo "export NBFLOW_TEST_POSTGRES_URL=$URL"
