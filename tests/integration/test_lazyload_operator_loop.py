"""The module's whole loop in `slime run` on the real apiserver, fed by real gRPC access-log streams:
auto-fence creates the fence of ``productpage`` through the API; a call from
productpage's pod (its Endpoints hold the pod's address) to ``details:9080``, as the global-sidecar's
proxy reports it over gRPC, is learned, and the Sidecar gains details; with a
2 s TTL and a 1 s grace the dependency then leaves the Sidecar again, by the hooks' timers alone.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import yaml

from slime.framework.kinds import SIDECAR
from slime.framework.kube import Kube
from slime.modules.lazyload.writer import FENCE
from tests.integration.operator_proc import Operator, free_port, wait_until

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


def sidecar_hosts(kube: Kube, namespace: str) -> list[str]:
    sc = kube.get(SIDECAR, namespace, "productpage")
    return list(sc["spec"]["egress"][0]["hosts"]) if sc else []


def fence_patches(op: Operator) -> float:
    total = 0.0
    for line in op.get(op.metrics, "/metrics").splitlines():
        if line.startswith('slime_api_writes_total{kind="ServiceFence",verb="patch"}'):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_autofence_learn_and_forget_on_the_apiserver(kubeconfig: Path, namespace: str, k8s_api: Any,
                                                     tmp_path: Path) -> None:
    from kubernetes import client as k8s

    kube = Kube(k8s_api)
    for name in ("productpage", "details"):
        kube.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
                     "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 9080}]}})
    k8s.CoreV1Api(k8s_api).create_namespaced_endpoints(namespace, {
        "metadata": {"name": "productpage"},
        "subsets": [{"addresses": [{"ip": POD_IP}], "ports": [{"name": "http", "port": 9080}]}]})
    als_port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"name": "lazyload", "kind": "lazyload", "enable": True, "general": {
        "autoFence": True, "defaultFence": True, "whiteNamespaceList": namespace, "wormholePort": ["9080"],
        "learnInterval": "0.2s", "dependencyTTL": "2s", "expireWait": "1s", "globalSidecar": {"enable": False}},
        "global": {"misc": {"logSourcePort": f"127.0.0.1:{als_port}"}}}))
    op = Operator(kubeconfig, tmp_path / "op.log", None, modules="lazyload",
                  extra=["--config", str(config), "--namespace", namespace]).wait_alive()
    timings: dict[str, float] = {}
    try:
        start = time.monotonic()
        wait_until(lambda: kube.get(FENCE, namespace, "productpage"), 20, "auto-fence")
        timings["auto-fence"] = time.monotonic() - start
        wait_until(lambda: sidecar_hosts(kube, namespace) == ["istio-system/*", "mesh-operator/*"], 20,
                   "the fence's first Sidecar")
        writes_before = fence_patches(op)
        start = time.monotonic()
        asyncio.run(send_entries(als_port, [("details:9080", "inbound|80||")] * 3))
        host = f"*/details.{namespace}.svc.cluster.local"
        wait_until(lambda: host in sidecar_hosts(kube, namespace), 10, "learned")
        timings["learned"] = time.monotonic() - start
        wait_until(lambda: host not in sidecar_hosts(kube, namespace), 15, "forgotten")
        timings["forgotten"] = time.monotonic() - start
        def emptied() -> bool:  # the grace period (EXPIREWAIT) ends by the hooks' timer alone
            fence = kube.get(FENCE, namespace, "productpage") or {}
            status = fence.get("status") or {}
            return status.get("metricStatus") == {} and status.get("domains") == {}

        wait_until(emptied, 10, "the fence's status to drop the dependency")
        writes = fence_patches(op) - writes_before
    finally:
        assert op.stop() == 0, op.output()[-3000:]
    assert timings["learned"] < 3, timings
    assert 2 <= timings["forgotten"] < 10, timings  # TTL 2 s (+1 s rounding) then the 1 s grace
    assert writes <= 6, writes
    print(f"\nauto-fence {timings['auto-fence']:.2f}s; call -> Sidecar on the apiserver "
          f"{timings['learned'] * 1000:.0f} ms; call -> dependency gone (TTL 2s, grace 1s) "
          f"{timings['forgotten']:.1f}s; {writes:.0f} status writes")
