"""Would Envoy (or istiod) reject this patch? Checks on the final config patches. Pure.

A rejected HTTP filter or route config makes every selected proxy reject the whole listener
or route update, blocking all other changes to it; such a CR is reported and not written.
What is checked: the patch's own enums (after rawPatch), filter config types (a TypedStruct's
``type_url`` must name a type stock Envoy 1.40 or ``general.proxyTypeUrls`` knows; empty is
rejected), terminal filters before the router, empty filter names, and header names and values
anywhere in the value (no CR, LF or NUL; no ``:``-prefixed or ``host`` key in headers to add).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slime.modules.plugin import envoytypes
from slime.modules.plugin.common import Problem

APPLY_TO = frozenset({"LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER", "ROUTE_CONFIGURATION",
                      "VIRTUAL_HOST", "HTTP_ROUTE", "CLUSTER", "EXTENSION_CONFIG", "BOOTSTRAP", "LISTENER_FILTER"})
OPERATIONS = frozenset({"MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "REPLACE"})
CONTEXTS = frozenset({"ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"})
PATCH_KEYS = frozenset({"applyTo", "match", "patch"})
HEADERS_TO_ADD = ("headers_to_add", "request_headers_to_add", "response_headers_to_add",
                  "headersToAdd", "requestHeadersToAdd", "responseHeadersToAdd")
BAD_HEADER_CHARS = ("\r", "\n", "\x00")
_COMMON = ("typed_per_filter_config", "request_headers_to_add", "request_headers_to_remove",
           "response_headers_to_add", "response_headers_to_remove", "metadata", "request_mirror_policies",
           "per_request_buffer_limit_in_bytes", "request_body_buffer_limit")
# Top-level fields of the objects a MERGE patches (envoy.config.route.v3): a direct patch naming
# another field makes istiod fail to build the patch.
FIELDS = {
    "ROUTE_CONFIGURATION": frozenset(_COMMON + (
        "name", "virtual_hosts", "vhds", "internal_only_headers", "most_specific_header_mutations_wins",
        "validate_clusters", "max_direct_response_body_size_bytes", "cluster_specifier_plugins",
        "ignore_port_in_host_matching", "ignore_path_parameters_in_path_matching")),
    "VIRTUAL_HOST": frozenset(_COMMON + (
        "name", "domains", "routes", "matcher", "require_tls", "virtual_clusters", "rate_limits", "cors",
        "include_request_attempt_count_in_response", "include_attempt_count_in_response", "retry_policy",
        "retry_policy_typed_config", "hedge_policy", "include_is_timeout_retry_header")),
    "HTTP_ROUTE": frozenset(_COMMON + (
        "name", "match", "route", "redirect", "direct_response", "filter_action", "non_forwarding_action",
        "decorator", "tracing", "stat_prefix")),
}


def _snake(key: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in key)


def check_patch(patch: Mapping[str, Any], where: str, extra_types: frozenset[str]) -> list[Problem]:
    problems: list[Problem] = []
    unknown = sorted(set(patch) - PATCH_KEYS)
    if unknown:
        problems.append(Problem("InvalidRawPatch", f"{where}: unknown key {unknown[0]!r} in the config patch "
                                                   "(EnvoyFilter fields are lowerCamel: applyTo, match, patch)"))
    apply_to = patch.get("applyTo")
    if apply_to not in APPLY_TO:
        problems.append(Problem("InvalidRawPatch", f"{where}: applyTo {apply_to!r} is not an EnvoyFilter ApplyTo"))
    match = patch.get("match") or {}
    body = patch.get("patch") or {}
    if not isinstance(match, Mapping) or not isinstance(body, Mapping):
        problems.append(Problem("InvalidRawPatch", f"{where}: match and patch must be objects"))
        return problems
    if match.get("context", "ANY") not in CONTEXTS:
        problems.append(Problem("InvalidRawPatch", f"{where}: match.context {match.get('context')!r} is not one of "
                                                   + ", ".join(sorted(CONTEXTS))))
    if body.get("operation") not in OPERATIONS:
        problems.append(Problem("InvalidRawPatch", f"{where}: patch.operation {body.get('operation')!r} is not one "
                                                   "of " + ", ".join(sorted(OPERATIONS))))
    value = body.get("value")
    if value is None:
        return problems
    if not isinstance(value, Mapping):
        problems.append(Problem("InvalidRawPatch", f"{where}: patch.value must be an object"))
        return problems
    if apply_to in ("HTTP_FILTER", "EXTENSION_CONFIG") and body.get("operation") != "MERGE":
        problems += _filter(value, where, extra_types, apply_to == "HTTP_FILTER")
    fields = FIELDS.get(str(apply_to)) if body.get("operation") == "MERGE" else None
    for key in sorted(value) if fields is not None else ():
        if fields is not None and _snake(str(key)) not in fields:
            problems.append(Problem("InvalidSettings", f"{where}: {apply_to} has no field {key!r} "
                                    "(a direct patch names fields of the object it merges into)"))
    for key in ("typedPerFilterConfig", "typed_per_filter_config"):
        for name, config in (value.get(key) or {}).items():
            problems += _typed(config, f"{where}: {key}[{name!r}]", name, True, extra_types)
    problems += _headers(value, where)
    return problems


def _filter(value: Mapping[str, Any], where: str, extra: frozenset[str], http_filter: bool) -> list[Problem]:
    name = value.get("name")
    if not isinstance(name, str) or not name:
        return [Problem("InvalidName", f"{where}: the filter needs a name")]
    if "config_discovery" in value or "configDiscovery" in value:
        discovery = value.get("config_discovery") or value.get("configDiscovery") or {}
        problems = []
        for url in discovery.get("type_urls") or discovery.get("typeUrls") or []:
            if not envoytypes.is_known(url, extra):
                problems.append(_unknown(url, f"{where}: config_discovery of {name!r}"))
        default = discovery.get("default_config") or discovery.get("defaultConfig")
        if isinstance(default, Mapping):
            problems += _typed(default, f"{where}: default_config of {name!r}", name, False, extra)
            urls = {envoytypes.type_name(u) for u in discovery.get("type_urls") or discovery.get("typeUrls") or []}
            inner = default.get("type_url") or default.get("@type") or ""
            if envoytypes.type_name(str(default.get("@type", ""))) not in envoytypes.TYPED_STRUCTS:
                inner = default.get("@type") or ""
            if envoytypes.type_name(str(inner)) not in urls:
                problems.append(Problem("InvalidDefaultConfig", f"{where}: default_config of {name!r} is a "
                                        f"{inner or 'config without type'}, not one of its type_urls (module config "
                                        "configDiscoveryDefaultConfig)"))
        return problems
    config = value.get("typed_config", value.get("typedConfig"))
    if config is None:
        hint = envoytypes.suggested_type(name, per_route=False)
        fix = f" (set type_url: {hint})" if hint else ""
        return [Problem("MissingTypeUrl", f"{where}: filter {name!r} has no config type; Envoy finds a filter by "
                                          f"its config type, not its name{fix}")]
    return _typed(config, f"{where}: filter {name!r}", name, False, extra, terminal_ok=not http_filter)


def _typed(config: Any, where: str, name: str, per_route: bool, extra: frozenset[str],
           terminal_ok: bool = False) -> list[Problem]:
    if not isinstance(config, Mapping):
        return [Problem("InvalidSettings", f"{where}: the config must be an object")]
    at_type = str(config.get("@type") or "")
    if envoytypes.type_name(at_type) == envoytypes.ROUTE_FILTER_CONFIG:
        if config.get("config") is None:
            return []
        return _typed(config["config"], where, name, per_route, extra, terminal_ok)
    if envoytypes.type_name(at_type) in envoytypes.TYPED_STRUCTS:
        inner = str(config.get("type_url") or config.get("typeUrl") or "")
        if not inner:
            hint = envoytypes.suggested_type(name, per_route)
            return [Problem("MissingTypeUrl", f"{where}: type_url is empty; Envoy finds a filter by its config "
                                              "type, not its name" + (f" (set type_url: {hint})" if hint else ""))]
        if not isinstance(config.get("value", {}), Mapping):
            return [Problem("InvalidSettings", f"{where}: the settings must be an object")]
        at_type = inner
    elif "type_url" in config or "typeUrl" in config:
        return [Problem("InvalidSettings", f"{where}: a config of type {at_type!r} with a TypedStruct's type_url "
                                           "(after rawPatch? set type_url and value to null)")]
    if not at_type:
        return [Problem("MissingTypeUrl", f"{where}: the config has no '@type'")]
    if not envoytypes.is_known(at_type, extra):
        return [_unknown(at_type, where)]
    if not terminal_ok and envoytypes.type_name(at_type) in envoytypes.TERMINAL:
        return [Problem("TerminalFilter", f"{where}: {at_type} is a terminal filter; it cannot go before the router")]
    return []


def _unknown(type_url: str, where: str) -> Problem:
    return Problem("UnknownTypeUrl", f"{where}: type {type_url!r} is not one stock Envoy 1.40 knows; if your proxies "
                                     "have it, list it in the module's general.proxyTypeUrls")


def _headers(value: Any, where: str, in_header: bool = False) -> list[Problem]:
    """CR, LF or NUL in anything under a header-ish key; pseudo/host keys in headers to add."""
    problems: list[Problem] = []
    if isinstance(value, Mapping):
        for key, sub in value.items():
            k = str(key)
            header = in_header or "header" in k.lower()
            if k in HEADERS_TO_ADD and isinstance(sub, list):
                problems += _headers_to_add(sub, f"{where}: {k}")
            problems += _headers(sub, where, header)
    elif isinstance(value, list):
        for sub in value:
            problems += _headers(sub, where, in_header)
    elif in_header and isinstance(value, str) and any(c in value for c in BAD_HEADER_CHARS):
        problems.append(Problem("InvalidHeader", f"{where}: header text {value!r} holds CR, LF or NUL"))
    return problems


def _headers_to_add(options: list[Any], where: str) -> list[Problem]:
    problems = []
    for option in options:
        header = option.get("header") if isinstance(option, Mapping) else None
        key = str(header.get("key", "")) if isinstance(header, Mapping) else ""
        if key.startswith(":") or key.lower() == "host":
            problems.append(Problem("InvalidHeader", f"{where}: header {key!r} cannot be added (pseudo or host)"))
    return problems
