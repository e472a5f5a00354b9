#!/usr/bin/env bash
# Stop the Docker daemon that scripts/docker-up.sh started, and nothing else.
#
# Without a live marker ($NBFLOW_DOCKER_ROOT/nbflow-dockerd.pid) there is nothing of ours to
# stop and any running daemon is left alone. Images stay in the data root, so the next
# docker-up.sh + docker-images.sh is fast; `--purge` also deletes the data root.
# Usage: scripts/docker-down.sh [--purge]
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/infra-common.sh
source "$(dirname "$(readlink -f "$0")")/lib/infra-common.sh"
NBFLOW_LOG_TAG=docker-down

ROOT=${NBFLOW_DOCKER_ROOT:-/var/lib/nbflow-docker}
MARKER=$ROOT/nbflow-dockerd.pid
PURGE=0
case ${1:-} in
  --purge) PURGE=1 ;;
  "") ;;
  *) die "unknown argument '$1'; usage: $0 [--purge]" ;;
esac

STOPPED=0
if pid_alive "$MARKER"; then
  pid=$(cat "$MARKER")
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
  if [[ $comm != dockerd ]]; then
    log "pid $pid in $MARKER is '$comm', not dockerd (pid reused?); not touching it"
    rm -f "$MARKER"
  else
    # dockerd stops its containers and its own containerd on SIGTERM.
    stop_pidfile "$MARKER" dockerd 60
    STOPPED=1
  fi
else
  log "no dockerd started by docker-up.sh is running; nothing to stop"
  rm -f "$MARKER"
fi

# After stopping our daemon: orphaned shims/containerd under our exec root and mounts under
# our data root are ours too. Never touch a dockerd, and nothing while one still uses ROOT.
if ((STOPPED)) && ! pgrep -x dockerd -a 2>/dev/null | grep -qF -- "$ROOT/"; then
  for p in $(pgrep -f -- "$ROOT/" || true); do
    comm=$(cat "/proc/$p/comm" 2>/dev/null || true)
    [[ $comm =~ ^(containerd|containerd-shim.*|runc|docker-proxy|docker-init)$ ]] || continue
    log "killing leftover process $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-120)"
    kill -KILL "$p" 2>/dev/null || true
  done
  awk -v root="$ROOT/" 'index($2, root) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    log "unmounting leftover $m"
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
fi

if ((PURGE)); then
  log "deleting $ROOT"
  rm -rf "$ROOT"
fi
log "done"
