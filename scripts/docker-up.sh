#!/usr/bin/env bash
# Make sure a Docker daemon answers for nbflow's tests; start one when none does.
#
# If a daemon already answers on the socket ($NBFLOW_DOCKER_SOCK, default
# /var/run/docker.sock: the kubelet of scripts/k8s-up.sh drives that one), it is used and
# scripts/docker-down.sh will leave it alone. Otherwise (as root) installs docker.io and
# mmdebstrap when missing and starts dockerd with:
#   - overlay2 when `mount -t overlay` works under the data root, else vfs (much slower)
#     ($NBFLOW_DOCKER_STORAGE_DRIVER overrides the choice),
#   - data and exec roots under $NBFLOW_DOCKER_ROOT (default /var/lib/nbflow-docker),
#   - --iptables=false --bridge=none (containers need --network host),
#   - scripts/runc-clamp as default runtime when the kernel refuses negative oom_score_adj,
#   - a marker file ($NBFLOW_DOCKER_ROOT/nbflow-dockerd.pid) so docker-down.sh stops only it.
# Last line of stdout: export DOCKER_HOST=unix://...
# See docs/infrastructure.md.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/infra-common.sh
source "$(dirname "$(readlink -f "$0")")/lib/infra-common.sh"
NBFLOW_LOG_TAG=docker-up

SCRIPT_DIR=$(dirname "$(readlink -f "$0")")
SOCK=${NBFLOW_DOCKER_SOCK:-/var/run/docker.sock}
ROOT=${NBFLOW_DOCKER_ROOT:-/var/lib/nbflow-docker}
MARKER=$ROOT/nbflow-dockerd.pid
LOGFILE=$ROOT/dockerd.log

daemon_answers() {
  command -v docker >/dev/null 2>&1 && docker -H "unix://$SOCK" version >/dev/null 2>&1
}

if daemon_answers; then
  if pid_alive "$MARKER"; then
    log "daemon started earlier by docker-up.sh answers on $SOCK (pid $(cat "$MARKER"))"
  else
    log "a daemon not started by this script answers on $SOCK; using it (docker-down.sh will leave it running)"
  fi
  echo "export DOCKER_HOST=unix://$SOCK"
  exit 0
fi

[[ $(id -u) == 0 ]] || die "no Docker daemon answers on $SOCK and starting one needs root"
T0=$SECONDS
apt_install_missing docker.io mmdebstrap
command -v dockerd >/dev/null || die "dockerd not found after installing docker.io"
log "packages ready after $((SECONDS - T0))s"
mkdir -p "$ROOT"

if pid_alive "$MARKER"; then
  # Ours, but not answering (yet): maybe still starting; wait below instead of starting another.
  log "dockerd from a previous docker-up.sh (pid $(cat "$MARKER")) is alive; waiting for it"
else
  driver=${NBFLOW_DOCKER_STORAGE_DRIVER:-}
  if [[ -z $driver ]]; then
    probe=$(mktemp -d "$ROOT/overlay-probe.XXXXXX")
    mkdir -p "$probe/lower" "$probe/upper" "$probe/work" "$probe/merged"
    if mount -t overlay overlay \
      -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" "$probe/merged" 2>/dev/null; then
      umount "$probe/merged"
      driver=overlay2
    else
      driver=vfs
      log "WARNING: overlayfs does not mount under $ROOT; falling back to vfs (every layer and container is a full copy: slow)"
    fi
    rm -rf "$probe"
  fi
  runtime_args=()
  if ! (echo -998 >/proc/self/oom_score_adj) 2>/dev/null; then
    # The kubelet asks for negative oom_score_adj values that this kernel refuses.
    install -m 0755 "$SCRIPT_DIR/runc-clamp" "$ROOT/runc-clamp"
    runtime_args=(--add-runtime "clamp=$ROOT/runc-clamp" --default-runtime=clamp)
    log "kernel refuses negative oom_score_adj: registering runc-clamp as default runtime"
  fi
  if [[ -S $SOCK ]]; then
    log "removing stale socket $SOCK (nothing answers on it)"
    rm -f "$SOCK"
  fi
  log "starting dockerd (storage driver $driver, data root $ROOT/data, log $LOGFILE)"
  setsid dockerd --host "unix://$SOCK" --data-root "$ROOT/data" --exec-root "$ROOT/exec" \
    --pidfile "$ROOT/dockerd.pid" --storage-driver "$driver" \
    --iptables=false --ip-masq=false --bridge=none "${runtime_args[@]}" \
    >>"$LOGFILE" 2>&1 </dev/null &
  echo $! >"$MARKER"
fi

T1=$SECONDS
until daemon_answers; do
  if ! pid_alive "$MARKER"; then
    show_log_tail "$LOGFILE"
    rm -f "$MARKER"
    die "dockerd exited during start-up (log: $LOGFILE)"
  fi
  if ((SECONDS - T1 >= 60)); then
    show_log_tail "$LOGFILE"
    die "dockerd did not answer on $SOCK within 60s (log: $LOGFILE)"
  fi
  sleep 0.2
done
log "dockerd answers on $SOCK after $((SECONDS - T1))s ($(docker -H "unix://$SOCK" info --format '{{.Driver}}, default runtime {{.DefaultRuntime}}'))"
echo "export DOCKER_HOST=unix://$SOCK"
