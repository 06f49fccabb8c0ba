"""The module's access log service with a real Envoy streaming real entries to it.

The Envoy plays the global-sidecar's istio-proxy inbound: its HTTP connection manager carries the
rendered ``access_log`` (from ``global-sidecar-accesslog``), its ALS cluster is the rendered bootstrap's
(only the address moved to the test server), and its route goes to a cluster named like Istio's inbound
one (``inbound|80||``). Calls for ``details:9080`` and ``reviews.other:9080`` become learned hosts of the
caller's Service, then a status and a Sidecar through the pure render.

The forwarder itself (a plain Envoy, no istio-proxy beside it) streams the calls it forwarded too.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from slime.devtools import die_with_parent
from slime.framework.config import load_module_configs
from slime.framework.module import ObjectsView, Settings
from slime.modules.lazyload import MODULE
from slime.modules.lazyload.config import Fence
from slime.modules.lazyload.context import learned_record
from slime.modules.lazyload.globalsidecar import ALS_CLUSTER, render_fallback
from slime.modules.lazyload.learning import AccessLogEntry, LearningBuffer, convert_batch, ip_index, known_services
from slime.modules.lazyload.server import AccessLogServer, listen_address
from tests.integration.test_lazyload_envoy import forwarder_of, relocate
from tests.integration.test_lazyload_helpers import EchoServer, free_port, http_get, run_envoy

pytestmark = pytest.mark.envoy
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def settings() -> Settings:
    cfg = load_module_configs({"name": "lazyload", "kind": "lazyload", "enable": True,
                               "general": {"wormholePort": ["9080"], "metricSourceType": "accesslog"}})[0]
    return Settings(name=cfg.name, general=Fence.model_validate(cfg.general), globals=cfg.globals)


def gs_inbound(objects: list[dict[str, Any]], listen: int, app_port: int, als_port: int, admin: int
               ) -> dict[str, Any]:
    ef = next(o for o in objects if o["kind"] == "EnvoyFilter" and o["metadata"]["name"] == "global-sidecar-accesslog")
    [patch] = ef["spec"]["configPatches"]
    access_log = patch["patch"]["value"]["typed_config"]["access_log"]
    cm = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == ALS_CLUSTER)
    [als] = json.loads(cm["data"]["custom_bootstrap.json"])["static_resources"]["clusters"]
    als = copy.deepcopy(als)
    als["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] = {
        "address": "127.0.0.1", "port_value": als_port}
    inbound = "inbound|80||"
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": HCM_TYPE, "stat_prefix": "inbound_0.0.0.0_80", "http_filters": [ROUTER], "access_log": access_log,
        "route_config": {"name": "inbound|80||", "virtual_hosts": [{"name": "inbound", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": inbound}}]}]}}}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "virtualInbound", "address": {"socket_address": {
                "address": "127.0.0.1", "port_value": listen}}, "filter_chains": [{"filters": [hcm]}]}],
            "clusters": [als, {"name": inbound, "type": "STATIC", "connect_timeout": "2s", "load_assignment": {
                "cluster_name": inbound, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": app_port}}}}]}]}}],
        },
    }


ENDPOINTS = [
    {"kind": "Endpoints", "metadata": {"name": "productpage", "namespace": "default"},
     "subsets": [{"addresses": [{"ip": "127.0.0.1"}]}]},
    {"kind": "Endpoints", "metadata": {"name": "reviews", "namespace": "other"},
     "subsets": [{"addresses": [{"ip": "10.1.0.9"}]}]},
]


async def _stream(tmp_path: Path) -> tuple[list[AccessLogEntry], dict[str, int], float]:
    received: list[AccessLogEntry] = []
    arrived = asyncio.Event()

    def sink(entries: list[AccessLogEntry]) -> None:
        received.extend(entries)
        if len(received) >= 3:
            arrived.set()

    objects = render_fallback(settings())
    async with AccessLogServer("127.0.0.1:0", sink) as server:
        listen = free_port()
        config = gs_inbound(objects, listen, 0, server.port, free_port())
        with EchoServer("app") as app:
            config["static_resources"]["clusters"][1]["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
                "endpoint"]["address"]["socket_address"]["port_value"] = app.port
            with run_envoy(config, tmp_path, "gs-inbound"):
                start = time.monotonic()
                for host in ("details:9080", "reviews.other:9080", "10.0.0.7:9080"):
                    status, _ = await asyncio.to_thread(http_get, listen, "/", {"Host": host})
                    assert status == 200
                await asyncio.wait_for(arrived.wait(), timeout=10)
                latency = time.monotonic() - start
        return received, dict(server.counters), latency


def test_rendered_als_cluster_names_the_module_service() -> None:
    cm = next(o for o in render_fallback(settings()) if o["metadata"]["name"] == ALS_CLUSTER)
    [als] = json.loads(cm["data"]["custom_bootstrap.json"])["static_resources"]["clusters"]
    assert als["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": "lazyload.mesh-operator", "port_value": 8082}


def test_envoy_streams_entries_that_become_learned_hosts_and_a_sidecar(tmp_path: Path) -> None:
    received, counters, latency = asyncio.run(_stream(tmp_path))
    assert counters["entries"] == 3 and counters["messages"] >= 1
    assert latency < 5, latency
    assert sorted(e.authority for e in received) == ["10.0.0.7:9080", "details:9080", "reviews.other:9080"]
    assert {e.source_ip for e in received} == {"127.0.0.1"}
    assert {e.upstream_cluster for e in received} == {"inbound|80||"}

    learned = convert_batch(received, ip_index(ENDPOINTS), known_services(ENDPOINTS))
    assert learned == {("default", "productpage"): {
        '{destination_service="details.default.svc.cluster.local"}': 1,
        '{destination_service="reviews.other.svc.cluster.local"}': 1}}

    buffer = LearningBuffer(interval=1.0)
    now = 1_800_000_000.0
    assert buffer.observe(("default", "productpage"), learned[("default", "productpage")], now, {}, {})
    assert buffer.due(now) == [("default", "productpage")]
    got, seen = buffer.record(("default", "productpage"))
    fence = {"apiVersion": "microservice.slime.io/v1alpha1", "kind": "ServiceFence",
             "metadata": {"name": "productpage", "namespace": "default"},
             "spec": {"enable": True, "workloadSelector": {"fromService": True}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "productpage", "namespace": "default"},
               "spec": {"selector": {"app": "productpage"}}}
    view = ObjectsView([fence, service, learned_record("default", "productpage", now, got, seen)])
    result = MODULE.render(fence, MODULE.context(fence, view, settings()))
    [sidecar] = result.objects or []
    assert sidecar["spec"]["egress"][0]["hosts"] == [
        "*/details.default.svc.cluster.local", "*/reviews.other.svc.cluster.local", "istio-system/*", "mesh-operator/*"]
    assert set(result.status["metricStatus"]) == set(learned[("default", "productpage")])


def test_listen_address() -> None:
    assert listen_address(":8082") == "0.0.0.0:8082"
    assert listen_address("9000") == "0.0.0.0:9000"
    assert listen_address("127.0.0.1:0") == "127.0.0.1:0"
    with pytest.raises(ValueError, match="logSourcePort"):
        listen_address(":http")


async def _forwarded(tmp_path: Path) -> list[AccessLogEntry]:
    received: list[AccessLogEntry] = []
    arrived = asyncio.Event()

    def sink(entries: list[AccessLogEntry]) -> None:
        received.extend(entries)
        if len(received) >= 2:
            arrived.set()

    forwarder, ports = relocate(forwarder_of(render_fallback(settings())))
    [als] = [c for c in forwarder["static_resources"]["clusters"] if c["name"] == ALS_CLUSTER]
    async with AccessLogServer("127.0.0.1:0", sink) as server:
        als["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] = {
            "address": "127.0.0.1", "port_value": server.port}
        with EchoServer("details") as details, run_envoy(forwarder, tmp_path, "forwarder"):
            for port in (ports[9080], ports[80]):
                status, body = await asyncio.to_thread(http_get, port, "/", {
                    "Host": "details:9080", "Slime-Orig-Dest": f"127.0.0.1:{details.port}",
                    "Slime-Source-Ns": "default"})
                assert status == 200, body
            assert (await asyncio.to_thread(http_get, ports[80], "/", {"Host": "details"}))[0] == 400
            await asyncio.wait_for(arrived.wait(), timeout=10)
            await asyncio.sleep(0.5)  # the 400 (no destination) is logged too, after the first two
    return received


def test_the_forwarder_streams_the_calls_it_forwarded(tmp_path: Path) -> None:
    """No istio-proxy in the global-sidecar's Pod (the mesh bed; a namespace without injection): the
    plain Envoy's own entries are learned."""
    received = asyncio.run(_forwarded(tmp_path))
    forwarded = [e for e in received if e.upstream_cluster == "original_dst"]
    assert [(e.source_ip, e.authority) for e in forwarded] == [("127.0.0.1", "details.default:9080")] * 2, received
    endpoints = [*ENDPOINTS, {"kind": "Endpoints", "metadata": {"name": "details", "namespace": "default"}}]
    assert convert_batch(received, ip_index(endpoints), known_services(endpoints)) == {
        ("default", "productpage"): {'{destination_service="details.default.svc.cluster.local"}': 2}}


def test_subprocesses_start_while_the_als_server_runs() -> None:
    """gRPC's fork handlers used to abort ~2 % of the children forked for a preexec_fn while a gRPC
    server ran in this process (tests/conftest.py turns its fork support off; see there)."""
    async def spawn() -> list[tuple[int, bytes]]:
        async with AccessLogServer("127.0.0.1:0", lambda entries: None):
            runs = [subprocess.run(["true"], preexec_fn=die_with_parent, capture_output=True, check=False)
                    for _ in range(300)]
        return [(r.returncode, r.stderr[-200:]) for r in runs if r.returncode != 0]

    assert asyncio.run(spawn()) == []
