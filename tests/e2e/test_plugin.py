"""The plugin module end to end: PluginManager / EnvoyPlugin -> the operator in its Pod writes the
EnvoyFilter -> istiod pushes it -> the sidecar (or gateway) runs the filter on real requests."""

from __future__ import annotations

import json
from typing import Any

from slime.devtools import xdscheck
from slime.devtools.prometheus import wait_until
from slime.meshbed import MeshBed
from tests.e2e.conftest import cr_ready, envoyfilter, productpage_behind_a_gateway

LUA, RBAC, FAULT = "envoy.filters.http.lua", "envoy.filters.http.rbac", "envoy.filters.http.fault"
LUA_TYPE = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


def lua_plugin(value: str, listener: str, enable: bool = True) -> dict[str, Any]:
    code = f'function envoy_on_response(h) h:headers():add("x-slime-lua", "{value}") end'
    return {"name": LUA, "enable": enable, "listenerType": listener, "type_url": LUA_TYPE,
            "inline": {"settings": {"default_source_code": {"inline_string": code}}}}


def rbac_plugin(prefix: str, listener: str, enable: bool = True) -> dict[str, Any]:
    return {"name": RBAC, "enable": enable, "listenerType": listener, "type_url": RBAC_TYPE,
            "inline": {"settings": {"rules": {"action": "DENY", "policies": {"deny": {
                "permissions": [{"url_path": {"path": {"prefix": prefix}}}], "principals": [{"any": True}]}}}}}}


def plugin_manager(name: str, namespace: str, labels: dict[str, str], plugins: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "microservice.slime.io/v1alpha1", "kind": "PluginManager",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"workloadLabels": labels, "plugin": plugins}}


def filters_on(listener: str, *names: str) -> Any:
    """config_dump predicate: every HTTP connection manager of ``listener`` has exactly ``names`` of ours."""
    ours = {LUA, RBAC}

    def look(dump: dict[str, Any]) -> bool:
        chains = [c for lst in xdscheck.listeners(dump) if lst["name"] == listener
                  for c in xdscheck.http_filter_names(lst)]
        return bool(chains) and all([n for n in c if n in ours] == list(names) for c in chains)
    return look


def lua_header(out: dict[str, Any]) -> list[str | None]:
    return [h.get("x-slime-lua") for h in out["headers"]]


def test_plugin_manager_lua_and_rbac_on_real_requests(mesh_bed: MeshBed, bed_ns: str) -> None:
    app = mesh_bed.deploy_app("reviews", bed_ns)
    client_pod = mesh_bed.client(bed_ns)
    proxy = mesh_bed.proxy(app.pods[0])
    proxy.wait_accepted(applied=filters_on("virtualInbound"))
    before = mesh_bed.http_get(client_pod, f"{app.url}/admin/x")
    assert before["codes"] == [200] and lua_header(before) == [None], before

    pm = plugin_manager("reviews", bed_ns, {"app": "reviews"},
                        [lua_plugin("hello", "Inbound"), rbac_plugin("/admin", "Inbound")])
    mesh_bed.apply([pm])
    wait_until(lambda: cr_ready(mesh_bed, "pluginmanagers", bed_ns, "reviews"), 30, what="PluginManager Ready")
    assert envoyfilter(mesh_bed, bed_ns, "reviews") is not None
    proxy.wait_accepted(applied=filters_on("virtualInbound", LUA, RBAC))

    ok = mesh_bed.http_get(client_pod, f"{app.url}/reviews/1", count=2)
    assert ok["codes"] == [200, 200] and lua_header(ok) == ["hello", "hello"], ok
    assert json.loads(ok["bodies"][0])["path"] == "/reviews/1"
    denied = mesh_bed.http_get(client_pod, f"{app.url}/admin/x")
    assert denied["codes"] == [403], denied
    assert "RBAC: access denied" in denied["bodies"][0]
    assert lua_header(denied) == ["hello"]  # the Lua filter runs on the 403 as well (it is first)

    # disabling a plugin removes its behaviour, the other one stays
    pm["spec"]["plugin"][0]["enable"] = False
    mesh_bed.apply([pm])
    proxy.wait_accepted(applied=filters_on("virtualInbound", RBAC))
    out = mesh_bed.http_get(client_pod, f"{app.url}/reviews/1")
    assert out["codes"] == [200] and lua_header(out) == [None], out
    assert mesh_bed.http_get(client_pod, f"{app.url}/admin/x")["codes"] == [403]

    pm["spec"]["plugin"][1]["enable"] = False
    mesh_bed.apply([pm])
    proxy.wait_accepted(applied=filters_on("virtualInbound"))
    assert mesh_bed.http_get(client_pod, f"{app.url}/admin/x")["codes"] == [200]


def test_envoy_plugin_per_route_setting_acts_on_that_route_only(mesh_bed: MeshBed, bed_ns: str) -> None:
    reviews = mesh_bed.deploy_app("reviews", bed_ns, wait=False)
    frontend = mesh_bed.deploy_app("frontend", bed_ns)
    reviews.pods = mesh_bed.wait_pods(bed_ns, "app=reviews", 1)
    mesh_bed.wait_routable(reviews, via=frontend.pods[0])
    vhost = f"{reviews.fqdn}:{reviews.port}"
    destination = {"destination": {"host": reviews.fqdn, "port": {"number": reviews.port}}}
    mesh_bed.apply([{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                     "metadata": {"name": "reviews", "namespace": bed_ns},
                     "spec": {"hosts": [reviews.fqdn], "http": [
                         {"name": "ratings", "match": [{"uri": {"prefix": "/ratings"}}], "route": [destination]},
                         {"name": "rest", "route": [destination]}]}}])
    caller = mesh_bed.proxy(frontend.pods[0])
    caller.wait_accepted(applied=lambda d: {r.get("name") for r in xdscheck.routes(d, vhost)} >= {"ratings", "rest"})

    mesh_bed.apply([{"apiVersion": "microservice.slime.io/v1alpha1", "kind": "EnvoyPlugin",
                     "metadata": {"name": "ratings-fault", "namespace": bed_ns},
                     "spec": {"workloadSelector": {"labels": {"app": "frontend"}}, "route": [f"{vhost}/ratings"],
                              "plugins": [{"name": FAULT, "enable": True, "listenerType": "Outbound",
                                           "type_url": FAULT_TYPE, "inline": {"settings": {"abort": {
                                               "http_status": 418,
                                               "percentage": {"numerator": 100, "denominator": "HUNDRED"}}}}}]}}])
    wait_until(lambda: cr_ready(mesh_bed, "envoyplugins", bed_ns, "ratings-fault"), 30, what="EnvoyPlugin Ready")

    def fault_on(name: str) -> Any:
        return lambda d: [r for r in xdscheck.routes(d, vhost, name) if xdscheck.per_filter_config(r, FAULT)]
    dump = caller.wait_accepted(applied=fault_on("ratings"))
    assert not fault_on("rest")(dump)
    assert mesh_bed.http_get(frontend.pods[0], f"{reviews.url}/ratings/1", count=2)["codes"] == [418, 418]
    assert mesh_bed.http_get(frontend.pods[0], f"{reviews.url}/details/1", count=2)["codes"] == [200, 200]
    served = xdscheck.cluster_stat(mesh_bed.proxy(reviews.pods[0]).stats(), f"inbound|{reviews.port}||",
                                   "upstream_rq_200")
    assert served == 2  # the aborted requests never left the caller's sidecar


def test_gateway_plugin_acts_on_traffic_through_the_gateway(mesh_bed: MeshBed, bed_ns: str) -> None:
    host = "shop.example.com"
    backend, gateway, client_pod, proxy = productpage_behind_a_gateway(mesh_bed, bed_ns, host)

    mesh_bed.apply([plugin_manager("gateway", bed_ns, {"istio": "ingressgateway"},
                                   [lua_plugin("gateway", "Gateway"), rbac_plugin("/private", "Gateway")])])
    wait_until(lambda: cr_ready(mesh_bed, "pluginmanagers", bed_ns, "gateway"), 30, what="PluginManager Ready")
    proxy.wait_accepted(applied=filters_on("0.0.0.0_80", LUA, RBAC))
    out = mesh_bed.http_get(client_pod, f"{gateway.url}/index.html", headers={"Host": host})
    assert out["codes"] == [200] and lua_header(out) == ["gateway"], out
    assert json.loads(out["bodies"][0])["pod"] == backend.pods[0].name  # served by the backend, through the gateway
    assert mesh_bed.http_get(client_pod, f"{gateway.url}/private/x", headers={"Host": host})["codes"] == [403]
    # the backend's own sidecar is untouched: the same request straight to it has no header
    direct = mesh_bed.http_get(client_pod, f"{backend.url}/index.html")
    assert direct["codes"] == [200] and lua_header(direct) == [None], direct
