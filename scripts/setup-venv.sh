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

# The JupyterLab panel is built by the install when Node >= 20.19 is there; say so loudly
# when it was not (pip hides the builder's output in the log).
if [ ! -f jupyter_extension/nbflow_server/labextension/static/style.js ]; then
  found="no node on PATH"
  if command -v node >/dev/null 2>&1; then found="node $(node --version 2>/dev/null) at $(command -v node)"; fi
  {
    echo
    echo "!! WARNING: the nbflow JupyterLab panel was NOT built (found: $found; it needs Node >= 20.19)."
    echo "!!   nbflow, its magics, the CLI and the server work without it; only the side panel is missing."
    echo "!!   Install Node 20 (e.g. from nodejs.org or your distribution's nodejs 20 package), then"
    echo "!!   re-run this command, or: .venv/bin/pip install -e . (see docs/jupyterlab.md)."
    echo
  } >&2
fi

