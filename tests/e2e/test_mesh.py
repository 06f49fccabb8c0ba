"""Sidecars that istiod configures: traffic in and out goes through them, pushes are accepted,
istiod's webhook refuses invalid objects, and a NACK is seen by the acceptance check."""

from __future__ import annotations

import json

import pytest

from slime.devcluster import DevClusterError
from slime.devtools import xdscheck
from slime.meshbed import MeshBed


def test_inbound_and_outbound_traffic_go_through_the_sidecars(mesh_bed: MeshBed, bed_ns: str) -> None:
    server = mesh_bed.deploy_app("server", bed_ns, wait=False)
    caller = mesh_bed.deploy_app("caller", bed_ns, wait=False)
    server.pods = mesh_bed.wait_pods(bed_ns, "app=server", 1)
    caller.pods = mesh_bed.wait_pods(bed_ns, "app=caller", 1)
    server_proxy, caller_proxy = mesh_bed.proxy(server.pods[0]), mesh_bed.proxy(caller.pods[0])
    cluster = f"outbound|{server.port}||{server.fqdn}"
    mesh_bed.wait_routable(server, via=caller.pods[0])  # the caller's Envoy has the server's endpoint
    caller_proxy.wait_accepted()
    server_proxy.wait_accepted()

    out = mesh_bed.http_get(caller.pods[0], f"{server.url}/hello", count=3)
    assert out["codes"] == [200] * 3, out
    seen = json.loads(out["bodies"][0])
    # the server's app got the request from its own Envoy (inbound cluster, source 127.0.0.6) ...
    assert seen["peer"] == "127.0.0.6" and "x-request-id" in seen["headers"], seen
    # ... which had it from the caller's Envoy (outbound cluster of the server's Service)
    stats = caller_proxy.stats()
    assert xdscheck.cluster_stat(stats, cluster, "upstream_rq_200") == 3, {k: v for k, v in stats.items()
                                                                          if cluster in k}
    assert xdscheck.cluster_stat(server_proxy.stats(), f"inbound|{server.port}||", "upstream_rq_200") == 3


def test_the_webhook_refuses_invalid_istio_objects(mesh_bed: MeshBed, bed_ns: str) -> None:
    bad_filter = {
        "apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
        "metadata": {"name": "bad", "namespace": bed_ns},
        "spec": {"configPatches": [{"applyTo": "CLUSTER", "match": {"context": "SIDECAR_INBOUND",
                                                                    "listener": {"portNumber": 8080}},
                                    "patch": {"operation": "MERGE", "value": {"connect_timeout": "1s"}}}]},
    }
    bad_sidecar = {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
                   "metadata": {"name": "bad", "namespace": bed_ns},
                   "spec": {"egress": [{"hosts": ["reviews.default.svc.cluster.local"]}]}}
    with pytest.raises(DevClusterError, match="cluster class objects cannot have non cluster match"):
        mesh_bed.apply([bad_filter])
    with pytest.raises(DevClusterError, match="namespace/dnsName"):
        mesh_bed.apply([bad_sidecar])
    good_sidecar = {**bad_sidecar, "spec": {"egress": [{"hosts": ["./*", "istio-system/*"]}]}}
    mesh_bed.apply([good_sidecar])  # the webhook lets valid objects through


def lua_filter(namespace: str, app: str, code: str) -> dict[str, object]:
    return {
        "apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
        "metadata": {"name": "lua", "namespace": namespace},
        "spec": {"workloadSelector": {"labels": {"app": app}}, "configPatches": [{
            "applyTo": "HTTP_FILTER",
            "match": {"context": "SIDECAR_INBOUND", "listener": {"filterChain": {"filter": {
                "name": "envoy.filters.network.http_connection_manager",
                "subFilter": {"name": "envoy.filters.http.router"}}}}},
            "patch": {"operation": "INSERT_BEFORE", "value": {
                "name": "e2e.lua", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                    "default_source_code": {"inline_string": code}}}}}]},
    }


def test_a_nack_is_caught_and_a_fix_is_accepted(mesh_bed: MeshBed, bed_ns: str) -> None:
    app = mesh_bed.deploy_app("nacked", bed_ns)
    proxy = mesh_bed.proxy(app.pods[0])
    proxy.wait_accepted()
    baseline = proxy.stats()
    # valid for istiod and istioctl, refused by Envoy: only the live stack sees it
    mesh_bed.apply([lua_filter(bed_ns, "nacked", "function envoy_on_request(h) this is not lua end")])
    problems = proxy.wait_rejected(baseline=baseline)
    assert any("LDS NACKed" in p and "script load error" in p for p in problems), problems
    assert any(p.startswith("envoy: listener_manager.lds.update_rejected") for p in problems), problems
    with pytest.raises(xdscheck.NotAccepted, match="NACK"):
        proxy.wait_accepted(timeout=2, baseline=baseline)

    ok = 'function envoy_on_request(h) h:headers():add("x-e2e-lua", "1") end'
    mesh_bed.apply([lua_filter(bed_ns, "nacked", ok)])
    proxy.wait_accepted(baseline=proxy.stats(),
                        applied=lambda d: xdscheck.has_http_filter(d, "virtualInbound", "e2e.lua"))
    client = mesh_bed.client(bed_ns)
    out = mesh_bed.http_get(client, app.url)
    assert json.loads(out["bodies"][0])["headers"].get("x-e2e-lua") == "1", out
