#!/usr/bin/env bash
# Stop the PostgreSQL cluster that scripts/postgres-up.sh started (and nothing else).
#
# Only a data directory carrying postgres-up's marker file is touched; pass --purge to
# also delete the data directory.
set -euo pipefail

PG_DIR="${NBFLOW_PG_DIR:-/var/tmp/nbflow-pg}"
DATA="$PG_DIR/data"
MARKER="$PG_DIR/started-by-nbflow"

if [ ! -f "$MARKER" ]; then
  echo "postgres-down: no cluster started by postgres-up in $PG_DIR; nothing to do" >&2
  exit 0
fi

BINDIR=""
if command -v pg_ctl >/dev/null 2>&1; then BINDIR="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"; fi
if [ -z "$BINDIR" ]; then
  BINDIR="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r | head -n 1)"
fi

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ -f "$DATA/postmaster.pid" ]; then
  echo "postgres-down: stopping the cluster in $DATA" >&2
  as_pg "$BINDIR/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
else
  echo "postgres-down: the cluster in $DATA is not running" >&2
fi

if [ "${1:-}" = "--purge" ]; then
  rm -rf "$PG_DIR"
  echo "postgres-down: removed $PG_DIR" >&2
fi
