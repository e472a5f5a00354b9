#!/usr/bin/env bash
# Start a real single-node Kubernetes 1.20.2 cluster on loopback for nbflow tests.
#
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl from
# Debian's `kubernetes` source package (cached in $NBFLOW_K8S_CACHE, keyed by version), then
# starts etcd + the control plane + a kubelet driving the Docker daemon on
# /var/run/docker.sock (start it with scripts/docker-up.sh first). Everything it starts is
# recorded in pidfiles under $NBFLOW_K8S_STATE so scripts/k8s-down.sh stops only that.
#
# Usage: scripts/k8s-up.sh [--build-only]
# Last line of stdout: export KUBECONFIG=...   (eval "$(scripts/k8s-up.sh | tail -n1)")
# See docs/infrastructure.md.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/infra-common.sh
source "$(dirname "$(readlink -f "$0")")/lib/infra-common.sh"
NBFLOW_LOG_TAG=k8s-up

K8S_VERSION=1.20.2
DEB_SRC_VERSION=1.20.5+really1.20.2
CACHE_DIR=${NBFLOW_K8S_CACHE:-/var/cache/nbflow-k8s}
BIN_DIR=$CACHE_DIR/bin-$K8S_VERSION
STATE_DIR=${NBFLOW_K8S_STATE:-/var/tmp/nbflow-k8s}
DOCKER_SOCK=${NBFLOW_K8S_DOCKER_SOCK:-/var/run/docker.sock}
PAUSE_IMAGE=k8s.gcr.io/pause:3.2
NAMESPACE=${NBFLOW_K8S_NAMESPACE:-nbflow-test}
ETCD_CLIENT_PORT=23790
ETCD_PEER_PORT=23800
API_PORT=6443
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

BUILD_ONLY=0
case ${1:-} in
  --build-only) BUILD_ONLY=1 ;;
  "") ;;
  *) die "unknown argument '$1'; usage: $0 [--build-only]" ;;
esac
[[ $(id -u) == 0 ]] || die "must run as root (starts a kubelet and writes to $CACHE_DIR)"

# ---------------------------------------------------------------------------------------
# Build (skipped when $BIN_DIR is complete)
# ---------------------------------------------------------------------------------------
binaries_cached() {
  local b
  for b in "${BINARIES[@]}" pause; do
    [[ -x $BIN_DIR/$b ]] || return 1
  done
}

build_binaries() {
  local t0=$SECONDS build_root=$CACHE_DIR/build aptsrc=$CACHE_DIR/aptsrc
  apt_install_missing golang-go golang-github-modern-go-reflect2-dev rsync gcc libc6-dev make
  mkdir -p "$aptsrc/lists/partial" "$aptsrc/cache/archives/partial" "$build_root"
  # A private sources list: /etc/apt is left untouched.
  printf '%s\n' \
    'deb-src http://deb.debian.org/debian bookworm main' \
    'deb-src http://deb.debian.org/debian bookworm-updates main' \
    'deb-src http://deb.debian.org/debian-security bookworm-security main' \
    >"$aptsrc/sources.list"
  local apto=(-o "Dir::Etc::SourceList=$aptsrc/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$aptsrc/lists" -o "Dir::Cache=$aptsrc/cache")
  local orig=kubernetes_${DEB_SRC_VERSION}.orig.tar.gz
  if [[ ! -s $build_root/$orig ]]; then
    log "downloading Debian source package kubernetes $DEB_SRC_VERSION"
    apt-get "${apto[@]}" update -qq >&2
    (cd "$build_root" && apt-get "${apto[@]}" source --download-only kubernetes >&2)
  fi
  local src=$build_root/kubernetes-$K8S_VERSION
  rm -rf "$src"
  log "extracting $orig"
  tar -C "$build_root" -xzf "$build_root/$orig"
  [[ -d $src ]] || die "expected $src after extracting $orig"
  # Vendored reflect2 1.0.1 breaks at run time on Go >= 1.18; use Debian's 1.0.2.
  local r=$src/vendor/github.com/modern-go/reflect2
  rm -rf "$r" && mkdir -p "$r"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2/. "$r/"
  rm -f "$r/go.mod" "$r/go.sum"

  # hack/lib/golang.sh forces GOCACHE=_output/local/go/cache: point it at the persistent cache.
  mkdir -p "$CACHE_DIR/gocache" "$src/_output/local/go"
  ln -sfn "$CACHE_DIR/gocache" "$src/_output/local/go/cache"

  local what=() b
  for b in "${BINARIES[@]}"; do what+=("cmd/$b"); done
  log "building ${BINARIES[*]} (cold: ~10 min on 2 cores; log: $build_root/make.log)"
  if ! (cd "$src" && KUBE_GIT_VERSION=v$K8S_VERSION KUBE_GIT_TREE_STATE=clean \
    KUBE_BUILD_PLATFORMS=linux/amd64 CGO_ENABLED=0 \
    make WHAT="${what[*]}" GOFLAGS= >"$build_root/make.log" 2>&1); then
    show_log_tail "$build_root/make.log" 60
    die "make failed (full log: $build_root/make.log)"
  fi
  log "make finished after $((SECONDS - t0))s"

  local tmp=$BIN_DIR.tmp.$$
  rm -rf "$tmp" && mkdir -p "$tmp"
  for b in "${BINARIES[@]}"; do
    cp "$src/_output/bin/$b" "$tmp/$b"
  done
  # The sandbox ("pause") container, built statically so it runs in an empty image.
  gcc -Os -static -o "$tmp/pause" "$src/build/pause/linux/pause.c"
  rm -rf "$BIN_DIR" && mv "$tmp" "$BIN_DIR"
  # The build tree is ~2 GB; the Go cache ($CACHE_DIR/gocache, via the symlink) stays.
  rm -rf "$src"
  log "binaries cached in $BIN_DIR after $((SECONDS - t0))s"
}

if binaries_cached; then
  log "using cached binaries in $BIN_DIR"
else
  build_binaries
fi
((BUILD_ONLY)) && exit 0

# ---------------------------------------------------------------------------------------
# Start
# ---------------------------------------------------------------------------------------
T_START=$SECONDS
apt_install_missing etcd-server openssl curl
command -v etcd >/dev/null || die "etcd not found after installing etcd-server"
KUBECTL=$BIN_DIR/kubectl
mkdir -p "$STATE_DIR"
RUN=$STATE_DIR/run
LOGS=$STATE_DIR/logs
PKI=$STATE_DIR/pki
KUBECONFIG_FILE=$STATE_DIR/admin.kubeconfig
mkdir -p "$RUN" "$LOGS" "$PKI"

# The kubelet uses dockershim: it needs the daemon on $DOCKER_SOCK.
docker -H "unix://$DOCKER_SOCK" version >/dev/null 2>&1 ||
  die "no Docker daemon answers on $DOCKER_SOCK; run scripts/docker-up.sh first"
if ! (echo -998 >/proc/self/oom_score_adj) 2>/dev/null; then
  rt=$(docker -H "unix://$DOCKER_SOCK" info --format '{{.DefaultRuntime}}' 2>/dev/null || true)
  [[ $rt == clamp ]] || die "this kernel refuses negative oom_score_adj and the Docker daemon's" \
    "default runtime is '$rt', not 'clamp'; pod sandboxes would fail. Start the daemon with" \
    "scripts/docker-up.sh (registers scripts/runc-clamp as default runtime)"
fi

# Pause image from the static binary, no registry.
if ! docker -H "unix://$DOCKER_SOCK" image inspect "$PAUSE_IMAGE" >/dev/null 2>&1; then
  log "importing $PAUSE_IMAGE"
  tmpd=$(mktemp -d)
  cp "$BIN_DIR/pause" "$tmpd/pause"
  tar -C "$tmpd" -c . | docker -H "unix://$DOCKER_SOCK" import \
    --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >/dev/null
  rm -rf "$tmpd"
fi

# Credentials (made once per state dir): a CA, the apiserver's serving cert (127.0.0.1,
# localhost), the service-account key pair and a random admin bearer token.
if [[ ! -s $PKI/apiserver.crt ]]; then
  log "creating certificates and tokens in $PKI"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj '/CN=nbflow-test-ca' \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj '/CN=kube-apiserver' \
    -keyout "$PKI/apiserver.key" -out "$PKI/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc,IP:10.96.0.1\n' \
    >"$PKI/apiserver.ext"
  openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 3650 -extfile "$PKI/apiserver.ext" -out "$PKI/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  printf '%s,admin,admin-uid,system:masters\n' "$(openssl rand -hex 24)" >"$PKI/tokens.csv"
  chmod 600 "$PKI"/*.key "$PKI/tokens.csv"
fi
TOKEN=$(cut -d, -f1 "$PKI/tokens.csv")
cat >"$KUBECONFIG_FILE" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: nbflow-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: nbflow-test
  context:
    cluster: nbflow-test
    user: admin
    namespace: $NAMESPACE
current-context: nbflow-test
KCFG
chmod 600 "$KUBECONFIG_FILE"
kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# start_component NAME CMD...: run in the background with its own log and pidfile
# (no-op when that pidfile's process is alive).
start_component() {
  local name=$1
  shift
  if pid_alive "$RUN/$name.pid"; then
    log "$name already running (pid $(cat "$RUN/$name.pid"))"
    return 0
  fi
  log "starting $name (log: $LOGS/$name.log)"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

# Fail early with the log tail if a just-started component exits.
check_alive() {
  local name=$1
  pid_alive "$RUN/$name.pid" && return 0
  show_log_tail "$LOGS/$name.log"
  die "$name exited right after start (log: $LOGS/$name.log)"
}

# A fresh cluster each time nothing runs: old etcd data would bring back old Jobs.
if ! pid_alive "$RUN/etcd.pid"; then
  rm -rf "$STATE_DIR/etcd-data"
fi
start_component etcd etcd --name node0 --data-dir "$STATE_DIR/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "node0=http://127.0.0.1:$ETCD_PEER_PORT"
sleep 0.5
check_alive etcd
wait_until 30 "etcd health" "$LOGS/etcd.log" \
  curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

start_component kube-apiserver "$BIN_DIR/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --bind-address=127.0.0.1 --secure-port="$API_PORT" --advertise-address=127.0.0.1 \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --authorization-mode=Node,RBAC --token-auth-file="$PKI/tokens.csv" \
  --disable-admission-plugins=ServiceAccount \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc \
  --api-audiences=https://kubernetes.default.svc \
  --service-cluster-ip-range=10.96.0.0/24 --endpoint-reconciler-type=none \
  --kubelet-preferred-address-types=Hostname,InternalIP --feature-gates=TTLAfterFinished=true
sleep 1
check_alive kube-apiserver
wait_until 90 "kube-apiserver /readyz" "$LOGS/kube-apiserver.log" \
  curl -fsS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN" \
  "https://127.0.0.1:$API_PORT/readyz"

start_component kube-controller-manager "$BIN_DIR/kube-controller-manager" \
  --kubeconfig="$KUBECONFIG_FILE" --leader-elect=false --port=0 --secure-port=0 \
  --controllers=job,garbagecollector,podgc,namespace,serviceaccount,serviceaccount-token,ttl-after-finished \
  --feature-gates=TTLAfterFinished=true \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt"
start_component kube-scheduler "$BIN_DIR/kube-scheduler" \
  --kubeconfig="$KUBECONFIG_FILE" --leader-elect=false --port=0 --secure-port=0
start_component kubelet "$BIN_DIR/kubelet" \
  --kubeconfig="$KUBECONFIG_FILE" --container-runtime=docker \
  --docker-endpoint="unix://$DOCKER_SOCK" --pod-infra-container-image="$PAUSE_IMAGE" \
  --cgroups-per-qos=false --enforce-node-allocatable= --fail-swap-on=false \
  --root-dir="$STATE_DIR/kubelet" --cert-dir="$STATE_DIR/kubelet/pki" \
  --experimental-dockershim-root-directory="$STATE_DIR/dockershim" \
  --hostname-override=localhost --address=127.0.0.1 --port=10250 --read-only-port=0 \
  --healthz-port=0 --anonymous-auth=true --authorization-mode=AlwaysAllow \
  --cgroup-driver=cgroupfs --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
  --eviction-hard= --serialize-image-pulls=false
sleep 1
for c in kube-controller-manager kube-scheduler kubelet; do check_alive "$c"; done

wait_until 90 "node 'localhost' registered" "$LOGS/kubelet.log" kc get node localhost
wait_until 120 "node 'localhost' Ready" "$LOGS/kubelet.log" \
  kc wait --for=condition=Ready node/localhost --timeout=5s
# Nothing (no nodelifecycle controller) would lift the registration taint.
kc taint node localhost node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
kc get namespace "$NAMESPACE" >/dev/null 2>&1 || kc create namespace "$NAMESPACE" >/dev/null
log "cluster ready after $((SECONDS - T_START))s (namespace $NAMESPACE; logs in $LOGS)"
echo "export KUBECONFIG=$KUBECONFIG_FILE"
