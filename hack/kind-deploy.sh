#!/usr/bin/env bash
# `make kind-deploy`: slime on a local kind cluster, installed as users install it (needs Docker and
# kind; CI has neither). Steps: kind cluster, Istio, the image built and loaded, the slime-boot chart
# installed with Helm, two SlimeBoot samples applied, their Deployments rolled out.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER="${KIND_CLUSTER:-slime}"
IMAGE_REPO="${IMAGE_REPO:-slime}"
IMAGE_TAG="${IMAGE_TAG:-dev}"
ENVOY_IMAGE="${ENVOY_IMAGE:-envoyproxy/envoy:v1.40.0}"
need() { command -v "$1" >/dev/null || { echo "kind-deploy needs $1: $2" >&2; exit 1; }; }
need docker "install Docker"
need kind "install kind (a single Go binary)"
need kubectl "install kubectl"
TOOLS="$(hack/build-istio.sh)"   # helm (and istioctl), built once into ~/.cache/slime/istio
HELM="$TOOLS/helm"
if command -v istioctl >/dev/null; then ISTIOCTL=istioctl; ISTIO_ARGS=()
else
  ISTIOCTL="$TOOLS/istioctl"
  [[ -n "${ISTIO_TAG:-}" ]] || { echo "no istioctl on the PATH: set ISTIO_TAG to a released Istio version" >&2; exit 1; }
  ISTIO_ARGS=(--set "tag=$ISTIO_TAG")
fi
step() { echo "==> $*"; }

step "kind cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
export KUBECONFIG="${KUBECONFIG:-$HOME/.kube/config}"
kubectl config use-context "kind-$CLUSTER" >/dev/null

step "Istio (minimal profile: istiod)"
"$ISTIOCTL" install -y --set profile=minimal "${ISTIO_ARGS[@]}"

step "image $IMAGE_REPO:$IMAGE_TAG (and $ENVOY_IMAGE for the global-sidecar) into the cluster"
docker build -t "$IMAGE_REPO:$IMAGE_TAG" .
docker image inspect "$ENVOY_IMAGE" >/dev/null 2>&1 || docker pull "$ENVOY_IMAGE"
kind load docker-image --name "$CLUSTER" "$IMAGE_REPO:$IMAGE_TAG" "$ENVOY_IMAGE"

step "helm install slime-boot"
kubectl apply --server-side --force-conflicts -f charts/slime-boot/crds/ >/dev/null   # Helm never upgrades CRDs
"$HELM" upgrade --install slime-boot charts/slime-boot -n mesh-operator --create-namespace \
  --set image.repository="$IMAGE_REPO" --set image.tag="$IMAGE_TAG" --set modules.envoyImage="$ENVOY_IMAGE" \
  --wait --timeout 3m

step "SlimeBoot samples (limiter, lazyload with its global-sidecar)"
kubectl apply -f samples/boot/00-namespace.yaml -f samples/boot/limiter.yaml -f samples/boot/lazyload.yaml
for d in limiter lazyload global-sidecar; do
  kubectl -n slime-samples wait --for=create "deployment/$d" --timeout=60s >/dev/null
  kubectl -n slime-samples rollout status "deployment/$d" --timeout=3m
done
kubectl get slimeboot -A
echo "done: kubectl --context kind-$CLUSTER get slime -A; remove with: kind delete cluster --name $CLUSTER"
