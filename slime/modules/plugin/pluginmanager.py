"""PluginManager -> the config patches of its EnvoyFilter: one HTTP filter per enabled plugin,
inserted before the router in list order; wasm and rider through ECDS. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from slime.modules.plugin import ecds
from slime.modules.plugin.api import Plugin, PluginManagerSpec
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


@dataclass
class Translation:
    """What upstream would write (``spec`` of the EnvoyFilter), what is wrong, what is in force."""

    spec: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)
    in_force: list[str] = field(default_factory=list)  # filter names, per route names, ...


def unsupported_protocol(p: Plugin, where: str) -> Problem:
    protocol = p.protocol_name
    detail = f" (app protocol {p.generic_app_protocol!r})" if protocol == "Generic" and p.generic_app_protocol else ""
    if protocol == "Generic" and not p.generic_app_protocol:
        detail = " without genericAppProtocol (upstream skipped it silently)"
    return Problem(
        "UnsupportedProtocol",
        f"{where}.protocol: {protocol}{detail} needs a patched Istio: stock Istio's EnvoyFilter has no "
        "Dubbo or generic proxy patch; only HTTP plugins can be applied",
    )


def _main_patch(p: Plugin, ctx: PluginContext, names: Names) -> dict[str, Any]:
    listener: dict[str, Any] = {}
    if p.port:
        listener["portNumber"] = p.port
    listener["filterChain"] = {"filter": {"name": names.hcm, "subFilter": {"name": names.router}}}
    match: dict[str, Any] = {"context": context_of(p.listener_type)}
    if ctx.config.proxyVersion:
        match["proxy"] = {"proxyVersion": ctx.config.proxyVersion}
    match["listener"] = listener
    value: dict[str, Any] = {"disabled": True} if p.disable_on_filter_level else {}
    return {"applyTo": "HTTP_FILTER", "match": match, "patch": {"operation": "INSERT_BEFORE", "value": value}}


def _discovery(resource: str, type_url: str, ctx: PluginContext) -> dict[str, Any]:
    discovery: dict[str, Any] = {"config_source": {"ads": {}}, "type_urls": [type_url]}
    default = ctx.config.configDiscoveryDefaultConfig.get(type_url)
    if default is not None:
        discovery["default_config"] = default
    return {"name": resource, "config_discovery": discovery}


def _extension(resource: str, type_url: str, config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "applyTo": "EXTENSION_CONFIG",
        "patch": {"operation": "ADD", "value": {"name": resource, "typed_config": typed_struct(type_url, config)}},
    }


def plugin_patches(p: Plugin, namespace: str, ctx: PluginContext, names: Names, where: str,
                   problems: list[Problem]) -> list[dict[str, Any]]:
    """The patches of one enabled HTTP plugin, before rawPatch: [EXTENSION_CONFIG?, HTTP_FILTER]."""
    main = _main_patch(p, ctx, names)
    value = main["patch"]["value"]
    remote = p.wasm or p.rider
    if remote is None:
        check_text(p.name, f"{where}.name", problems)
        value["name"] = p.name
        if p.inline is not None:
            value["typed_config"] = typed_struct(p.type_url, p.inline.settings or {})
        elif p.type_url:
            value["typed_config"] = typed_struct(p.type_url, {})
        return [main]
    if not check_resource_name(p.name, namespace, where, problems):
        return []
    is_rider = p.rider is not None
    resource = ecds.resource_name(namespace, p.name, is_rider)
    if p.wasm is not None:
        type_url, config = ecds.WASM_TYPE, ecds.wasm_config(resource, p.wasm, ctx, where, problems)
    else:
        assert p.rider is not None
        type_url, config = ecds.RIDER_TYPE, ecds.rider_config(p.rider, ctx, where, problems)
    if config is None:
        return []
    value.update(_discovery(resource, type_url, ctx))
    return [_extension(resource, type_url, config), main]


def translate_plugin_manager(spec: PluginManagerSpec, namespace: str, ctx: PluginContext) -> Translation:
    names = Names.of(ctx.config)
    out = Translation(spec={})
    patches: list[dict[str, Any]] = []
    for i, p in enumerate(spec.plugin):
        where = f"spec.plugin[{i}]"
        if not p.enable:
            continue
        if p.protocol_name != "HTTP":
            out.problems.append(unsupported_protocol(p, where))
            continue
        for patch in plugin_patches(p, namespace, ctx, names, where, out.problems):
            if p.rawPatch is not None:
                patch = merge_patch(patch, p.rawPatch)
            out.problems += check_patch(patch, where, ctx.config.extra_types)
            patches.append(patch)
            if patch.get("applyTo") == "HTTP_FILTER":
                out.in_force.append(str(((patch.get("patch") or {}).get("value") or {}).get("name", "")))
    out.spec["workloadSelector"] = {"labels": dict(spec.workload_labels)} if spec.workload_labels else {}
    if spec.priority:
        out.spec["priority"] = spec.priority
    out.spec["configPatches"] = patches
    return out
