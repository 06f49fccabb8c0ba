"""The global-sidecar's forwarder: a plain Envoy bootstrap (no application of ours). Pure.

Each listener (the wormhole ports and the global-sidecar's port) takes the calls the catch-all
sent, and:

* a Lua filter checks ``Slime-Orig-Dest`` (``ip:port``; no port: the listener's; else 400, as upstream's
  proxy), copies it to ``x-envoy-original-dst-host``, removes both Slime headers, and rewrites a short
  Host (``details:9080``) to ``details.<Slime-Source-Ns>:9080`` so that the pod's own istio-proxy can
  route it (upstream's proxy did the same, checking the Service exists first; here the rewrite is
  unconditional, as upstream's ``DISABLE_SVC_CONTROLLER`` mode);
* the route sends it to an ``ORIGINAL_DST`` cluster that dials the address in that header.

In accesslog mode the forwarder streams its own access log to the module (``access_log`` on each
forwarding listener, the module's ALS cluster in ``clusters``): a plain Envoy learns without an
istio-proxy in its Pod. Its entries name the caller's Pod IP (the direct peer: nothing in between)
and the cluster ``original_dst``. With an injected istio-proxy, that proxy's inbound entries
(``global-sidecar-accesslog``) count too, and the forwarder's come from Istio's inbound source
address (127.0.0.6), which maps to no Service: nothing is counted twice.

A probe listener answers 200 on every path (``/healthz/live``, ``/healthz/ready``); the admin
interface listens on localhost only.
"""

from __future__ import annotations

from typing import Any

HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
LUA_TYPE = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
ORIGINAL_DST = "original_dst"
DST_HEADER = "x-envoy-original-dst-host"

FORWARD_LUA = """function envoy_on_request(handle)
  local headers = handle:headers()
  local dest = headers:get("slime-orig-dest")
  local ns = headers:get("slime-source-ns")
  headers:remove("slime-orig-dest")
  headers:remove("slime-source-ns")
  if dest == nil or dest == "" then
    handle:respond({[":status"] = "400"}, "missing Slime-Orig-Dest\\n")
    return
  end
  if not string.find(dest, ":%d+$") then
    if string.find(dest, ":") and not string.find(dest, "^%[") then
      handle:respond({[":status"] = "400"}, "bad port in Slime-Orig-Dest\\n")
      return
    end
    local here = handle:streamInfo():downstreamLocalAddress()
    dest = dest .. ":" .. (string.match(here, ":(%d+)$") or "80")
  end
  if not (string.find(dest, "^[%d%.]+:%d+$") or string.find(dest, "^%[[%x:%.]+%]:%d+$")) then
    handle:respond({[":status"] = "400"}, "Slime-Orig-Dest is not ip:port\\n")
    return
  end
  headers:replace("x-envoy-original-dst-host", dest)
  if ns ~= nil and ns ~= "" and string.find(ns, "^[a-z0-9%-]+$") then
    local authority = headers:get(":authority")
    if authority ~= nil and not string.find(authority, ".", 1, true) then
      local name, port = string.match(authority, "^([^:]+)(:?%d*)$")
      if name ~= nil then
        headers:replace(":authority", name .. "." .. ns .. port)
      end
    end
  end
end
"""


def _address(port: int, host: str = "0.0.0.0") -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _hcm(stat_prefix: str, route_config: dict[str, Any], filters: list[dict[str, Any]],
         access_log: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "route_config": route_config,
        "http_filters": [*filters, {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
    }
    if access_log is not None:
        config["access_log"] = [access_log]
    return {"name": HCM, "typed_config": config}


def forward_listener(port: int, short_host_rewrite: bool = True, host: str = "0.0.0.0",
                     access_log: dict[str, Any] | None = None) -> dict[str, Any]:
    lua = {"name": "envoy.filters.http.lua", "typed_config": {
        "@type": LUA_TYPE, "default_source_code": {"inline_string": FORWARD_LUA if short_host_rewrite
                                                   else FORWARD_LUA.replace("if ns ~= nil", "if false and ns")}}}
    route_config = {"name": "forward", "virtual_hosts": [{"name": "forward", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": ORIGINAL_DST, "timeout": "0s"}}]}]}
    return {"name": f"forward_{port}", "address": _address(port, host),
            "filter_chains": [{"filters": [_hcm(f"forward_{port}", route_config, [lua], access_log)]}]}


def probe_listener(port: int, host: str = "0.0.0.0") -> dict[str, Any]:
    route_config = {"name": "probe", "virtual_hosts": [{"name": "probe", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}]}]}
    return {"name": "probe", "address": _address(port, host),
            "filter_chains": [{"filters": [_hcm("probe", route_config, [])]}]}


def original_dst_cluster(h2: bool = False) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": ORIGINAL_DST,
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "5s",
        "original_dst_lb_config": {"use_http_header": True, "http_header_name": DST_HEADER},
    }
    if h2:
        cluster["typed_extension_protocol_options"] = {HTTP_OPTIONS: {
            "@type": f"type.googleapis.com/{HTTP_OPTIONS}", "use_downstream_protocol_config": {
                "http_protocol_options": {}, "http2_protocol_options": {}}}}
    return cluster


def forwarder_config(ports: list[int], probe_port: int, admin_port: int, short_host_rewrite: bool = True,
                     h2: bool = False, host: str = "0.0.0.0", access_log: dict[str, Any] | None = None,
                     clusters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The Envoy bootstrap of the global-sidecar (the ``envoy.yaml`` of its ConfigMap); ``access_log``
    (an HCM access logger) goes on each forwarding listener, ``clusters`` (the one it streams to) next
    to ``original_dst``."""
    listeners = [forward_listener(p, short_host_rewrite, host, access_log) for p in ports if p != probe_port]
    listeners.append(probe_listener(probe_port, host))
    return {
        "admin": {"address": _address(admin_port, "127.0.0.1")},
        "static_resources": {"listeners": listeners, "clusters": [original_dst_cluster(h2), *(clusters or [])]},
    }
