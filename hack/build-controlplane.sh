#!/usr/bin/env bash
# Build the Kubernetes binaries of the local test bed from the pinned Go module in hack/controlplane
# into a cache outside the repo; do nothing when they are there. One `go build` compiles the control
# plane (kube-apiserver, kube-controller-manager) and the node (kubelet, kube-scheduler, kube-proxy):
# they share most packages. crictl (the node's clean teardown) comes from cri-tools.
# Prints the binary directory on stdout; progress goes to stderr every 30 s.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
K8S_VERSION="$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {sub(/^v/,"",$2); print $2; exit}' "$HERE/controlplane/go.mod")"
MINOR="$(echo "$K8S_VERSION" | cut -d. -f2)"
CRICTL_VERSION=v1.34.0
BIN="${SLIME_CONTROLPLANE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/slime/controlplane/v$K8S_VERSION}"
BINARIES=(kube-apiserver kube-controller-manager kubelet kube-scheduler kube-proxy crictl)
complete() { for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done; }
if complete; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "go is required to build the local control plane" >&2; exit 1; }
mkdir -p "$(dirname "$BIN")"
# One build at a time; a second caller waits and then finds the binaries.
exec 9>"$BIN.lock"
flock 9
if complete; then echo "$BIN"; exit 0; fi
TMP="$(mktemp -d "$BIN.tmp.XXXXXX")"
LOG="$TMP/build.log"
PROGRESS=""
trap '[[ -n "$PROGRESS" ]] && kill "$PROGRESS" 2>/dev/null; rm -rf "$TMP"' EXIT
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
LDF="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDF="$LDF -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$MINOR -X $pkg.gitTreeState=clean"
done
start=$(date +%s)
echo "building Kubernetes v$K8S_VERSION (${BINARIES[*]}) into $BIN; a first build takes 10-20 min on 2 cores" >&2
( while sleep 30; do
    echo "  ... still building: $(( $(date +%s) - start ))s, $(grep -c . "$LOG" 2>/dev/null || echo 0) packages compiled" >&2
  done ) &
PROGRESS=$!
if ! (cd "$HERE/controlplane" && go build -v -trimpath -ldflags "$LDF" -o "$TMP/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy) \
      >"$LOG" 2>&1; then
  grep -v '^[a-z0-9._/-]*$' "$LOG" >&2 || tail -20 "$LOG" >&2
  exit 1
fi
if ! GOBIN="$TMP" GOFLAGS= go install -trimpath -ldflags "-s -w" "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" \
      >>"$LOG" 2>&1; then
  tail -20 "$LOG" >&2
  exit 1
fi
rm -f "$LOG"
rm -rf "$BIN" && mv "$TMP" "$BIN"
echo "built Kubernetes v$K8S_VERSION in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
