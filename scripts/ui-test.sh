#!/usr/bin/env bash
# Build the JupyterLab extension and run its tests: jest (model + API client against a real
# Jupyter server) and galata (Debian chromium against a real `jupyter lab` with the nbflow
# server extension and the subprocess runner).  Installs what is missing on a fresh Debian
# machine (chromium + fonts-liberation from apt, node modules with jlpm), keeps every write
# in a scratch dir instead of $HOME, and stops only what it started.
# Usage: scripts/ui-test.sh [playwright args...]     (UI_TEST_SKIP_GALATA=1: jest only)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if ! command -v node >/dev/null 2>&1; then
  echo "scripts/ui-test.sh: Node.js is not installed. The JupyterLab extension needs Node >= 20.19" >&2
  echo "  to build (e.g. 'apt-get install nodejs' on Debian trixie, or https://nodejs.org)." >&2
  exit 1
fi
node_ok=$(node -e 'const [a,b]=process.versions.node.split(".").map(Number);console.log(a>22||(a===22&&b>=12)||(a===20&&b>=19)?1:0)')
if [ "$node_ok" != 1 ]; then
  echo "scripts/ui-test.sh: Node $(node --version) is too old; @rspack/core needs ^20.19 or >=22.12." >&2
  exit 1
fi
[ -x .venv/bin/python ] || scripts/setup-venv.sh dev
export PATH="$root/.venv/bin:$PATH"
if ! command -v jlpm >/dev/null 2>&1; then
  echo "== installing jupyterlab into .venv (it provides jlpm)"
  .venv/bin/python -m pip install -q 'jupyterlab>=4.0,<5'
fi

chromium=${NBFLOW_CHROMIUM:-/usr/bin/chromium}
if [ -z "${UI_TEST_SKIP_GALATA:-}" ] && [ ! -x "$chromium" ]; then
  echo "== installing chromium and fonts-liberation from Debian"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium fonts-liberation >/dev/null
fi

# Keep Jupyter, IPython, yarn, chromium and nbflow state in a scratch dir, not in $HOME.
scratch="$root/.nbflow-test/ui"
rm -rf "$scratch"
mkdir -p "$scratch"/{runtime,data,config,settings,ipython,yarn,tmp,cache,xdgdata,root,browser,home}
export JUPYTER_RUNTIME_DIR="$scratch/runtime" JUPYTER_CONFIG_DIR="$scratch/config" \
  JUPYTERLAB_SETTINGS_DIR="$scratch/settings" IPYTHONDIR="$scratch/ipython" \
  YARN_GLOBAL_FOLDER="$scratch/yarn" TMPDIR="$scratch/tmp" XDG_CACHE_HOME="$scratch/cache" \
  XDG_DATA_HOME="$scratch/xdgdata" JUPYTERLAB_GALATA_ROOT_DIR="$scratch/root" \
  NBFLOW_HOME="$scratch/home" NBFLOW_BROWSER_CONFIG_HOME="$scratch/browser" \
  NBFLOW_CHROMIUM="$chromium" NBFLOW_CLI="$root/.venv/bin/nbflow" \
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 CI=1
# The venv's share/jupyter holds the labextension; keep it on the data path.
export JUPYTER_PATH="$root/.venv/share/jupyter"
unset NBFLOW_API_URL NBFLOW_API_TOKEN NBFLOW_DATABASE_URL
mkdir -p "$JUPYTERLAB_SETTINGS_DIR/@jupyterlab/apputils-extension"
echo '{"fetchNews": "false", "checkForUpdates": false}' \
  > "$JUPYTERLAB_SETTINGS_DIR/@jupyterlab/apputils-extension/notification.jupyterlab-settings"

echo "== labextension: jlpm install + build"
(cd labextension && jlpm install >"$scratch/jlpm-install.log" 2>&1 || { tail -30 "$scratch/jlpm-install.log"; exit 1; })
(cd labextension && jlpm build)
jupyter labextension develop --overwrite . >/dev/null 2>&1 || true
jupyter labextension list 2>&1 | grep -q "nbflow-labextension.*enabled" \
  || { echo "nbflow-labextension is not enabled in this JupyterLab" >&2; jupyter labextension list >&2; exit 1; }

echo "== jest (model + API client, real Jupyter server)"
(cd labextension && jlpm jest --ci)

if [ -n "${UI_TEST_SKIP_GALATA:-}" ]; then
  echo "== galata skipped (UI_TEST_SKIP_GALATA)"
  exit 0
fi
echo "== galata (chromium: $chromium)"
(cd labextension/ui-tests && jlpm install >"$scratch/jlpm-ui-install.log" 2>&1 || { tail -30 "$scratch/jlpm-ui-install.log"; exit 1; })
mkdir -p docs/screenshots
# Playwright starts `jupyter lab` (webServer) and stops it when the tests end.
(cd labextension/ui-tests && jlpm playwright test "$@")
