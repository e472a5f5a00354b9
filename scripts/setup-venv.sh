#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with nbflow and its extras.
# Usage: scripts/setup-venv.sh [EXTRAS]   (default extras: dev)
# Re-running is cheap: pip only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "nbflow needs Python >= 3.11; '$python' is $("$python" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $("$python" --version)"
  "$python" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=.venv/.nbflow-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$(cat "$stamp")" != "$extras" ]; then
  echo "== installing nbflow[$extras] into .venv (log: .venv/pip-install.log)"
  if ! .venv/bin/python -m pip install -e ".[$extras]" > .venv/pip-install.log 2>&1; then
    tail -n 30 .venv/pip-install.log >&2
    echo "pip install failed; the whole log is .venv/pip-install.log" >&2
    exit 1
  fi
  echo "$extras" > "$stamp"
fi
