"""PluginManager / EnvoyPlugin + context -> one EnvoyFilter and the status. Pure.

No Kubernetes client, no clock, no environment: the context (module config, revision scope,
the pull Secrets a plugin names) is gathered by ``context.plugin_context``.

The EnvoyFilter has the CR's name and namespace, is owned by it (when the CR has a uid) and
carries its ``istio.io/rev`` label (and the labels ``general.passLabelRegex`` selects). Its
patches are upstream's, key for key (``translate``); both upstream fixtures come out identical.

Differences from upstream, on purpose:

* Nothing Envoy would reject is written. Upstream wrote what stock Envoy 1.2x+ rejects — and a
  rejected filter makes every selected proxy refuse the whole listener update: a TypedStruct
  with an empty ``type_url`` or a filter with no config (both upstream fixtures do this; Envoy
  no longer finds filters by name), a type Envoy does not know (rider, unless the proxies are
  declared to have it in ``general.proxyTypeUrls``), a terminal filter before the router, CR/LF
  in header text, pseudo or ``host`` headers to add, a direct patch naming a field the route,
  virtual host or route configuration lacks, a rawPatch that breaks the patch's enums or leaves
  a TypedStruct's keys on another type.
  Such a CR gets ``Ready=False`` and ``Invalid=True`` with the reason and every field at fault;
  the EnvoyFilter in force, if any, is left as it is.
* A plugin that cannot be built (missing or wrong pull Secret, bad URL or sha256, a wasm/rider
  name that is not DNS-1123) was skipped silently, leaving the chain without it — an RBAC
  filter gone is a hole. Now the CR is reported and nothing is written.
* Dubbo and Generic protocols: upstream emitted ``applyTo`` values stock Istio lacks, so a
  PluginManager's EnvoyFilter was dropped silently and an EnvoyPlugin crashed the controller.
  Now ``UnsupportedProtocol`` names the plugin; a Generic plugin without an app protocol too.
* The ``:*`` suffix of a port-less virtual host applies to the plugin it is computed for;
  upstream carried it over to the later plugins of the same target, Inbound ones included.
* CORS and HTTP rate limit settings on a route configuration target (``spec.listener``) were
  wrapped in ``route:``, a field RouteConfiguration lacks (istiod rejects the patch): now
  ``UnsupportedTarget``. A listener that names no route configuration, an EnvoyPlugin plugin
  without inline/wasm/rider (upstream logged and skipped both) are reported too.
* A plugin URL without a scheme is an OCI image even with a registry port
  (``host:5000/img``; Go's URL parser took ``host`` for the scheme).
* Unknown enum numbers (``protocol: 100``) are rejected by the schema instead of skipping the plugin.
* Status: conditions ``Ready`` and ``Invalid`` (upstream had no status).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from slime.framework.conditions import ConditionUpdate
from slime.framework.module import READY, Rendered, out_of_scope
from slime.framework.revision import REV_LABEL, rev_in_scope
from slime.framework.validation import parse_spec
from slime.modules.plugin.api import ENVOY_PLUGIN, PLUGIN_MANAGER
from slime.modules.plugin.common import PluginContext, Problem, envoyfilter
from slime.modules.plugin.envoyplugin import translate_envoy_plugin
from slime.modules.plugin.pluginmanager import Translation, translate_plugin_manager

INVALID = "Invalid"
MAX_LISTED = 5


def translate(cr: Mapping[str, Any], ctx: PluginContext) -> tuple[dict[str, Any] | None, list[Problem], list[str]]:
    """(the EnvoyFilter as upstream builds it, problems, what it puts in force). The EnvoyFilter
    is None when the spec is not valid at all."""
    meta = cr.get("metadata") or {}
    kind = cr.get("kind")
    info = {PLUGIN_MANAGER.kind: PLUGIN_MANAGER, ENVOY_PLUGIN.kind: ENVOY_PLUGIN}.get(str(kind))
    if info is None:
        return None, [Problem("UnknownKind", f"kind {kind!r} is not PluginManager or EnvoyPlugin")], []
    spec, errors = parse_spec(info.spec, cr.get("spec"))
    if spec is None:
        return None, [Problem("InvalidSpec", e) for e in _collapse_unions(errors)], []
    namespace = str(meta.get("namespace") or "default")
    out: Translation
    if info is PLUGIN_MANAGER:
        out = translate_plugin_manager(spec, namespace, ctx)  # type: ignore[arg-type]
    else:
        out = translate_envoy_plugin(spec, namespace, ctx)  # type: ignore[arg-type]
    return envoyfilter(cr, out.spec, ctx.config), _unique(out.problems), out.in_force


def render(cr: Mapping[str, Any], ctx: PluginContext) -> Rendered:
    meta = cr.get("metadata") or {}
    rev = str((meta.get("labels") or {}).get(REV_LABEL, ""))
    if not rev_in_scope(rev, ctx.istio_rev, ctx.strict_rev):
        return out_of_scope()
    ef, problems, in_force = translate(cr, ctx)
    if problems or ef is None:
        listed = _listing([p.message for p in problems])
        return Rendered(
            objects=None,
            conditions=[
                ConditionUpdate(READY, False, problems[0].reason, f"not applied: {listed}"),
                ConditionUpdate(INVALID, True, problems[0].reason, listed),
            ],
        )
    where = f"EnvoyFilter {ef['metadata']['namespace']}/{ef['metadata']['name']}"
    return Rendered(
        objects=[ef],
        conditions=[
            ConditionUpdate(READY, True, "Rendered", f"{where}: {_in_force(cr, in_force)}"),
            ConditionUpdate(INVALID, False, "Valid", ""),
        ],
    )


def _in_force(cr: Mapping[str, Any], in_force: list[str]) -> str:
    if not in_force:
        return "no plugin enabled" if cr.get("kind") == PLUGIN_MANAGER.kind else "no plugin enabled on any target"
    what = "HTTP filter" if cr.get("kind") == PLUGIN_MANAGER.kind else "per-route setting"
    return f"{len(in_force)} {what}{'s' if len(in_force) > 1 else ''} ({_listing(in_force)})"


def _listing(items: list[str]) -> str:
    shown = "; ".join(items[:MAX_LISTED])
    more = len(items) - MAX_LISTED
    return shown + (f"; and {more} more" if more > 0 else "")


_BRANCH = re.compile(r"\.(literal|int|str|bool|float|function-[a-z-]+)\[[^\]]*\]|\.(int|str|bool|float)(?=:)")


def _collapse_unions(lines: list[str]) -> list[str]:
    """One line per field: pydantic reports each branch of a union (``'Outbound'`` or ``0``) apart."""
    by_path: dict[str, list[str]] = {}
    for line in lines:
        path, _, message = _BRANCH.sub("", line).partition(": ")
        by_path.setdefault(path, []).append(message)
    out = []
    for path, messages in by_path.items():
        first, rest = messages[0], [m.removeprefix("Input should be ") for m in messages[1:]]
        out.append(f"{path}: {first}" + (f" (or {', or '.join(rest)})" if rest else ""))
    return out


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: set[Problem] = set()
    out = []
    for p in problems:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out
