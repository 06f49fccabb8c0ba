"""The limiter end to end: SmartLimiter -> the operator in its Pod writes the EnvoyFilter -> istiod
pushes it -> the sidecar (or gateway) has the local rate limit -> real requests get 429."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slime.devtools import xdscheck
from slime.devtools.prometheus import wait_until
from slime.meshbed import MeshBed
from tests.e2e.conftest import productpage_behind_a_gateway, smart_limiter

LOCAL_RATELIMIT = "envoy.filters.http.local_ratelimit"


def _field(d: dict[str, Any], snake: str) -> Any:
    """A field of a proto in JSON, whichever spelling istiod/Envoy used (snake_case or camelCase)."""
    head, *rest = snake.split("_")
    return d.get(snake, d.get(head + "".join(w.title() for w in rest)))


def bucket_sizes(cfg: dict[str, Any] | None) -> list[int]:
    """max_tokens of each descriptor of a local_ratelimit per-filter config (typed or TypedStruct)."""
    if not cfg:
        return []
    value = cfg.get("value", cfg) if cfg.get("@type", "").endswith("TypedStruct") else cfg
    return [int(_field(_field(d, "token_bucket"), "max_tokens")) for d in value.get("descriptors", [])]


def route_limit(vhost: str, route: str | None = "default") -> Callable[[dict[str, Any]], list[int]]:
    def look(dump: dict[str, Any]) -> list[int]:
        items = xdscheck.routes(dump, vhost, route) if route else xdscheck.virtual_hosts(dump, vhost)
        return [n for item in items for n in bucket_sizes(xdscheck.per_filter_config(item, LOCAL_RATELIMIT))]
    return look


def envoyfilter(bed: MeshBed, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = client.CustomObjectsApi(bed.api).get_namespaced_custom_object(
            "networking.istio.io", "v1alpha3", namespace, "envoyfilters", name)
        return obj
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def ready(bed: MeshBed, namespace: str, name: str) -> dict[str, Any] | None:
    obj = client.CustomObjectsApi(bed.api).get_namespaced_custom_object(
        "microservice.slime.io", "v1alpha2", namespace, "smartlimiters", name)
    status = obj.get("status") or {}
    if any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])):
        return dict(status)
    return None


def test_inbound_limit(mesh_bed: MeshBed, bed_ns: str) -> None:
    app = mesh_bed.deploy_app("reviews", bed_ns)
    client_pod = mesh_bed.client(bed_ns)
    proxy = mesh_bed.proxy(app.pods[0])
    limit = route_limit(f"inbound|http|{app.port}")
    assert limit(proxy.wait_accepted()) == []
    assert mesh_bed.http_get(client_pod, app.url, count=7)["codes"] == [200] * 7  # no limit yet

    mesh_bed.apply([smart_limiter("reviews", bed_ns, [{
        "action": {"quota": "5", "fill_interval": {"seconds": 60}}, "condition": "true",
        "target": {"port": app.port}}])])
    wait_until(lambda: envoyfilter(mesh_bed, bed_ns, f"reviews.{bed_ns}.ratelimit"), 30,
               what="the EnvoyFilter written by the in-cluster operator")
    dump = proxy.wait_accepted(applied=limit)
    assert limit(dump) == [5]
    assert xdscheck.has_http_filter(dump, "virtualInbound", LOCAL_RATELIMIT)

    out = mesh_bed.http_get(client_pod, app.url, count=8)
    assert out["codes"] == [200] * 5 + [429] * 3, out
    assert "local_rate_limited" in out["bodies"][-1]
    assert sum(v for k, v in proxy.stats().items() if k.endswith("http_local_rate_limit.rate_limited")) >= 3


def test_adaptive_limit_follows_the_metric(mesh_bed: MeshBed, bed_ns: str) -> None:
    assert mesh_bed.exporter is not None
    app = mesh_bed.deploy_app("productpage", bed_ns)
    pod = app.pods[0]
    client_pod = mesh_bed.client(bed_ns)
    proxy = mesh_bed.proxy(pod)
    limit = route_limit(f"inbound|http|{app.port}")
    name = f"productpage.{bed_ns}.ratelimit"
    mesh_bed.exporter.set_cpu(bed_ns, pod.name, 50)
    mesh_bed.apply([smart_limiter("productpage", bed_ns, [{
        "action": {"quota": "3", "fill_interval": {"seconds": 60}}, "condition": "{{._base.cpu.sum}}>100",
        "target": {"port": app.port}}])])
    status = wait_until(lambda: (s := ready(mesh_bed, bed_ns, "productpage"))
                        and float(s.get("metricStatus", {}).get("_base.cpu.sum", -1)) == 50 and s, 60,
                        what="the operator reading cpu.sum = 50 from Prometheus")
    assert envoyfilter(mesh_bed, bed_ns, name) is None, status
    assert mesh_bed.http_get(client_pod, app.url, count=5)["codes"] == [200] * 5

    mesh_bed.exporter.set_cpu(bed_ns, pod.name, 150)  # crosses the threshold: the limit comes
    wait_until(lambda: envoyfilter(mesh_bed, bed_ns, name), 60, what="the EnvoyFilter once cpu > 100")
    proxy.wait_accepted(applied=limit)
    assert mesh_bed.http_get(client_pod, app.url, count=5)["codes"] == [200] * 3 + [429] * 2

    mesh_bed.exporter.set_cpu(bed_ns, pod.name, 20)  # back under: the limit goes
    wait_until(lambda: envoyfilter(mesh_bed, bed_ns, name) is None, 60, what="the EnvoyFilter removed")
    proxy.wait_accepted(applied=lambda d: limit(d) == [])
    assert mesh_bed.http_get(client_pod, app.url, count=5)["codes"] == [200] * 5


def test_outbound_limit_in_the_callers_sidecar(mesh_bed: MeshBed, bed_ns: str) -> None:
    reviews = mesh_bed.deploy_app("reviews", bed_ns, wait=False)
    frontend = mesh_bed.deploy_app("frontend", bed_ns)
    reviews.pods = mesh_bed.wait_pods(bed_ns, "app=reviews", 1)
    mesh_bed.wait_routable(reviews, via=frontend.pods[0])
    caller = mesh_bed.proxy(frontend.pods[0])
    limit = route_limit(f"{reviews.fqdn}:{reviews.port}")
    mesh_bed.apply([smart_limiter("frontend", bed_ns, [{
        "action": {"quota": "4", "fill_interval": {"seconds": 60}, "strategy": "single"}, "condition": "true",
        "target": {"direction": "outbound", "port": reviews.port, "route": [f"{reviews.fqdn}/default"]}}])])
    dump = caller.wait_accepted(applied=limit, timeout=60)
    assert limit(dump) == [4]
    out = mesh_bed.http_get(frontend.pods[0], reviews.url, count=6)
    assert out["codes"] == [200] * 4 + [429] * 2, out
    # the server's sidecar saw only the 4 that passed
    served = xdscheck.cluster_stat(mesh_bed.proxy(reviews.pods[0]).stats(), f"inbound|{reviews.port}||",
                                   "upstream_rq_200")
    assert served == 4


@pytest.mark.parametrize("host", ["bookinfo.example.com"])
def test_gateway_limit_on_a_host(mesh_bed: MeshBed, bed_ns: str, host: str) -> None:
    backend, gateway, client_pod, proxy = productpage_behind_a_gateway(mesh_bed, bed_ns, host)
    assert mesh_bed.http_get(client_pod, gateway.url, count=3, headers={"Host": host})["codes"] == [200] * 3

    mesh_bed.apply([smart_limiter("ingressgateway", bed_ns, [{
        "action": {"quota": "4", "fill_interval": {"seconds": 60}, "strategy": "single"}, "condition": "true",
        "target": {"direction": "outbound", "port": 80, "host": [host]}}],
        gateway=True, workloadSelector={"istio": "ingressgateway"})])
    limit = route_limit(f"{host}:80", route=None)
    dump = proxy.wait_accepted(applied=limit, timeout=60)
    assert limit(dump) == [4]
    out = mesh_bed.http_get(client_pod, gateway.url, count=6, headers={"Host": host})
    assert out["codes"] == [200] * 4 + [429] * 2, out
