"""The fallback route, rendered from the module config. Pure.

Calls a fenced workload makes to a host outside its Sidecar land in the catch-all of the wormhole
ports' route configurations. ``to-global-sidecar`` (EnvoyFilter) sends them to the global-sidecar
with the original destination (``Slime-Orig-Dest: %DOWNSTREAM_LOCAL_ADDRESS%``) and the caller's
namespace (``Slime-Source-Ns``) in headers. The global-sidecar is a plain Envoy (no application of
ours): its route rewrites a short Host to ``<name>.<namespace>`` (a small Lua filter, as upstream's
proxy did) and its ``ORIGINAL_DST`` cluster dials the address of ``Slime-Orig-Dest``. Its own
istio-proxy then routes the call with the full mesh config and streams an access log of each call
(``global-sidecar-accesslog`` + the ``lazyload-accesslog-source`` bootstrap) to the module. In accesslog
mode the forwarder streams its own access log to the module as well, so that learning works without an
injected istio-proxy (see ``forwarder.py``).

Objects, as upstream's chart names them:

* cluster mode: Deployment, Service and ConfigMap ``global-sidecar`` in ``clusterGsNamespace`` (default
  the slime namespace), ``to-global-sidecar`` in the Istio root namespace;
* namespace mode: all of them in each namespace of ``general.namespace``;
* supportH2: DestinationRule ``global-sidecar`` (the caller's protocol is kept);
* accesslog mode: ``lazyload-accesslog-source`` (ConfigMap) and ``global-sidecar-accesslog``
  (EnvoyFilter) next to each global-sidecar (upstream's chart left them out in namespace mode
  unless autoPort was on).

Differences, on purpose: the access log is only attached to the inbound HTTP connection manager
(upstream logged outbound calls too, which the module then discarded); the header values use
``append_action`` (``append`` is deprecated in Envoy).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from slime.framework.kinds import CONFIG_MAP, DEPLOYMENT, DESTINATION_RULE, ENVOY_FILTER, SERVICE
from slime.framework.module import Settings
from slime.modules.lazyload.config import Fence
from slime.modules.lazyload.forwarder import forwarder_config
from slime.modules.lazyload.names import check_dns_label

NAME = "global-sidecar"
TO_GS = "to-global-sidecar"
ALS_CLUSTER = "lazyload-accesslog-source"
ALS_FILTER = "global-sidecar-accesslog"
ORIG_DEST, SOURCE_NS = "Slime-Orig-Dest", "Slime-Source-Ns"
SLIME_APP = "LAZYLOAD_GLOBAL_SIDECAR"
FALLBACK_LABEL = "lazyload.slime.io/fallback"
HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ALS_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
LUA_TYPE = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
LUA_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute"
ROUTER = "envoy.filters.http.router"
GLOBAL_SIDECAR_CLUSTER = "_GLOBAL_SIDECAR"
ADD_NS_LUA = """function envoy_on_request(handle)
  handle:headers():replace("Slime-Source-Ns", os.getenv("POD_NAMESPACE") or "")
end
"""


def _meta(name: str, namespace: str, settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": namespace,
            "labels": {**(extra or {}), FALLBACK_LABEL: settings.name}}


def gs_namespaces(config: Fence, slime_namespace: str) -> list[str]:
    if config.mode == "namespace":
        return sorted(set(config.namespace))
    return [config.clusterGsNamespace or slime_namespace]


def gs_ports(config: Fence, extra: Iterable[int] = ()) -> list[int]:
    """The wormhole ports (configured, plus those autoPort found), then the global-sidecar's own port."""
    ports = sorted({int(p) for p in config.wormholePort} | {int(p) for p in extra})
    if config.globalSidecar.port not in ports:
        ports.append(config.globalSidecar.port)
    return ports


def wormhole_ports(config: Fence, extra: Iterable[int] = ()) -> list[int]:
    return sorted({int(p) for p in config.wormholePort} | {int(p) for p in extra})


def gs_cluster(config: Fence, namespace: str) -> str:
    return f"outbound|{config.globalSidecar.port}||{NAME}.{namespace}.svc.cluster.local"


def _headers(config: Fence, namespace: str) -> list[dict[str, Any]]:
    out = [{"header": {"key": ORIG_DEST, "value": "%DOWNSTREAM_LOCAL_ADDRESS%"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    if not config.addEnvHeaderViaLua:
        value = "%ENVIRONMENT(POD_NAMESPACE)%" if config.mode != "namespace" else namespace
        out.append({"header": {"key": SOURCE_NS, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"})
    return out


def _target(cluster: str, config: Fence, gs_ns: str) -> tuple[str, list[dict[str, Any]]]:
    """(cluster, headers to add) for a dispatch's cluster value."""
    if cluster == GLOBAL_SIDECAR_CLUSTER:
        return gs_cluster(config, gs_ns), _headers(config, gs_ns)
    return cluster, []


def _route(match: dict[str, Any], cluster: str, headers: list[dict[str, Any]]) -> dict[str, Any]:
    route: dict[str, Any] = {"match": match, "route": {"cluster": cluster, "timeout": "0s"}}
    if headers:
        route["request_headers_to_add"] = headers
    return route


def catch_all_vhosts(config: Fence, gs_ns: str) -> list[dict[str, Any]]:
    """The virtual hosts merged into each wormhole port's route configuration of the fenced proxies."""
    vhosts = []
    for d in config.dispatches:
        if d.domainRegex:
            continue
        cluster, headers = _target(d.cluster, config, gs_ns)
        vhosts.append({"name": d.name, "domains": list(d.domains),
                       "routes": [_route({"prefix": "/"}, cluster, headers)]})
    routes = []
    for d in config.dispatches:
        if not d.domainRegex:
            continue
        cluster, headers = _target(d.cluster, config, gs_ns)
        match = {"prefix": "/", "headers": [{"name": ":authority", "string_match": {
            "safe_regex": {"regex": d.domainRegex}}}]}
        routes.append(_route(match, cluster, headers))
    if config.passthroughByDefault:
        routes.append(_route({"prefix": "/"}, "PassthroughCluster", []))
    else:
        routes.append(_route({"prefix": "/"}, gs_cluster(config, gs_ns), _headers(config, gs_ns)))
    vhosts.append({"name": "allow_all", "domains": ["*"], "routes": routes})
    return vhosts


def _app_match(config: Fence, route: dict[str, Any] | None = None, listener: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    match: dict[str, Any] = {"context": "SIDECAR_OUTBOUND"}
    if route is not None:
        match["routeConfiguration"] = route
    if listener is not None:
        match["listener"] = listener
    if config.proxyVersion:
        match["proxy"] = {"proxyVersion": config.proxyVersion}
    return match


def _gs_match(route: dict[str, Any]) -> dict[str, Any]:
    return {"context": "SIDECAR_OUTBOUND", "proxy": {"metadata": {"SLIME_APP": SLIME_APP}},
            "routeConfiguration": route}


def to_global_sidecar(config: Fence, namespace: str, gs_ns: str, ports: list[int],
                      settings: Settings) -> dict[str, Any]:
    patches: list[dict[str, Any]] = []
    vhosts = catch_all_vhosts(config, gs_ns)
    for port in ports:
        rc = {"name": str(port)}
        patches.append({"applyTo": "VIRTUAL_HOST", "match": _app_match(config, {**rc, "vhost": {"name": "allow_any"}}),
                        "patch": {"operation": "REMOVE"}})
        patches.append({"applyTo": "ROUTE_CONFIGURATION", "match": _app_match(config, rc),
                        "patch": {"operation": "MERGE", "value": {"virtual_hosts": vhosts}}})
        if config.addEnvHeaderViaLua:
            patches.append({
                "applyTo": "HTTP_FILTER",
                "match": _app_match(config, listener={"name": f"0.0.0.0_{port}", "filterChain": {"filter": {
                    "name": HCM, "subFilter": {"name": ROUTER}}}}),
                "patch": {"operation": "INSERT_BEFORE", "value": {"name": "envoy.filters.http.lua", "typed_config": {
                    "@type": LUA_TYPE, "default_source_code": {"inline_string": ""},
                    "source_codes": {"add.lua": {"inline_string": ADD_NS_LUA}}}}}})
            patches.append({
                "applyTo": "HTTP_ROUTE",
                "match": _app_match(config, {**rc, "vhost": {"name": "allow_all"}}),
                "patch": {"operation": "MERGE", "value": {"typed_per_filter_config": {
                    "envoy.filters.http.lua": {"@type": LUA_PER_ROUTE, "name": "add.lua"}}}}})
        # the global-sidecar's own proxy: no catch-all to itself, unknown hosts pass through
        patches.append({"applyTo": "VIRTUAL_HOST", "match": _gs_match({**rc, "vhost": {"name": "allow_all"}}),
                        "patch": {"operation": "REMOVE"}})
        for vh in vhosts[:-1]:
            patches.append({"applyTo": "VIRTUAL_HOST", "match": _gs_match({**rc, "vhost": {"name": vh["name"]}}),
                            "patch": {"operation": "REMOVE"}})
        patches.append({"applyTo": "ROUTE_CONFIGURATION", "match": _gs_match(rc), "patch": {
            "operation": "MERGE", "value": {"virtual_hosts": [{"name": "allow_any_new", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": "PassthroughCluster", "timeout": "0s"}}]}]}}})
    return {"apiVersion": ENVOY_FILTER.api_version, "kind": ENVOY_FILTER.kind,
            "metadata": _meta(TO_GS, namespace, settings), "spec": {"configPatches": patches}}


def als_address(settings: Settings) -> tuple[str, int]:
    """Where the global-sidecar's proxy streams its access log: the module's Service and ALS port."""
    glob = settings.globals
    name = settings.name or "lazyload"
    if glob.misc.get("enableLeaderElection") == "on":
        name = f"{name}-leader"
    port_text = glob.misc.get("logSourcePort", ":8082").rpartition(":")[2] or "8082"
    return f"{name}.{glob.slimeNamespace or 'mesh-operator'}", int(port_text)


def als_bootstrap(settings: Settings) -> dict[str, Any]:
    """``custom_bootstrap.json``: the static cluster of the access-log server (HTTP/2)."""
    host, port = als_address(settings)
    return {"static_resources": {"clusters": [{
        "name": ALS_CLUSTER,
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        "dns_lookup_family": "V4_ONLY",
        "respect_dns_ttl": True,
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": ALS_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": host, "port_value": port}}}}]}]},
    }]}}


def access_log(log_name: str = "http_envoy_accesslog") -> dict[str, Any]:
    """The HCM ``access_log`` entry streaming to the module's ALS cluster."""
    return {"name": "envoy.access_loggers.http_grpc", "typed_config": {
        "@type": ALS_TYPE,
        "common_config": {"log_name": log_name, "transport_api_version": "V3",
                          "grpc_service": {"envoy_grpc": {"cluster_name": ALS_CLUSTER}},
                          "buffer_flush_interval": "0.2s"}}}


def accesslog_filter(namespace: str, settings: Settings) -> dict[str, Any]:
    return {"apiVersion": ENVOY_FILTER.api_version, "kind": ENVOY_FILTER.kind,
            "metadata": _meta(ALS_FILTER, namespace, settings),
            "spec": {"workloadSelector": {"labels": {"app": NAME}}, "configPatches": [{
                "applyTo": "NETWORK_FILTER",
                "match": {"context": "SIDECAR_INBOUND", "listener": {"filterChain": {"filter": {"name": HCM}}}},
                "patch": {"operation": "MERGE", "value": {"name": HCM, "typed_config": {
                    "@type": HCM_TYPE, "access_log": [access_log()]}}}}]}}


def _proxy_config(config: Fence) -> str:
    meta = {"SLIME_APP": SLIME_APP}
    if config.source == "prometheus":
        meta["ISTIO_VERSION"] = "999.0.0"  # keeps Istio's version-matched stats filters off it (slime#426)
    return json.dumps({"proxyMetadata": {f"ISTIO_META_{k}": v for k, v in meta.items()}}, sort_keys=True)


def deployment(config: Fence, namespace: str, ports: list[int], settings: Settings) -> dict[str, Any]:
    gs = config.globalSidecar
    inject = gs.sidecarInject
    labels = {"app": NAME}
    annotations = {"proxy.istio.io/config": _proxy_config(config)}
    if config.source == "accesslog":
        annotations["sidecar.istio.io/bootstrapOverride"] = ALS_CLUSTER
    if inject is not None and inject.enable and inject.mode == "pod":
        labels.update(inject.labels)
    if inject is not None and inject.enable:
        annotations.update(inject.annotations)
    container: dict[str, Any] = {
        "name": NAME,
        "image": gs.image,
        "command": ["envoy"],  # not the image's entrypoint: any image with Envoy on its PATH does
        "args": ["-c", "/etc/global-sidecar/envoy.yaml", "--log-level", "warning"],
        "ports": [{"name": f"http-{p}", "containerPort": p} for p in ports]
        + [{"name": "probe", "containerPort": gs.probePort}],
        "livenessProbe": {"httpGet": {"path": "/healthz/live", "port": gs.probePort}},
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": gs.probePort}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/global-sidecar", "readOnly": True}],
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if gs.resources:
        container["resources"] = gs.resources
    return {"apiVersion": DEPLOYMENT.api_version, "kind": DEPLOYMENT.kind,
            "metadata": _meta(NAME, namespace, settings, {"app": NAME}),
            "spec": {"replicas": gs.replicas, "selector": {"matchLabels": {"app": NAME}}, "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {"containers": [container],
                         "volumes": [{"name": "config", "configMap": {"name": NAME}}]}}}}


def service(ports: list[int], namespace: str, settings: Settings) -> dict[str, Any]:
    return {"apiVersion": SERVICE.api_version, "kind": SERVICE.kind,
            "metadata": _meta(NAME, namespace, settings,
                              {"app": NAME, "service": NAME, "slime.io/serviceFenced": "false"}),
            "spec": {"selector": {"app": NAME}, "ports": [
                {"name": f"http-{p}", "port": p, "protocol": "TCP", "targetPort": p} for p in ports]}}


def config_map(config: Fence, ports: list[int], namespace: str, settings: Settings) -> dict[str, Any]:
    als = config.source == "accesslog"
    envoy = forwarder_config(ports, config.globalSidecar.probePort, config.globalSidecar.adminPort,
                             h2=config.supportH2, access_log=access_log("lazyload_global_sidecar") if als else None,
                             clusters=als_bootstrap(settings)["static_resources"]["clusters"] if als else None)
    return {"apiVersion": CONFIG_MAP.api_version, "kind": CONFIG_MAP.kind,
            "metadata": _meta(NAME, namespace, settings, {"lazyload.slime.io/config": NAME}),
            "data": {"envoy.yaml": json.dumps(envoy, indent=1, sort_keys=True),
                     "cfg": "wormholePorts:\n" + "".join(f"- {p}\n" for p in ports)}}


def als_config_map(namespace: str, settings: Settings) -> dict[str, Any]:
    return {"apiVersion": CONFIG_MAP.api_version, "kind": CONFIG_MAP.kind,
            "metadata": _meta(ALS_CLUSTER, namespace, settings),
            "data": {"custom_bootstrap.json": json.dumps(als_bootstrap(settings), indent=1, sort_keys=True)}}


def destination_rule(namespace: str, settings: Settings) -> dict[str, Any]:
    """supportH2: the fenced proxies keep the caller's protocol towards the global-sidecar."""
    return {"apiVersion": DESTINATION_RULE.api_version, "kind": DESTINATION_RULE.kind,
            "metadata": _meta(NAME, namespace, settings),
            "spec": {"host": f"{NAME}.{namespace}.svc.cluster.local",
                     "trafficPolicy": {"connectionPool": {"http": {"useClientProtocol": True}}}}}


def render_fallback(settings: Settings, extra_ports: Iterable[int] = ()) -> list[dict[str, Any]]:
    """Every object of the fallback route (sorted by kind, namespace, name); [] when it is disabled or
    there is no wormhole port. ValueError names a config field that cannot make a valid object."""
    config: Fence = settings.general if isinstance(settings.general, Fence) else Fence.model_validate(settings.general)
    if not config.globalSidecar.enable:
        return []
    ports = wormhole_ports(config, extra_ports)
    if not ports:
        return []
    all_ports = gs_ports(config, extra_ports)
    istio_ns = check_dns_label(settings.globals.istioNamespace or "istio-system", "global.istioNamespace")
    slime_ns = check_dns_label(settings.globals.slimeNamespace or "mesh-operator", "global.slimeNamespace")
    if config.mode == "namespace" and not config.namespace:
        raise ValueError("general.namespace: namespace mode needs at least one namespace")
    out: list[dict[str, Any]] = []
    for ns in gs_namespaces(config, slime_ns):
        out += [deployment(config, ns, all_ports, settings), service(all_ports, ns, settings),
                config_map(config, all_ports, ns, settings)]
        if config.source == "accesslog":
            out += [als_config_map(ns, settings), accesslog_filter(ns, settings)]
        if config.supportH2:
            out.append(destination_rule(ns, settings))
        filter_ns = ns if config.mode == "namespace" else istio_ns
        out.append(to_global_sidecar(config, filter_ns, ns, ports, settings))
    return sorted(out, key=lambda o: (o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]))


def http_ports(services: Iterable[Mapping[str, Any]], support_h2: bool = False) -> set[int]:
    """autoPort: the HTTP ports of Services (TCP, name ``http`` or ``http-...``; ``grpc``/``http2`` with
    supportH2), the global-sidecar's own Service excepted."""
    prefixes = {"http"} | ({"grpc", "http2"} if support_h2 else set())
    out = set()
    for svc in services:
        if (svc.get("metadata") or {}).get("name") == NAME:
            continue
        for port in (svc.get("spec") or {}).get("ports") or []:
            name = str(port.get("name") or "")
            if (port.get("protocol") or "TCP") == "TCP" and name.partition("-")[0] in prefixes \
                    and isinstance(port.get("port"), int):
                out.add(int(port["port"]))
    return out


def auto_ports(previous: Iterable[int], found: Iterable[int], cleanup: bool) -> set[int]:
    """autoPort's port set: only ever grows (as upstream), unless ``cleanupWormholePort``, where it is
    exactly the ports in use now."""
    return set(found) if cleanup else set(previous) | set(found)
