# shellcheck shell=bash
# Shared helpers for nbflow's infrastructure scripts (docker-*.sh, k8s-*.sh).
# Source it; do not execute it.

log() { printf '[%s %s] %s\n' "$(date -u +%H:%M:%S)" "${NBFLOW_LOG_TAG:-infra}" "$*" >&2; }

die() {
  printf '[%s %s] ERROR: %s\n' "$(date -u +%H:%M:%S)" "${NBFLOW_LOG_TAG:-infra}" "$*" >&2
  exit 1
}

# Print the last lines of a log file to stderr (used in error paths).
show_log_tail() {
  local file=$1 lines=${2:-40}
  if [[ -f $file ]]; then
    printf -- '----- last %s lines of %s -----\n' "$lines" "$file" >&2
    tail -n "$lines" "$file" >&2
    printf -- '-----\n' >&2
  fi
}

# Wait until a command succeeds: wait_until SECONDS DESCRIPTION LOGFILE CMD...
# On timeout print the tail of LOGFILE (may be empty string) and exit 1.
wait_until() {
  local timeout=$1 what=$2 logfile=$3
  shift 3
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - start >= timeout)); then
      [[ -n $logfile ]] && show_log_tail "$logfile"
      die "timed out after ${timeout}s waiting for $what"
    fi
    sleep 0.5
  done
  log "$what: ok after $((SECONDS - start))s"
}

# True when the pid in the pidfile is alive.
pid_alive() {
  local pidfile=$1 pid
  [[ -f $pidfile ]] || return 1
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

# Stop the process recorded in PIDFILE: SIGTERM, wait up to GRACE seconds, then SIGKILL.
stop_pidfile() {
  local pidfile=$1 name=$2 grace=${3:-15} pid i
  if ! pid_alive "$pidfile"; then
    rm -f "$pidfile"
    return 0
  fi
  pid=$(cat "$pidfile")
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name did not exit after ${grace}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$pidfile"
}

# Install the Debian packages that are missing (dpkg -s fails), with one apt-get update.
apt_install_missing() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ $(id -u) == 0 ]] || die "missing packages ${missing[*]} and not root; install them and rerun"
  log "installing ${missing[*]}"
  # Our scripts may run in parallel (k8s-up.sh --build-only & docker-up.sh): serialize their
  # apt calls with flock, and wait for anyone else's dpkg lock instead of failing.
  local apt=(apt-get -o DPkg::Lock::Timeout=300 -qq)
  (
    flock -w 600 9 || die "waited 600s for /var/lock/nbflow-apt.lock"
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" update >&2
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >&2
  ) 9>/var/lock/nbflow-apt.lock
}
