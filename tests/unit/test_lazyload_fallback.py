"""The fallback route's pure parts: autoPort, ports, namespaces, the ALS address, the objects' shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from slime.framework.config import load_module_configs
from slime.framework.module import Settings
from slime.modules.lazyload.config import Fence
from slime.modules.lazyload.globalsidecar import als_address, auto_ports, gs_ports, http_ports, render_fallback


def settings(general: dict[str, Any], glob: dict[str, Any] | None = None, name: str = "lazyload") -> Settings:
    cfg = load_module_configs({"name": name, "kind": "lazyload", "general": general, "global": glob or {}})[0]
    return Settings(name=cfg.name, general=Fence.model_validate(cfg.general), globals=cfg.globals)


def svc(name: str, *ports: tuple[str, int, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports]}}


def test_http_ports_as_upstream_counts_them() -> None:
    services = [svc("a", ("http-web", 8080, "TCP"), ("http", 9080, "TCP"), ("http", 53, "UDP"), ("https-x", 443, "TCP"),
                    ("grpc-x", 7070, "TCP"), ("http2", 7071, "TCP"), ("tcp-db", 3306, "TCP"), ("httpx", 81, "TCP")),
                svc("global-sidecar", ("http-1", 1111, "TCP"))]
    assert http_ports(services) == {8080, 9080}
    assert http_ports(services, support_h2=True) == {8080, 9080, 7070, 7071}


def test_auto_ports_grow_unless_cleanup() -> None:
    assert auto_ports({80, 9080}, {8080}, cleanup=False) == {80, 9080, 8080}
    assert auto_ports({80, 9080}, {8080}, cleanup=True) == {8080}


def test_ports_and_objects() -> None:
    s = settings({"wormholePort": ["9080", "8080"], "autoPort": True})
    assert gs_ports(s.general, {7000}) == [7000, 8080, 9080, 80]
    objects = render_fallback(s, {7000})
    [svc_obj] = [o for o in objects if o["kind"] == "Service"]
    assert [p["port"] for p in svc_obj["spec"]["ports"]] == [7000, 8080, 9080, 80]
    assert svc_obj["metadata"]["labels"]["slime.io/serviceFenced"] == "false"  # never fenced itself
    [ef] = [o for o in objects if o["metadata"]["name"] == "to-global-sidecar"]
    assert ef["metadata"]["namespace"] == "istio-system"
    rcs = {p["match"]["routeConfiguration"]["name"] for p in ef["spec"]["configPatches"]}
    assert rcs == {"7000", "8080", "9080"}  # the gs port itself has no catch-all
    [cm] = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "global-sidecar"]
    listeners = json.loads(cm["data"]["envoy.yaml"])["static_resources"]["listeners"]
    assert sorted(ln["address"]["socket_address"]["port_value"] for ln in listeners) == [80, 7000, 8080, 9080, 18181]


def test_als_address() -> None:
    assert als_address(settings({})) == ("lazyload.mesh-operator", 8082)
    assert als_address(settings({}, {"misc": {"enableLeaderElection": "on", "logSourcePort": "0.0.0.0:9000"}},
                                name="lazy")) == ("lazy-leader.mesh-operator", 9000)


def test_namespace_mode_needs_namespaces() -> None:
    with pytest.raises(ValueError, match="general.namespace"):
        render_fallback(settings({"wormholePort": ["9080"], "globalSidecarMode": "namespace"}))


def test_disabled_global_sidecar_renders_nothing() -> None:
    assert render_fallback(settings({"wormholePort": ["9080"], "globalSidecar": {"enable": False}})) == []
