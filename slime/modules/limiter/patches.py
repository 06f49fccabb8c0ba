"""EnvoyFilter configPatches for one set of active descriptors (reference §2.6, §2.7).

Order: A (route rate_limits, one per route group) , B (ratelimit filter), C (RLS
per-route placeholders), D (local_ratelimit filter), E (local per-route config).
Route groups keep first-seen order so the output is stable between refreshes.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from slime.modules.limiter.api import OUTBOUND, ActiveDescriptor, LimiterConfig, Target
from slime.modules.limiter.descriptors import is_global, local_descriptor, route_actions

SIDECAR_INBOUND, SIDECAR_OUTBOUND, GATEWAY = "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"
HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
RATELIMIT = "envoy.filters.http.ratelimit"
LOCAL_RATELIMIT = "envoy.filters.http.local_ratelimit"
TYPED_STRUCT = "type.googleapis.com/udpa.type.v1.TypedStruct"
RATELIMIT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"
LOCAL_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
STAT_PREFIX = "http_local_rate_limiter"


class RouteConfig(NamedTuple):
    context: str
    vhost: str  # "" = any virtual host
    route: str  # "" = the whole virtual host


def route_configs(target: Target | None, gateway: bool) -> list[RouteConfig]:
    """Where a descriptor with this (effective) target is patched."""
    if target is not None and target.direction == OUTBOUND and (target.route or target.host):
        context = GATEWAY if gateway else SIDECAR_OUTBOUND
        suffix = f":{target.port}" if target.port else ""
        if target.route:
            out = []
            for entry in target.route:
                vhost, route = entry.split("/")
                out.append(RouteConfig(context, vhost + suffix if vhost else "", route))
            return out
        return [RouteConfig(context, host + suffix, "") for host in target.host]
    # inbound: upstream ignores spec.gateway here
    vhost = f"inbound|http|{target.port}" if target is not None and target.port else ""
    return [RouteConfig(SIDECAR_INBOUND, vhost, "default")]


@dataclass
class _Groups:
    order: dict[RouteConfig, list[ActiveDescriptor]] = field(default_factory=dict)

    def add(self, rc: RouteConfig, d: ActiveDescriptor) -> None:
        self.order.setdefault(rc, []).append(d)

    def contexts(self) -> list[str]:
        return list(dict.fromkeys(rc.context for rc in self.order))


def _route_match(rc: RouteConfig, proxy_version: str) -> dict[str, Any]:
    vhost: dict[str, Any] = {}
    if rc.vhost:
        vhost["name"] = rc.vhost
    if rc.route:
        vhost["route"] = {"name": rc.route}
    match: dict[str, Any] = {"context": rc.context, "routeConfiguration": {"vhost": vhost}}
    if proxy_version:
        match["proxy"] = {"proxyVersion": proxy_version}
    return match


def _filter_match(context: str, proxy_version: str) -> dict[str, Any]:
    match: dict[str, Any] = {
        "context": context,
        "listener": {"filterChain": {"filter": {"name": HCM, "subFilter": {"name": ROUTER}}}},
    }
    if proxy_version:
        match["proxy"] = {"proxyVersion": proxy_version}
    return match


def _merge(rc: RouteConfig, proxy_version: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "applyTo": "HTTP_ROUTE" if rc.route else "VIRTUAL_HOST",
        "match": _route_match(rc, proxy_version),
        "patch": {"operation": "MERGE", "value": value},
    }


def _insert_filter(context: str, proxy_version: str, name: str, type_url: str, value: dict[str, Any]) -> dict:
    return {
        "applyTo": "HTTP_FILTER",
        "match": _filter_match(context, proxy_version),
        "patch": {
            "operation": "INSERT_BEFORE",
            # a copy: one value shared by several patches would come out as YAML anchors
            "value": {
                "name": name,
                "typed_config": {"@type": TYPED_STRUCT, "type_url": type_url, "value": deepcopy(value)},
            },
        },
    }


def _local_per_route(descs: list[ActiveDescriptor], name: str, namespace: str) -> dict[str, Any]:
    value: dict[str, Any] = {
        "statPrefix": STAT_PREFIX,
        # a fixed, generous route-level bucket: only the descriptors limit
        "tokenBucket": {"maxTokens": 100000, "tokensPerFill": 100000, "fillInterval": "1s"},
        "filterEnabled": {"runtimeKey": "local_rate_limit_enabled", "defaultValue": {"numerator": 100}},
        "filterEnforced": {"runtimeKey": "local_rate_limit_enforced", "defaultValue": {"numerator": 100}},
        "descriptors": [local_descriptor(d, name, namespace) for d in descs],
    }
    headers = [
        {"header": {"key": h.key, "value": h.value}, "append": True}
        for d in descs
        for h in d.action.headers_to_add
    ]
    if headers:
        value["responseHeadersToAdd"] = headers
    return {
        "typed_per_filter_config": {
            LOCAL_RATELIMIT: {"@type": TYPED_STRUCT, "type_url": LOCAL_TYPE, "value": value}
        }
    }


def _placeholder() -> dict[str, Any]:
    return {
        "typed_per_filter_config": {
            RATELIMIT: {
                "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                "config": {"@type": "type.googleapis.com/google.protobuf.Empty", "value": {}},
                "is_optional": True,
            }
        }
    }


def config_patches(
    descs: list[ActiveDescriptor],
    spec_target: Target | None,
    gateway: bool,
    name: str,
    namespace: str,
    cfg: LimiterConfig,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The patches for one EnvoyFilter, and problems (messages) found on the way."""
    pv = cfg.proxyVersion
    every, glob, local = _Groups(), _Groups(), _Groups()
    for d in descs:
        for rc in route_configs(d.target or spec_target, gateway):
            every.add(rc, d)
            (glob if is_global(d) else local).add(rc, d)

    patches: list[dict[str, Any]] = []
    problems: list[str] = []
    for rc, group in every.order.items():  # A
        limits: list[dict[str, Any]] = []
        for d in group:
            # Local descriptors split per source IP share the action [remote_address]; a
            # repeated action makes Envoy take two tokens per request (upstream does that).
            entry = {"actions": route_actions(d, name, namespace)}
            if entry not in limits:
                limits.append(entry)
        patches.append(
            _merge(rc, pv, {"route": {"rate_limits": limits}} if rc.route else {"rate_limits": limits})
        )

    if glob.order and not cfg.disableGlobalRateLimit:
        if not cfg.disableInsertGlobalRateLimit:  # B
            cluster = cfg.rls.cluster if cfg.rls else None
            if cluster is None:
                # upstream still inserts the filter with no cluster, which Envoy rejects
                problems.append("strategy global needs the module config rls {service, port}")
            else:
                value = {
                    "domain": cfg.rls_domain,
                    "rate_limit_service": {
                        "grpcService": {"envoyGrpc": {"clusterName": cluster}},
                        "transportApiVersion": "V3",
                    },
                }
                for context in glob.contexts():
                    patches.append(_insert_filter(context, pv, RATELIMIT, RATELIMIT_TYPE, value))
        if cfg.enableRatelimitPlaceholderInRoute:  # C (upstream stops at the first vhost group)
            patches += [_merge(rc, pv, _placeholder()) for rc in glob.order if rc.route]

    if local.order and not cfg.disableInsertLocalRateLimit:  # D
        for context in local.contexts():
            patches.append(
                _insert_filter(context, pv, LOCAL_RATELIMIT, LOCAL_TYPE, {"statPrefix": STAT_PREFIX})
            )
    for rc, group in local.order.items():  # E
        patches.append(_merge(rc, pv, _local_per_route(group, name, namespace)))
    return patches, problems
