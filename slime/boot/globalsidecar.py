"""lazyload's global-sidecar as boot deploys it: a plain Envoy that forwards each call to its original
destination, read from the ``Slime-Orig-Dest`` header the fenced proxies add (``to-global-sidecar``).
Pure; the Envoy bootstrap is data, not a template.

This is a placeholder for the lazyload module's own renderer. When the lazyload module's config
has a ``globalSidecar`` section (it then renders the global-sidecar, its catch-all EnvoyFilters and
access-log wiring itself), boot renders none of this: it passes ``component.globalSidecar`` into
that section of the lazyload config instead (``plan.global_sidecar_config``). Until then this
forwarder does only the forwarding: no Host rewrite of short names, no access log.
"""

from __future__ import annotations

from typing import Any

ORIG_DEST_HEADER = "Slime-Orig-Dest"
CLUSTER = "original_dst"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
DEFAULT_PORT = 80
DEFAULT_PROBE_PORT = 20000


def _hcm(name: str, routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": HCM_TYPE,
        "stat_prefix": name,
        "route_config": {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
    }}


def _listener(name: str, port: int, routes: list[dict[str, Any]], address: str) -> dict[str, Any]:
    return {"name": name, "address": {"socket_address": {"address": address, "port_value": port}},
            "filter_chains": [{"filters": [_hcm(name, routes)]}]}


def bootstrap(ports: list[int], probe_port: int, address: str = "0.0.0.0") -> dict[str, Any]:
    """The Envoy bootstrap: one listener per port forwarding to the header's address, and a health
    listener answering ``/healthz`` on ``probe_port``."""
    forward = [{"match": {"prefix": "/"}, "route": {"cluster": CLUSTER, "timeout": "0s"}}]
    health = [{"match": {"path": "/healthz"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}]
    listeners = [_listener(f"forward_{p}", p, forward, address) for p in ports]
    listeners.append(_listener("health", probe_port, health, address))
    return {
        "node": {"id": "global-sidecar", "cluster": "global-sidecar"},
        "static_resources": {
            "listeners": listeners,
            "clusters": [{
                "name": CLUSTER,
                "type": "ORIGINAL_DST",
                "lb_policy": "CLUSTER_PROVIDED",
                "connect_timeout": "5s",
                "original_dst_lb_config": {"use_http_header": True, "http_header_name": ORIG_DEST_HEADER},
            }],
        },
    }
