"""The workload side of :class:`slime.meshbed.MeshBed`: apps with sidecars, a gateway, clients,
requests from inside Pods, and each sidecar's acceptance checks.

:class:`MeshOps` is mixed into MeshBed; it needs the bed's cluster, istiod and images (the abstract
properties below).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from slime.devtools import workloads
from slime.devtools.xdscheck import Proxy

if TYPE_CHECKING:
    from slime.devcluster import DevCluster
    from slime.devtools.images import BedImages
    from slime.devtools.istiod import Istiod


class MeshBedError(RuntimeError):
    """The bed could not start, or a workload did not become ready."""


@dataclass(frozen=True)
class PodRef:
    name: str
    namespace: str
    ip: str


@dataclass
class App:
    name: str
    namespace: str
    port: int
    service_ip: str | None
    pods: list[PodRef] = field(default_factory=list)

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"

    @property
    def url(self) -> str:
        """http://<ClusterIP>:<port> (no cluster DNS here)."""
        return f"http://{self.service_ip}:{self.port}"


class MeshOps:
    """Helpers to run workloads on a started bed."""

    timeout: float

    @property
    def api(self) -> Any:
        raise NotImplementedError

    @property
    def xds_address(self) -> str:
        raise NotImplementedError

    @property
    def _cluster(self) -> DevCluster:
        raise NotImplementedError

    @property
    def _istiod(self) -> Istiod:
        raise NotImplementedError

    @property
    def _images(self) -> BedImages:
        raise NotImplementedError

    def kubectl(self, *args: str, input: str | None = None, timeout: float | None = None) -> str:
        return self._cluster.kubectl(*args, input=input, timeout=timeout)

    def apply(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """Server-side apply (istiod's webhook refuses invalid Istio objects: DevClusterError)."""
        self._cluster.apply_yaml(objects)

    def ensure_namespace(self, name: str) -> None:
        """Create the namespace if missing; return once its ``default`` ServiceAccount exists
        (the ServiceAccount admission refuses Pods before that)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        self.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}])
        core: Any = client.CoreV1Api(self.api)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                core.read_namespaced_service_account("default", name)
                return
            except ApiException as e:
                if e.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def deploy_app(self, name: str, namespace: str, *, port: int = 8080, replicas: int = 1, sidecar: bool = True,
                   capture_outbound: bool = True, labels: Mapping[str, str] | None = None,
                   service: bool = True, wait: bool = True) -> App:
        """The echo server as a Deployment (+ Service ``name``, port ``port``), with sidecars."""
        self.ensure_namespace(namespace)
        objects = [workloads.app_deployment(
            name, namespace, app_image=self._images.testapp.name,
            proxy_image=self._images.proxy.name if sidecar else None, xds_address=self.xds_address,
            port=port, replicas=replicas, labels=labels, capture_outbound=capture_outbound)]
        if service:
            objects.append(workloads.service(name, namespace, port))
        self.apply(objects)
        app = App(name, namespace, port, self._service_ip(namespace, name) if service else None)
        if wait:
            app.pods = self.wait_pods(namespace, f"app={name}", replicas)
            if service:
                self.wait_routable(app)
        return app

    def deploy_gateway(self, namespace: str = "istio-system", name: str = "ingressgateway") -> App:
        """An ingress gateway Pod (labels ``istio: ingressgateway``) and its Service on port 80."""
        self.ensure_namespace(namespace)
        labels = {"istio": "ingressgateway", "app": name}
        self.apply([workloads.gateway_deployment(namespace, proxy_image=self._images.proxy.name,
                                                 xds_address=self.xds_address, name=name, labels=labels),
                    workloads.service(name, namespace, 80, selector=labels)])
        app = App(name, namespace, 80, self._service_ip(namespace, name))
        app.pods = self.wait_pods(namespace, "istio=ingressgateway", 1)
        self.wait_routable(app)
        return app

    def wait_routable(self, app: App, via: PodRef | None = None, timeout: float | None = None) -> None:
        """Wait until requests to ``app``'s Service reach all its Pods: through kube-proxy's rules
        (a caller without sidecar), or through the sidecar of ``via`` (its Envoy has every Pod as a
        healthy endpoint of the Service's outbound cluster)."""
        wanted = {f"{p.ip}:{app.port}" for p in app.pods}
        cluster = f"outbound|{app.port}||{app.fqdn}"

        def routable() -> bool:
            if via is not None:
                return wanted <= set(self.proxy(via).endpoints(cluster))
            rules = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True,
                                   check=True).stdout
            return all(f"--to-destination {w}" in rules for w in wanted)

        deadline = time.monotonic() + (timeout or self.timeout)
        while not routable():
            if time.monotonic() > deadline:
                raise MeshBedError(f"{app.namespace}/{app.name}: not routable via {via.name if via else 'kube-proxy'}")
            time.sleep(0.2)

    def client(self, namespace: str, name: str = "client") -> PodRef:
        """A Pod without sidecar to send requests from (:meth:`http_get`)."""
        self.ensure_namespace(namespace)
        self.apply([workloads.client_pod(name, namespace, app_image=self._images.testapp.name)])
        return self.wait_pods(namespace, f"app={name}", 1)[0]

    def http_get(self, pod: PodRef, url: str, count: int = 1, headers: Mapping[str, str] | None = None,
                 container: str = "app") -> dict[str, Any]:
        """``count`` GETs of ``url`` from inside ``pod`` (one connection each): codes and first bodies."""
        return self.http_get_many(pod, [url], count, headers, container)[url]

    def http_get_many(self, pod: PodRef, urls: list[str], count: int = 1, headers: Mapping[str, str] | None = None,
                      container: str = "app", parallel: int = 1) -> dict[str, dict[str, Any]]:
        """:meth:`http_get` of several URLs in one ``kubectl exec`` (each URL's ``count`` requests
        ``parallel`` at a time): URL -> its result."""
        argv = ["exec", "-n", pod.namespace, pod.name, "-c", container, "--", "python3",
                "/usr/local/bin/echo-server", "get", *urls, "--count", str(count), "--parallel", str(parallel)]
        for k, v in (headers or {}).items():
            argv += ["--header", f"{k}:{v}"]
        out = self.kubectl(*argv, timeout=60 + count * len(urls))
        results = [json.loads(line) for line in out.strip().splitlines() if line.startswith("{")]
        return {r["url"]: r for r in results}

    def proxy(self, pod: PodRef) -> Proxy:
        """The acceptance checks of ``pod``'s Envoy (see :mod:`slime.devtools.xdscheck`)."""
        return Proxy(f"{pod.name}.{pod.namespace}", f"http://{pod.ip}:15000", self._istiod.syncz)

    def wait_pods(self, namespace: str, selector: str, count: int, timeout: float | None = None) -> list[PodRef]:
        """Wait until ``count`` Pods match ``selector`` and all are Ready; return them."""
        from kubernetes import client

        core: Any = client.CoreV1Api(self.api)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            pods = [p for p in core.list_namespaced_pod(namespace, label_selector=selector).items
                    if p.metadata.deletion_timestamp is None]
            ready = [p for p in pods if p.status.pod_ip and any(
                c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
            if len(pods) == count and len(ready) == count:
                return sorted((PodRef(p.metadata.name, namespace, p.status.pod_ip) for p in ready),
                              key=lambda r: r.name)
            if time.monotonic() > deadline:
                states = [(p.metadata.name, p.status.phase, [(s.name, s.state.to_dict()) for s in
                                                            (p.status.container_statuses or [])]) for p in pods]
                raise MeshBedError(f"{namespace}/{selector}: {len(ready)}/{count} ready after "
                                   f"{timeout or self.timeout:.0f}s: {states}")
            time.sleep(0.2)

    def _service_ip(self, namespace: str, name: str) -> str:
        from kubernetes import client

        core: Any = client.CoreV1Api(self.api)
        return str(core.read_namespaced_service(name, namespace).spec.cluster_ip)
