#!/usr/bin/env bash
# Create benchmarks/.venv-prefect: the peer (Prefect 3) in its own venv, so its
# dependencies never mix with nbflow's.  Idempotent: re-running only re-checks the pins.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-prefect"
python="${PYTHON:-python3}"

# The versions peers.md was measured with.  fastapi is pinned because prefect 3.8.x
# resolves a fastapi whose temporary server fails to import ("min_items").
PREFECT_VERSION="${PREFECT_VERSION:-3.8.8}"
FASTAPI_VERSION="${FASTAPI_VERSION:-0.154.0}"

if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "prefect==$PREFECT_VERSION" "fastapi==$FASTAPI_VERSION"

mkdir -p "$venv/prefect-home"
export PREFECT_HOME="$venv/prefect-home" DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
"$venv/bin/python" -c "import prefect; print('prefect', prefect.__version__, 'ready in', '$venv')"
