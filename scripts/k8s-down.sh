#!/usr/bin/env bash
# Stop the single-node cluster that scripts/k8s-up.sh started, and nothing else.
#
# Stops the processes recorded in $NBFLOW_K8S_STATE/run/*.pid (kubelet first), removes the
# Docker containers of the pods that this kubelet ran (matched by pod UID from its root dir)
# and unmounts what the kubelet left mounted under the state dir. The cached binaries stay.
# `--purge` also deletes the state dir (certificates, kubeconfig, logs).
# Usage: scripts/k8s-down.sh [--purge]
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/infra-common.sh
source "$(dirname "$(readlink -f "$0")")/lib/infra-common.sh"
NBFLOW_LOG_TAG=k8s-down

STATE_DIR=${NBFLOW_K8S_STATE:-/var/tmp/nbflow-k8s}
DOCKER_SOCK=${NBFLOW_K8S_DOCKER_SOCK:-/var/run/docker.sock}
RUN=$STATE_DIR/run
PURGE=0
case ${1:-} in
  --purge) PURGE=1 ;;
  "") ;;
  *) die "unknown argument '$1'; usage: $0 [--purge]" ;;
esac

if [[ ! -d $STATE_DIR ]]; then
  log "no state dir $STATE_DIR; nothing to stop"
  exit 0
fi

stop_pidfile "$RUN/kubelet.pid" kubelet 20

# The pods' containers outlive the kubelet. Remove those this kubelet made: the sandboxes
# dockershim checkpointed in its root dir (plus their app containers) and the containers of
# the pods still in the kubelet's root dir. Containers of other kubelets are not touched.
remove_containers() {
  local ids
  ids=$(docker -H "unix://$DOCKER_SOCK" ps -aq "$@")
  [[ -z $ids ]] && return 0
  # shellcheck disable=SC2086
  docker -H "unix://$DOCKER_SOCK" rm -f $ids >/dev/null || true
}
if docker -H "unix://$DOCKER_SOCK" version >/dev/null 2>&1; then
  n=0
  for f in "$STATE_DIR"/dockershim/sandbox/*; do
    [[ -f $f ]] || continue
    sid=$(basename "$f")
    remove_containers --filter "label=io.kubernetes.sandbox.id=$sid"
    remove_containers --filter "id=$sid"
    rm -f "$f"
    n=$((n + 1))
  done
  for poddir in "$STATE_DIR"/kubelet/pods/*/; do
    [[ -d $poddir ]] || continue
    remove_containers --filter "label=io.kubernetes.pod.uid=$(basename "$poddir")"
    n=$((n + 1))
  done
  ((n == 0)) || log "removed the containers of $n pod sandboxes/pods"
elif compgen -G "$STATE_DIR/dockershim/sandbox/*" >/dev/null; then
  log "WARNING: no Docker daemon answers on $DOCKER_SOCK; pod containers were not removed" \
    "(run this script again while the daemon runs)"
fi

for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do
  stop_pidfile "$RUN/$name.pid" "$name" 20
done

awk -v root="$STATE_DIR/" 'index($2, root) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
  log "unmounting $m"
  umount "$m" 2>/dev/null || umount -l "$m" || true
done

if ((PURGE)); then
  log "deleting $STATE_DIR"
  rm -rf "$STATE_DIR"
fi
log "done"
