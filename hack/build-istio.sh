#!/usr/bin/env bash
# Build istiod (pilot-discovery) and istioctl from the pinned istio.io/istio module, and Helm from
# helm.sh/helm/v3, into a cache outside the repo; do nothing when they are there. Prints the binary
# directory on stdout; progress goes to stderr every 30 s.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck disable=SC1091
source "$HERE/versions.env"
BIN="${SLIME_ISTIO_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/slime/istio/$ISTIO_VERSION}"
BINARIES=(pilot-discovery istioctl helm)
complete() { for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done; }
if complete; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "go is required to build istiod, istioctl and helm" >&2; exit 1; }
mkdir -p "$(dirname "$BIN")"
exec 9>"$BIN.lock"
flock 9
if complete; then echo "$BIN"; exit 0; fi
TMP="$(mktemp -d "$BIN.tmp.XXXXXX")"
LOG="$TMP/build.log"
PROGRESS=""
trap '[[ -n "$PROGRESS" ]] && kill "$PROGRESS" 2>/dev/null; rm -rf "$TMP"' EXIT
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=
start=$(date +%s)
echo "building istiod + istioctl ($ISTIO_VERSION) and helm $HELM_VERSION into $BIN; a first build takes ~15 min on 2 cores" >&2
( while sleep 30; do
    echo "  ... still building: $(( $(date +%s) - start ))s, $(grep -c . "$LOG" 2>/dev/null || echo 0) packages compiled" >&2
  done ) &
PROGRESS=$!
short="${ISTIO_VERSION##*-}"; short="${short:0:7}"
# Outside any module: `go install pkg@version` needs no wrapper (istio's go.mod has no replace).
if ! (cd "$TMP" && GOBIN="$TMP" go install -v -trimpath -tags vtprotobuf,disable_pgv \
      -ldflags "-s -w -X istio.io/istio/pkg/version.buildVersion=$ISTIO_LINE-dev-$short -X istio.io/istio/pkg/version.buildTag=$ISTIO_LINE-dev" \
      "istio.io/istio/pilot/cmd/pilot-discovery@$ISTIO_VERSION" "istio.io/istio/istioctl/cmd/istioctl@$ISTIO_VERSION") \
      >"$LOG" 2>&1; then
  grep -v '^[a-z0-9._/-]*$' "$LOG" >&2 || tail -20 "$LOG" >&2
  exit 1
fi
HELM_LDF="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
HELM_LDF="$HELM_LDF -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=34"
HELM_LDF="$HELM_LDF -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=34"
if ! (cd "$TMP" && GOBIN="$TMP" go install -v -trimpath -ldflags "$HELM_LDF" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION") \
      >>"$LOG" 2>&1; then
  grep -v '^[a-z0-9._/-]*$' "$LOG" >&2 || tail -20 "$LOG" >&2
  exit 1
fi
rm -f "$LOG"
rm -rf "$BIN" && mv "$TMP" "$BIN"
echo "built istiod, istioctl and helm in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
