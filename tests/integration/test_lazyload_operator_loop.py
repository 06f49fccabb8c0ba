"""The module's whole loop on the real apiserver, fed by real gRPC access-log streams.

Until the generic reconciler (issue 7) lands, a small stand-in does its part the way ``LazyloadHooks``
expects: on ``wake`` (and for each new fence) it reads the fence, renders it through ``hooks.view``,
applies the Sidecar, replaces the status through ``/status`` and evaluates again when ``hooks.next_run`` says. Everything else
is the module's: auto-fence creates the fence of ``productpage`` through the API; a call from
productpage's pod (its Endpoints hold the pod's address) to ``details:9080``, as the global-sidecar's
proxy reports it over gRPC, is learned, and the Sidecar gains details; with a
2 s TTL and a 1 s grace the dependency then leaves the Sidecar again, by the hooks' timers alone.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from slime.framework.config import load_module_configs
from slime.framework.kinds import SIDECAR, Kind
from slime.framework.kube import Kube
from slime.framework.module import NO_METRICS, Settings
from slime.modules.lazyload import MODULE
from slime.modules.lazyload.config import Fence
from slime.modules.lazyload.controller import LazyloadHooks
from slime.modules.lazyload.writer import FENCE

POD_IP = "10.244.0.11"  # productpage's pod: in its Endpoints and in the entries, never contacted


async def send_entries(port: int, calls: list[tuple[str, str]]) -> None:
    """One stream of HTTP access-log entries over real gRPC, as the global-sidecar's proxy sends them (the
    Envoy leg is shown by test_lazyload_accesslog; Endpoints refuse the loopback address Envoy would report)."""
    import grpc
    from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

    message = als_pb2.StreamAccessLogsMessage()
    message.identifier.node.id = "sidecar~10.244.0.20~global-sidecar-1.mesh-operator~mesh-operator.svc.cluster.local"
    message.identifier.log_name = "http_envoy_accesslog"
    for authority, cluster in calls:
        entry = message.http_logs.log_entry.add()
        entry.common_properties.downstream_direct_remote_address.socket_address.address = POD_IP
        entry.common_properties.downstream_direct_remote_address.socket_address.port_value = 40000
        entry.common_properties.upstream_cluster = cluster
        entry.request.authority = authority
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = als_pb2_grpc.AccessLogServiceStub(channel)
        await stub.StreamAccessLogs(iter([message]))


class ApiView:
    """A ClusterView reading the apiserver directly (the reconciler would read its informers)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def list(self, kind: Kind, namespace: str | None = None) -> list[dict[str, Any]]:
        try:
            items: list[dict[str, Any]] = self.kube.list(kind, namespace)
        except Exception:  # noqa: BLE001 - a kind the apiserver does not serve is empty
            return []
        return items

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self.kube.get(kind, namespace, name)
        return result


class StandIn:
    """The reconciler's part, blocking (run off the loop)."""

    def __init__(self, kube: Kube, k8s_api: Any, settings: Settings, namespace: str) -> None:
        from kubernetes import client as k8s

        self.kube, self.settings, self.namespace = kube, settings, namespace
        self.custom = k8s.CustomObjectsApi(k8s_api)
        self.cluster = ApiView(kube)
        self.hooks: LazyloadHooks | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.writes = 0
        self.timers: dict[tuple[str, str], asyncio.TimerHandle] = {}

    def wake(self, namespace: str, name: str) -> None:
        assert self.loop is not None
        self.loop.create_task(asyncio.to_thread(self.reconcile, namespace, name))

    def reconcile(self, namespace: str, name: str) -> None:
        assert self.hooks is not None
        cr = self.cluster.get(FENCE, namespace, name)
        if cr is None:
            return
        rendered = MODULE.render(cr, MODULE.context(cr, self.hooks.view(cr, self.cluster, {}), self.settings))
        for obj in rendered.objects or []:
            self.kube.apply(obj)
        status = {**rendered.status, "conditions": [{"type": c.type, "status": c.status_text, "reason": c.reason,
                                                     "message": c.message, "lastTransitionTime": "2026-01-01T00:00:00Z"}
                                                    for c in rendered.conditions]}
        if status != {k: v for k, v in (cr.get("status") or {}).items() if k in status}:
            self.custom.replace_namespaced_custom_object_status(
                "microservice.slime.io", "v1alpha1", namespace, "servicefences", name, {**cr, "status": status})
            self.writes += 1
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._after, namespace, name, cr, rendered)

    def _after(self, namespace: str, name: str, cr: dict[str, Any], rendered: Any) -> None:
        """On the loop, as the scheduler: the hooks say when to evaluate again."""
        assert self.hooks is not None and self.loop is not None
        delay = self.hooks.next_run(cr, rendered, NO_METRICS)
        timer = self.timers.pop((namespace, name), None)
        if timer is not None:
            timer.cancel()
        if delay is not None and delay < 60:
            self.timers[(namespace, name)] = self.loop.call_later(delay, self.wake, namespace, name)

    def sidecar_hosts(self) -> list[str]:
        sc = self.cluster.get(SIDECAR, self.namespace, "productpage")
        return list(sc["spec"]["egress"][0]["hosts"]) if sc else []


async def _wait(check: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await asyncio.to_thread(check):
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    raise TimeoutError(what)


def test_autofence_learn_and_forget_on_the_apiserver(namespace: str, k8s_api: Any) -> None:
    kube = Kube(k8s_api)
    for name in ("productpage", "details"):
        kube.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
                     "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 9080}]}})
    from kubernetes import client as k8s

    k8s.CoreV1Api(k8s_api).create_namespaced_endpoints(namespace, {
        "metadata": {"name": "productpage"},
        "subsets": [{"addresses": [{"ip": POD_IP}], "ports": [{"name": "http", "port": 9080}]}]})
    cfg = load_module_configs({"name": "lazyload", "kind": "lazyload", "enable": True, "general": {
        "autoFence": True, "defaultFence": True, "whiteNamespaceList": namespace, "wormholePort": ["9080"],
        "learnInterval": "0.2s", "dependencyTTL": "2s", "expireWait": "1s", "globalSidecar": {"enable": False}},
        "global": {"misc": {"logSourcePort": "127.0.0.1:0"}}})[0]
    settings = Settings(name=cfg.name, general=Fence.model_validate(cfg.general), globals=cfg.globals)
    stand_in = StandIn(kube, k8s_api, settings, namespace)

    async def run() -> dict[str, float]:
        stand_in.loop = asyncio.get_running_loop()
        hooks = LazyloadHooks(stand_in)
        stand_in.hooks = hooks
        await hooks.start()
        timings: dict[str, float] = {}
        try:
            timings["auto-fence"] = await _wait(lambda: stand_in.cluster.get(FENCE, namespace, "productpage"), 10,
                                                "auto-fence")
            await asyncio.to_thread(stand_in.reconcile, namespace, "productpage")
            assert await asyncio.to_thread(stand_in.sidecar_hosts) == ["istio-system/*", "mesh-operator/*"]
            assert hooks.server is not None
            start = time.monotonic()
            await send_entries(hooks.server.port, [("details:9080", "inbound|80||")] * 3)
            host = f"*/details.{namespace}.svc.cluster.local"
            await _wait(lambda: host in stand_in.sidecar_hosts(), 10, "learned")
            timings["learned"] = time.monotonic() - start
            await _wait(lambda: host not in stand_in.sidecar_hosts(), 15, "forgotten")
            timings["forgotten"] = time.monotonic() - start
            fence = stand_in.cluster.get(FENCE, namespace, "productpage")
            assert fence is not None and fence["status"]["metricStatus"] == {}
            assert fence["status"]["domains"] == {}
        finally:
            await hooks.stop()
        return timings

    timings = asyncio.run(run())
    assert timings["learned"] < 3, timings
    assert 2 <= timings["forgotten"] < 10, timings  # TTL 2 s (+1 s rounding) then the 1 s grace
    assert stand_in.writes <= 6, stand_in.writes
    print(f"\nauto-fence {timings['auto-fence']:.2f}s; call -> Sidecar on the apiserver "
          f"{timings['learned'] * 1000:.0f} ms; call -> dependency gone (TTL 2s, grace 1s) "
          f"{timings['forgotten']:.1f}s; {stand_in.writes} status writes")
