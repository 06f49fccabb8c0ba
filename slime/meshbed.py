"""The real mesh test bed: a dev cluster with a node, istiod, Envoy sidecars and the operator in a Pod.

::

    with MeshBed() as bed:                       # ~30 s warm; builds what is missing first
        app = bed.deploy_app("reviews", "demo")  # Deployment + Service; each Pod has a sidecar
        client = bed.client("demo")              # a Pod without sidecar to send requests from
        bed.apply([smart_limiter])               # the in-cluster operator writes EnvoyFilters
        proxy = bed.proxy(app.pods[0])           # istiod's and Envoy's view of that sidecar
        proxy.wait_accepted(applied=lambda dump: ...)
        bed.http_get(client, app.url, count=10)  # {"codes": [200, ..., 429], "bodies": [...]}

What runs (all on this machine; nothing listens beyond 127.0.0.1 and the private bridge):

* :class:`slime.devcluster.DevCluster` with its apiserver on the node address (Pods reach it
  through the ``kubernetes`` Service), ServiceAccount tokens, and the nodelifecycle controller;
* :class:`slime.devtools.node.Node`: containerd, kubelet, kube-scheduler, kube-proxy;
* :class:`slime.devtools.istiod.Istiod`: xDS on the node address, its validating webhook;
* :class:`slime.devtools.clusterdns.ClusterDNS`: Service names resolve in Pods (and nothing else);
* images from :mod:`slime.devtools.images` (slime's own Dockerfile, test app, proxy, pause);
* a Prometheus on the node address scraping an :class:`~slime.devtools.prometheus.Exporter` (whose
  values tests move) and the operator's ``/metrics`` (through the Service ``slime-metrics``);
* the operator from ``deploy/slime.yaml`` (its ServiceAccount, RBAC, probes), limiter config
  pointing at that Prometheus, refresh 1 s; lazyload with its fallback route on port
  :data:`LAZYLOAD_PORT` only (the other tests' apps listen on 8080 and never see it), auto-fence for
  Services and namespaces labelled ``slime.io/serviceFenced: "true"`` (no default fence), learned
  dependencies forgotten after :data:`LAZYLOAD_TTL`, and the global-sidecar running the bed's proxy
  image (its plain Envoy, streaming its access log to the operator's Service ``lazyload``).

Stopping (also on an exception in start) undoes everything, host changes included.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from slime.devcluster import KCM_CONTROLLERS, REPO_ROOT, DevCluster, find_controlplane_bin, istio_crds
from slime.devtools import images as bed_images
from slime.devtools import workloads
from slime.devtools.clusterdns import ClusterDNS
from slime.devtools.hostnet import NODE_IP
from slime.devtools.istiod import Istiod, find_istio_bin
from slime.devtools.meshops import App, MeshBedError, MeshOps, PodRef
from slime.devtools.node import Node
from slime.devtools.prometheus import Exporter, run_prometheus

__all__ = ["App", "LAZYLOAD_PORT", "LAZYLOAD_TTL", "MeshBed", "MeshBedError", "PodRef", "OPERATOR_METRICS_IP",
           "default_crds"]

log = logging.getLogger(__name__)

DEPLOY_MANIFEST = REPO_ROOT / "deploy" / "slime.yaml"
OPERATOR_METRICS_IP = "10.0.0.10"  # in the static band of the Service CIDR: never taken by another Service
CPU_QUERY = 'sum(container_cpu_usage_seconds_total{namespace="$namespace",pod=~"$pod_name"})'
LAZYLOAD_PORT = 9080  # the wormhole port of the bed's lazyload config
LAZYLOAD_TTL = 15  # seconds: dependencyTTL of the bed's lazyload config


def default_crds() -> list[Path]:
    ours = {*REPO_ROOT.glob("crds/*.yaml"), *REPO_ROOT.glob("slime/crds/*.yaml")}
    return [*sorted(ours), istio_crds()]


def lazyload_general(proxy_image: str, ttl: float = LAZYLOAD_TTL) -> dict[str, Any]:
    """The bed's lazyload ``general`` config (the global-sidecar is the proxy image's plain Envoy)."""
    return {"wormholePort": [str(LAZYLOAD_PORT)], "autoFence": True, "defaultFence": False,
            "learnInterval": "1s", "dependencyTTL": f"{ttl:g}s", "expireWait": "1s",
            "globalSidecar": {"image": proxy_image}}


class MeshBed(MeshOps):
    """See the module doc. Attributes once started: ``cluster``, ``node``, ``istiod``, ``images``,
    ``exporter``, ``prometheus_url``, ``timings``; properties ``kubeconfig``, ``node_ip``,
    ``xds_address``."""

    def __init__(self, *, operator: bool = True, operator_replicas: int = 1,
                 operator_config: list[dict[str, Any]] | None = None, prometheus: bool = True,
                 crd_paths: Iterable[Path] | None = None, timeout: float = 120.0) -> None:
        self.want_operator = operator
        self.operator_replicas = operator_replicas
        self._operator_config = operator_config
        self.want_prometheus = prometheus or operator
        self.crd_paths = list(crd_paths) if crd_paths is not None else None
        self.timeout = timeout
        self.timings: dict[str, float] = {}
        self.prometheus_url = ""
        self.exporter: Exporter | None = None
        self._stack = contextlib.ExitStack()
        self._api: Any = None
        self.cluster: DevCluster | None = None
        self.node: Node | None = None
        self.istiod: Istiod | None = None
        self.images: bed_images.BedImages | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> MeshBed:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything: the node first (its Pods, kubelet, and the host changes), then the rest
        in reverse start order (istiod, the cluster, Prometheus)."""
        self._stop_node()
        self._stack.close()
        atexit.unregister(self.stop)

    def _start(self) -> None:
        t0 = t = time.monotonic()
        cp_bin = find_controlplane_bin()
        istio_bin = find_istio_bin()
        self.images = bed_images.build_images()
        self.timings["builds (cached: hashing)"] = time.monotonic() - t
        crds = self.crd_paths if self.crd_paths is not None else default_crds()

        t = time.monotonic()
        self.node = Node(cp_bin, [(i.name, i.archive) for i in self.images.all()], self.images.pause.name)
        self._stack.callback(self._stop_node)
        self.node.start_runtime()  # host network + containerd; images import in the background
        if self.want_prometheus:
            self.exporter = self._stack.enter_context(Exporter())
            targets = [self.exporter.target] + ([f"{OPERATOR_METRICS_IP}:9090"] if self.want_operator else [])
            self.prometheus_url = self._stack.enter_context(
                run_prometheus(targets, wait_for_samples=False, host=NODE_IP))
        self.timings["node runtime + prometheus"] = time.monotonic() - t

        t = time.monotonic()
        cluster = DevCluster(crds, bind_address=NODE_IP, service_account_admission=True,
                             controllers=KCM_CONTROLLERS + ",nodelifecycle", timeout=self.timeout)
        self._stack.callback(cluster.stop)
        cluster.start()
        self.cluster = cluster
        self._stack.enter_context(ClusterDNS(NODE_IP, self._service_lookup()))
        self.timings["cluster"] = time.monotonic() - t

        t = time.monotonic()
        istiod = Istiod(cluster.kubeconfig, istio_bin, xds_host=NODE_IP, timeout=self.timeout)
        self._stack.callback(istiod.stop)
        istiod.start()
        self.istiod = istiod
        self.node.join(cluster.kubeconfig, cluster.ca_file)
        self.timings["node ready"] = time.monotonic() - t
        istiod.wait_ready()
        self.timings["istiod ready"] = time.monotonic() - t

        if self.want_operator:
            t = time.monotonic()
            self.deploy_operator()
            self.timings["operator ready"] = time.monotonic() - t
        self.timings["total"] = time.monotonic() - t0

    def _service_lookup(self) -> Any:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        self._stack.callback(api.close)
        core: Any = client.CoreV1Api(api)

        def lookup(name: str, namespace: str) -> str | None:
            from kubernetes.client.exceptions import ApiException

            try:
                ip = core.read_namespaced_service(name, namespace, _request_timeout=2).spec.cluster_ip
            except ApiException as e:
                if e.status == 404:
                    return None
                raise
            return ip if ip and ip != "None" else None

        return lookup

    def _stop_node(self) -> None:
        node, self.node = self.node, None
        if node is not None:
            problems = node.stop()
            if problems:
                log.warning("node teardown problems: %s", "; ".join(problems))

    # -- properties ----------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self._cluster.kubeconfig

    @property
    def node_ip(self) -> str:
        return NODE_IP

    @property
    def xds_address(self) -> str:
        return self._istiod.xds_address

    @property
    def _cluster(self) -> DevCluster:
        if self.cluster is None:
            raise MeshBedError("bed not started")
        return self.cluster

    @property
    def _istiod(self) -> Istiod:
        if self.istiod is None:
            raise MeshBedError("bed not started")
        return self.istiod

    @property
    def _images(self) -> bed_images.BedImages:
        if self.images is None:
            raise MeshBedError("bed not started")
        return self.images

    @property
    def api(self) -> Any:
        """A kubernetes ``ApiClient`` (admin) for this cluster."""
        if self._api is None:
            from kubernetes import config

            self._api = config.new_client_from_config(config_file=str(self.kubeconfig))
            self._stack.callback(self._api.close)
        return self._api

    # -- the operator --------------------------------------------------------------------------

    def operator_config(self) -> list[dict[str, Any]]:
        """deploy/slime.yaml's module config, with the limiter reading the bed's Prometheus and
        lazyload's fallback route and learning set for the bed (see the module doc)."""
        if self._operator_config is not None:
            return self._operator_config
        config = workloads.shipped_operator_config(DEPLOY_MANIFEST)
        for module in config:
            if module.get("kind") == "limiter":
                module.setdefault("general", {})["refresh"] = "1s"
                module["metric"] = {"prometheus": {"address": self.prometheus_url,
                                                   "handlers": {"cpu.sum": {"query": CPU_QUERY}}}}
            if module.get("kind") == "lazyload":
                module.setdefault("general", {}).update(lazyload_general(self._images.proxy.name))
        return config

    def deploy_operator(self) -> list[PodRef]:
        """Apply deploy/slime.yaml (the bed's image and config) and wait for its Pods to be Ready."""
        objects = workloads.operator_objects(DEPLOY_MANIFEST, image=self._images.slime.name,
                                             config=self.operator_config(), replicas=self.operator_replicas,
                                             metrics_cluster_ip=OPERATOR_METRICS_IP)
        self.apply(objects)
        return self.wait_pods("mesh-operator", "app.kubernetes.io/name=slime", self.operator_replicas)

    # -- costs ---------------------------------------------------------------------------------

    def rss_bytes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.cluster is not None:
            out.update(self.cluster.rss_bytes())
        if self.node is not None:
            out.update(self.node.rss_bytes())
        if self.istiod is not None:
            out["istiod"] = self.istiod.rss_bytes()
        if self.node is not None:
            for name, values in sorted(self.node.pod_rss_bytes().items()):
                out[f"pods: {name} (avg of {len(values)})"] = sum(values) // len(values)
        return out


def main() -> int:
    """``python -m slime.meshbed``: start a bed, print how to reach it, run until Ctrl-C."""
    import signal
    import sys

    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def _terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    with MeshBed() as bed:
        print("mesh bed up: " + ", ".join(f"{k} {v:.1f}s" for k, v in bed.timings.items()))
        print(f"  kubectl --kubeconfig={bed.kubeconfig} get pods -A")
        print(f"  istiod debug: {bed._istiod.http_url}/debug/syncz   prometheus: {bed.prometheus_url}")
        print("Press Ctrl-C to stop.", flush=True)
        try:
            while True:
                bed._cluster.check_alive()
                if bed.node:
                    bed.node.check_alive()
                bed._istiod.check_alive()
                time.sleep(1)
        except KeyboardInterrupt:
            print("\nstopping...", flush=True)
    return 0 if sys.exc_info()[0] is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
