#!/usr/bin/env bash
# Build the images nbflow's Docker/Kubernetes tests use, with no registry.
#
#  1. nbflow-base:bookworm-py311 - Debian bookworm minbase + python3 + python3-venv, made by
#     mmdebstrap and `docker import` (skipped when the image exists);
#  2. nbflow:test - the project Dockerfile FROM that base (venv at /opt/venv, papermill,
#     ipykernel, nbclient, numpy, pandas, nbflow). Its dependency layer is cached, so a
#     rebuild after a code change takes seconds.
# The host's extra CA certificates (/usr/local/share/ca-certificates/*.crt) are copied into
# docker/ca-certificates/ so pip inside the build trusts a TLS-intercepting proxy.
# Uses $DOCKER_HOST like the docker CLI (see scripts/docker-up.sh).
# Environment: NBFLOW_BASE_IMAGE, NBFLOW_TEST_IMAGE override the two tags.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/infra-common.sh
source "$(dirname "$(readlink -f "$0")")/lib/infra-common.sh"
NBFLOW_LOG_TAG=docker-images

REPO=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
BASE_IMAGE=${NBFLOW_BASE_IMAGE:-nbflow-base:bookworm-py311}
TEST_IMAGE=${NBFLOW_TEST_IMAGE:-nbflow:test}
SUITE=bookworm
MIRROR=${NBFLOW_DEBIAN_MIRROR:-http://deb.debian.org/debian}

docker version >/dev/null 2>&1 || die "no Docker daemon answers (DOCKER_HOST=${DOCKER_HOST:-unset}); run scripts/docker-up.sh"

T0=$SECONDS
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "base image $BASE_IMAGE exists; skipping mmdebstrap"
else
  command -v mmdebstrap >/dev/null || apt_install_missing mmdebstrap
  hook=/usr/share/mmdebstrap/hooks/merged-usr
  [[ -d $hook ]] || die "mmdebstrap hook directory $hook missing; is mmdebstrap >= 1.0 installed?"
  work=$(mktemp -d /var/tmp/nbflow-base.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  log "building $BASE_IMAGE with mmdebstrap ($SUITE minbase + python3; log $work/mmdebstrap.log)"
  # merged-usr hook: without it mmdebstrap installs usrmerge, which pulls in perl.
  if ! mmdebstrap --variant=minbase \
    --include=python3,python3-venv,ca-certificates \
    --hook-dir="$hook" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --aptopt='Acquire::Retries "3"' \
    "$SUITE" "$work/rootfs.tar" "$MIRROR" >"$work/mmdebstrap.log" 2>&1; then
    show_log_tail "$work/mmdebstrap.log"
    die "mmdebstrap failed"
  fi
  docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
    "$work/rootfs.tar" "$BASE_IMAGE" >/dev/null
  rm -rf "$work"
  trap - EXIT
  log "base image $BASE_IMAGE ready after $((SECONDS - T0))s"
fi

# Trust the host's extra CAs inside the build (no-op on machines without any).
shopt -s nullglob
cas=(/usr/local/share/ca-certificates/*.crt)
shopt -u nullglob
for ca in "${cas[@]}"; do
  cmp -s "$ca" "$REPO/docker/ca-certificates/$(basename "$ca")" ||
    cp "$ca" "$REPO/docker/ca-certificates/"
done

T1=$SECONDS
log "building $TEST_IMAGE from $REPO/Dockerfile (BASE_IMAGE=$BASE_IMAGE)"
# --network host: the daemon runs with --bridge=none, so only host networking reaches PyPI.
DOCKER_BUILDKIT=0 docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  -t "$TEST_IMAGE" "$REPO" >&2
log "image $TEST_IMAGE ready after $((SECONDS - T1))s"
