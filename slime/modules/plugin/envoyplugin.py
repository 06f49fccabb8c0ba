"""EnvoyPlugin -> the config patches of its EnvoyFilter: MERGE patches putting each plugin's
settings on route configurations, virtual hosts and routes. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slime.modules.plugin import ecds
from slime.modules.plugin.api import EnvoyPluginSpec, Listener, Plugin
from slime.modules.plugin.checks import check_patch
from slime.modules.plugin.common import (
    Names,
    PluginContext,
    Problem,
    check_resource_name,
    check_text,
    context_of,
    merge_patch,
    typed_struct,
)
from slime.modules.plugin.pluginmanager import Translation, unsupported_protocol

RC, VH, ROUTE = "ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE"
INBOUND_PREFIX = "inbound|"  # such virtual hosts are matched in any context (upstream's compatibility rule)


@dataclass(frozen=True)
class Target:
    apply_to: str
    where: str
    rc: str = ""
    vhost: str = ""
    route: str = ""


def route_configuration_names(listener: Listener) -> list[str]:
    """Route configuration names of one listener, as Istio names them (empty ones dropped)."""
    if listener.port == 0:
        names = [listener.bind]
    elif listener.sidecar:
        names = [f"{h}:{listener.port}" for h in listener.hosts if h] or [str(listener.port)]
    else:
        parts: list[str] = []
        if listener.portName.startswith("http"):
            parts = ["http", str(listener.port)]
        elif listener.portName.startswith("generic"):
            pieces = listener.portName.split("-")
            parts = ["generic", pieces[1] if len(pieces) > 1 else "generic", str(listener.port)]
        if listener.bind:
            parts.append(listener.bind)
        names = [".".join(parts)]
    return [n for n in names if n]


def targets(spec: EnvoyPluginSpec, problems: list[Problem]) -> list[Target]:
    """Route configurations (listeners), then virtual hosts, then routes, as upstream orders them."""
    out: list[Target] = []
    for i, listener in enumerate(spec.listener):
        where = f"spec.listener[{i}]"
        names = route_configuration_names(listener)
        if not names:
            problems.append(Problem("NoRouteConfiguration", f"{where}: names no route configuration (a gateway "
                                    "listener needs a portName starting with http or generic, or a bind)"))
        for name in names:
            check_text(name, where, problems, "route configuration name")
            out.append(Target(RC, where, rc=name))
    for i, host in enumerate(spec.host):
        check_text(host, f"spec.host[{i}]", problems, "host")
        out.append(Target(VH, f"spec.host[{i}]", vhost=host))
    for i, full in enumerate(spec.route):
        vhost, sep, route = full.partition("/")
        if not sep:
            vhost, route = "", full
        check_text(full, f"spec.route[{i}]", problems, "route")
        out.append(Target(ROUTE, f"spec.route[{i}]", vhost=vhost, route=route))
    return out


def _settings(p: Plugin, namespace: str, where: str, problems: list[Problem]) -> tuple[str, Any] | None:
    """(name in typedPerFilterConfig, settings) of a plugin."""
    if p.inline is not None:
        if not p.name:
            problems.append(Problem("InvalidName", f"{where}.name: required (the filter the settings are for)"))
            return None
        check_text(p.name, f"{where}.name", problems)
        return p.name, p.inline.settings
    if p.wasm is not None and check_resource_name(p.name, namespace, where, problems):
        return ecds.resource_name(namespace, p.name, rider=False), ecds.per_route_wasm(p.wasm)
    if p.rider is not None and check_resource_name(p.name, namespace, where, problems):
        return ecds.resource_name(namespace, p.name, rider=True), ecds.per_route_rider(p.name, p.rider)
    return None


def _match(t: Target, context: str | None, ctx: PluginContext) -> dict[str, Any]:
    vhost = t.vhost
    # A virtual host without a port matches every port (upstream's ':*'), for this plugin only.
    if context in ("SIDECAR_OUTBOUND", "GATEWAY") and vhost and ":" not in vhost:
        vhost += ":*"
    rc: dict[str, Any] = {}
    if t.apply_to == RC:
        rc["name"] = t.rc
    elif t.apply_to == VH:
        rc["vhost"] = {"name": vhost} if vhost else {}
    else:
        rc["vhost"] = {**({"name": vhost} if vhost else {}), "route": {"name": t.route} if t.route else {}}
    match: dict[str, Any] = {}
    if context:
        match["context"] = context
    if ctx.config.proxyVersion:
        match["proxy"] = {"proxyVersion": ctx.config.proxyVersion}
    match["routeConfiguration"] = rc
    return match


def _value(p: Plugin, t: Target, name: str, settings: Any, names: Names, where: str,
           problems: list[Problem]) -> dict[str, Any] | None:
    body = dict(settings or {})
    if name in names.direct:
        if t.apply_to == VH:
            return body
        if t.apply_to == RC:
            problems.append(Problem("UnsupportedTarget", f"{where}: {name} is patched directly into virtual hosts "
                                    f"and routes; a route configuration ({t.where}) has no field for it"))
            return None
        return {"route": body}
    if p.inline is not None and p.inline.directPatch:
        to = p.inline.fieldPatchTo
        return body if to in ("", "ROOT") else {to: body}
    return {"typedPerFilterConfig": {name: typed_struct(p.type_url, body)}}


def translate_envoy_plugin(spec: EnvoyPluginSpec, namespace: str, ctx: PluginContext) -> Translation:
    names = Names.of(ctx.config)
    out = Translation(spec={})
    patches: list[dict[str, Any]] = []
    for t in targets(spec, out.problems):
        for i, p in enumerate(spec.plugins):
            where = f"spec.plugins[{i}]"
            if not p.enable:
                continue
            if p.protocol_name != "HTTP":
                out.problems.append(unsupported_protocol(p, where))
                continue
            if p.inline is None and p.wasm is None and p.rider is None:
                out.problems.append(Problem("MissingSettings", f"{where}: set inline, wasm or rider; without them "
                                            "nothing is patched (plugin-level settings are ignored, as upstream)"))
                continue
            named = _settings(p, namespace, where, out.problems)
            if named is None:
                continue
            name, settings = named
            context = None if t.vhost.startswith(INBOUND_PREFIX) else context_of(p.listener_type)
            value = _value(p, t, name, settings, names, where, out.problems)
            if value is None:
                continue
            patch: dict[str, Any] = {"applyTo": t.apply_to, "match": _match(t, context, ctx),
                                     "patch": {"operation": "MERGE", "value": value}}
            if p.rawPatch is not None:
                patch = merge_patch(patch, p.rawPatch)
            out.problems += check_patch(patch, where, ctx.config.extra_types)
            patches.append(patch)
            out.in_force.append(f"{name} on {t.rc or t.vhost or '*'}{'/' + t.route if t.apply_to == ROUTE else ''}")
    if spec.workload_selector is not None:
        out.spec["workloadSelector"] = {"labels": dict(spec.workload_selector.labels)} \
            if spec.workload_selector.labels else {}
    if spec.priority:
        out.spec["priority"] = spec.priority
    out.spec["configPatches"] = patches
    return out
