#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager from the pinned Go module in
# hack/controlplane into a cache outside the repo; do nothing when they are there.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
K8S_VERSION="$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {sub(/^v/,"",$2); print $2; exit}' "$HERE/controlplane/go.mod")"
MINOR="$(echo "$K8S_VERSION" | cut -d. -f2)"
BIN="${SLIME_CONTROLPLANE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/slime/controlplane/v$K8S_VERSION}"
if [[ -x "$BIN/kube-apiserver" && -x "$BIN/kube-controller-manager" ]]; then
  echo "$BIN"; exit 0
fi
command -v go >/dev/null || { echo "go is required to build the local control plane" >&2; exit 1; }
mkdir -p "$(dirname "$BIN")"
# One build at a time; a second caller waits and then finds the binaries.
exec 9>"$BIN.lock"
flock 9
if [[ -x "$BIN/kube-apiserver" && -x "$BIN/kube-controller-manager" ]]; then
  echo "$BIN"; exit 0
fi
TMP="$(mktemp -d "$BIN.tmp.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
LDF="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDF="$LDF -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$MINOR -X $pkg.gitTreeState=clean"
done
start=$(date +%s)
(cd "$HERE/controlplane" && go build -trimpath -ldflags "$LDF" -o "$TMP/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager) >&2
rm -rf "$BIN" && mv "$TMP" "$BIN"
echo "built kubernetes v$K8S_VERSION control plane in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
