"""SmartLimiter + cluster context -> EnvoyFilters, RLS entries, status and conditions. Pure.

No Kubernetes client, no clock, no environment: ``context.context`` gathers the context
(Service, DestinationRules, metric values, config), the reconciler applies the result.
``render`` decides everything a user sees in the status, ``Ready`` and ``MetricsAvailable``
included, so the goldens cover it.

Differences from upstream, on purpose (all else matches its output exactly):

* DestinationRule subsets of the service produce ``<name>.<ns>.<subset>.ratelimit``
  EnvoyFilters (upstream stopped watching DestinationRules, so only ``_base`` worked).
* A metric missing from the context is a reported problem (the descriptor is left out
  and its set marked incomplete) instead of silently 0. So an inbound limiter whose
  expressions use no metric renders without any Running pod.
* Outbound/gateway limiters are not refused when adaptive mode is on.
* Unusable output is refused with a problem instead of being sent to Envoy: a local
  quota < 1, a global limit without ``rls`` config, a Service without selector.
* Identical route actions in one route group are emitted once: a local source-IP list
  gives one ``remote_address`` action, not one per IP (Envoy took a token per copy).
* Several HTTP filter contexts (mixed inbound/outbound) each get their filter insert;
  RLS placeholders do not stop at the first virtual-host-level group; a global
  descriptor's RLS entry nests exactly like its route actions.
* Sets that are not a subset are reported (UnknownSet) rather than ignored.
* A subset whose name cannot be part of an object name is reported (InvalidName), never
  written: the name goes into the EnvoyFilter's name and so into a request path.
* A quota is checked even while its condition is false: a broken quota is reported at once,
  not on the day the condition first holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from slime.framework.conditions import ConditionUpdate, with_ready
from slime.framework.expr import ExpressionError, MissingMetricError, check_quota, evaluate_condition, evaluate_quota
from slime.framework.module import Rendered, out_of_scope
from slime.framework.names import name_problem
from slime.framework.revision import REV_LABEL, rev_in_scope
from slime.framework.validation import describe
from slime.modules.limiter import api
from slime.modules.limiter.api import BASE_SET, ActiveDescriptor, LimiterConfig, SmartLimitDescriptor, SmartLimiterSpec
from slime.modules.limiter.descriptors import activate, is_global, rls_descriptor
from slime.modules.limiter.patches import config_patches
from slime.modules.limiter.selectors import envoyfilter_name, service_selector, spec_dict, subsets

ENVOYFILTER_API = "networking.istio.io/v1alpha3"
READY, METRICS = "Ready", "MetricsAvailable"
UINT32_MAX = 2**32 - 1
Problem = ConditionUpdate  # (type, status, reason, message)


@dataclass(frozen=True)
class LimiterContext:
    service: Mapping[str, Any] | None = None  # the Service <name>.<ns>, if it exists
    destination_rules: Sequence[Mapping[str, Any]] = ()  # DestinationRules of the namespace
    metrics: Mapping[str, str] = field(default_factory=dict)  # "_base.pod" -> "3", "_base.cpu.sum" -> "120"
    config: LimiterConfig = field(default_factory=LimiterConfig)
    istio_namespace: str = "istio-system"
    istio_rev: str = ""  # comma list; "" = every revision
    strict_rev: bool = False
    host_selector: Mapping[str, str] | None = None  # labels of the mesh service for spec.host
    pass_label_regex: str = ""  # SmartLimiter labels matching it are copied to the EnvoyFilters
    handlers: frozenset[str] = frozenset()  # Prometheus handlers of the module config
    metrics_error: tuple[str, str] | None = None  # (reason, message): Prometheus could not be read
    uses_prometheus: bool = False  # its expressions need a metric other than pod counts


@dataclass(frozen=True)
class LimiterResult:
    envoyfilters: list[dict[str, Any]] = field(default_factory=list)  # the complete desired set
    rls_descriptors: list[dict[str, Any]] = field(default_factory=list)  # for the RLS config.yaml
    status: dict[str, Any] = field(default_factory=dict)  # ratelimitStatus, metricStatus
    problems: list[Problem] = field(default_factory=list)
    valid: bool = True  # False: bad spec, write nothing (as upstream)
    in_scope: bool = True  # False: another revision's object, leave everything alone
    sets: list[str] = field(default_factory=list)  # sets rendered this time, in order
    incomplete_sets: frozenset[str] = frozenset()  # could not be fully evaluated: keep what is applied
    missing_metrics: frozenset[str] = frozenset()


def _base_selector(spec: SmartLimiterSpec, ctx: LimiterContext) -> tuple[dict[str, str] | None, str]:
    """Workload labels of the EnvoyFilter (may be empty for gateways), or None and why not."""
    if spec.gateway or spec.workloadSelector:
        return dict(spec.workloadSelector), ""
    if spec.host:
        if ctx.host_selector is None:
            return None, f"no mesh service found for host {spec.host!r}"
        labels = {k: v or "default" for k, v in ctx.host_selector.items()}
        return (labels, "") if labels else (None, f"mesh service {spec.host!r} has no label selector")
    selector = service_selector(ctx.service)
    if selector is None:
        return None, "Service not found (a SmartLimiter limits the Service with its name and namespace)"
    if not selector:
        return None, "the Service has no selector; set spec.workloadSelector"
    return selector, ""


def _missing(key: str, ctx: LimiterContext) -> tuple[str, str, str]:
    """(condition type, reason, message) for a metric the expressions need and the context lacks."""
    set_name, _, metric = key.partition(".")
    if metric == "pod":
        return READY, "NoRunningPod", f"no Running pod in set {set_name} ({{{{.{key}}}}})"
    handler = key if key in ctx.handlers else metric  # `<set>.<handler>`, or `<handler>` without $pod_name
    if ctx.config.disableAdaptive:
        return METRICS, "AdaptiveDisabled", f"{{{{.{key}}}}} needs Prometheus, but general.disableAdaptive is set"
    if handler not in ctx.handlers:
        return (METRICS, "NoHandler",
                f"{{{{.{key}}}}}: no Prometheus handler {handler!r} in the module config (metric.prometheus.handlers)")
    return METRICS, "NoData", f"{{{{.{key}}}}}: Prometheus returned no data for it"


def _missing_problem(key: str, ctx: LimiterContext, where: str) -> Problem:
    type_, reason, message = _missing(key, ctx)
    return Problem(type_, False, reason, f"{where}: {message}")


def _evaluate(
    d: SmartLimitDescriptor,
    ctx: LimiterContext,
    where: str,
    problems: list[Problem],
    missing: set[str],
) -> int | None:
    """The quota if the descriptor is active now, else None (problems recorded)."""
    active: bool | None = None
    try:
        active = evaluate_condition(d.condition, ctx.metrics)
    except MissingMetricError as e:
        missing.update(e.missing)
        problems += [_missing_problem(k, ctx, f"{where}.condition") for k in e.missing]
    except ExpressionError as e:
        problems.append(Problem(READY, False, "InvalidExpression", f"{where}.condition: {e}"))
    if not active:
        try:  # a broken quota is reported even while the condition is false
            check_quota(d.action.quota)
        except ExpressionError as e:
            problems.append(Problem(READY, False, "InvalidExpression", f"{where}.action.quota: {e}"))
        return None
    try:
        quota = evaluate_quota(d.action.quota, ctx.metrics)
    except MissingMetricError as e:
        missing.update(e.missing)
        problems += [_missing_problem(k, ctx, f"{where}.action.quota") for k in e.missing]
        return None
    except ExpressionError as e:
        problems.append(Problem(READY, False, "InvalidExpression", f"{where}.action.quota: {e}"))
        return None
    low = 0 if d.action.strategy == api.GLOBAL else 1
    if not low <= quota <= UINT32_MAX:
        problems.append(Problem(READY, False, "InvalidQuota",
                                f"{where}.action.quota: quota is {quota}, must be in {low}..{UINT32_MAX}"))
        return None
    return quota


def _labels(meta: Mapping[str, Any], pass_regex: str) -> dict[str, str]:
    src = meta.get("labels") or {}
    out = {k: v for k, v in src.items() if pass_regex and re.search(pass_regex, k)}
    if REV_LABEL in src:
        out[REV_LABEL] = src[REV_LABEL]
    return dict(sorted(out.items()))


def _envoyfilter(
    meta: Mapping[str, Any], ctx: LimiterContext, set_name: str, selector: dict[str, str], patches: list[dict]
) -> dict[str, Any]:
    name, ns = meta["name"], meta.get("namespace", "default")
    metadata: dict[str, Any] = {"name": envoyfilter_name(name, ns, set_name), "namespace": ns}
    labels = _labels(meta, ctx.pass_label_regex)
    if labels:
        metadata["labels"] = labels
    if meta.get("uid"):
        metadata["ownerReferences"] = [
            {
                "apiVersion": f"{api.GROUP}/{api.VERSION}",
                "kind": api.KIND,
                "name": name,
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    spec: dict[str, Any] = {}
    if selector:
        spec["workloadSelector"] = {"labels": dict(sorted(selector.items()))}
    spec["configPatches"] = patches
    return {"apiVersion": ENVOYFILTER_API, "kind": "EnvoyFilter", "metadata": metadata, "spec": spec}


def _dump(d: ActiveDescriptor) -> dict[str, Any]:
    return d.model_dump(by_alias=True, exclude_defaults=True)


def render_smartlimiter(cr: Mapping[str, Any], ctx: LimiterContext) -> LimiterResult:
    meta = cr.get("metadata") or {}
    name, ns = meta.get("name", ""), meta.get("namespace", "default")
    metric_status = {k: str(v) for k, v in sorted(ctx.metrics.items())}
    status: dict[str, Any] = {"ratelimitStatus": {}, "metricStatus": metric_status}
    rev = (meta.get("labels") or {}).get(REV_LABEL, "")
    if not rev_in_scope(rev, ctx.istio_rev, ctx.strict_rev):
        return LimiterResult(in_scope=False, status=status)
    try:
        spec = SmartLimiterSpec.model_validate(spec_dict(cr))
    except ValidationError as e:
        problem = Problem(READY, False, "InvalidSpec", "; ".join(describe(e)))
        return LimiterResult(valid=False, status=status, problems=[problem])

    problems: list[Problem] = []
    selector, why = _base_selector(spec, ctx)
    if selector is None:
        problems.append(Problem(READY, False, "NoWorkload", why))
        return LimiterResult(
            status=status, problems=problems, incomplete_sets=frozenset(spec.sets) | {BASE_SET}
        )

    subset_labels = subsets(cr, ctx.destination_rules)
    order = [*subset_labels, BASE_SET]
    for unknown in sorted(set(spec.sets) - set(order)):
        problems.append(Problem(READY, False, "UnknownSet",
                                f"spec.sets.{unknown}: neither _base nor a subset of a DestinationRule of the host"))

    envoyfilters: list[dict[str, Any]] = []
    rls: list[dict[str, Any]] = []
    missing: set[str] = set()
    incomplete: set[str] = set()
    for set_name in order:
        if set_name not in spec.sets:
            continue
        bad_name = name_problem(envoyfilter_name(name, ns, set_name), "EnvoyFilter name")
        if bad_name:  # a subset name comes from a DestinationRule, not from our schema
            problems.append(Problem(READY, False, "InvalidName", f"spec.sets.{set_name}: {bad_name}"))
            continue
        active: list[ActiveDescriptor] = []
        for i, d in enumerate(spec.sets[set_name].descriptor):
            before = len(missing)
            quota = _evaluate(d, ctx, f"spec.sets.{set_name}.descriptor[{i}]", problems, missing)
            if len(missing) > before or (missing and _needs(d, missing)):
                incomplete.add(set_name)
            if quota is not None:
                active += activate(d, quota)
        if not active:
            continue
        patches, messages = config_patches(active, spec.target, spec.gateway, name, ns, ctx.config)
        problems += [Problem(READY, False, "RateLimitServiceNotConfigured", m) for m in messages]
        set_selector = {**selector, **subset_labels.get(set_name, {})}
        envoyfilters.append(_envoyfilter(meta, ctx, set_name, set_selector, patches))
        status["ratelimitStatus"][set_name] = {"descriptor": [_dump(a) for a in active]}
        if not ctx.config.disableGlobalRateLimit:
            for a in active:
                entry = rls_descriptor(a, name, ns) if is_global(a) else None
                if entry is not None and entry not in rls:  # same Id in two subsets: one entry
                    rls.append(entry)

    return LimiterResult(
        envoyfilters=envoyfilters,
        rls_descriptors=rls,
        status=status,
        problems=problems,
        sets=[s for s in order if s in spec.sets],
        incomplete_sets=frozenset(incomplete),
        missing_metrics=frozenset(missing),
    )


def _needs(d: SmartLimitDescriptor, missing: set[str]) -> bool:
    text = f"{d.condition} {d.action.quota}"
    return any("." + key in text for key in missing)


def _all_names(cr: Mapping[str, Any]) -> frozenset[str]:
    """Names of every EnvoyFilter the CR may own (its sets), to keep them as they are."""
    meta = cr.get("metadata") or {}
    sets = spec_dict(cr).get("sets")
    names = {BASE_SET, *(sets if isinstance(sets, Mapping) else ())}
    return frozenset(envoyfilter_name(str(meta.get("name", "")), str(meta.get("namespace", "default")), s)
                     for s in names)


def render(cr: Mapping[str, Any], ctx: LimiterContext) -> Rendered:
    """The module contract's render: objects, status fields and conditions of one SmartLimiter.

    Sets that could not be evaluated (a missing metric, no Running pod) keep the EnvoyFilter in
    force (``keep``); so does everything while Prometheus cannot be read. ``MetricsAvailable``
    is there only for a limiter whose expressions use Prometheus; ``Ready`` sums up.
    """
    if ctx.metrics_error is not None:
        reason, message = ctx.metrics_error
        return Rendered(objects=[], keep=_all_names(cr), conditions=[
            ConditionUpdate(READY, False, "MetricsUnavailable", f"the limits in force are kept: {message}"),
            ConditionUpdate(METRICS, False, reason, message),
        ])
    result = render_smartlimiter(cr, ctx)
    if not result.in_scope:
        return out_of_scope()
    problems = list(result.problems)
    if ctx.uses_prometheus and not any(p.type == METRICS for p in problems):
        problems.append(Problem(METRICS, True, "MetricsRead", "every metric the expressions use has a value"))
    mesh_wide = _mesh_wide(cr, ctx)
    if mesh_wide:
        problems.append(Problem("AppliesMeshWide", True, "RootNamespace", mesh_wide))
    if not result.valid:
        return Rendered(objects=None, conditions=with_ready(problems, "", ""))
    keep = frozenset(envoyfilter_name(str(cr["metadata"]["name"]), str(cr["metadata"].get("namespace", "default")),
                                      s) for s in result.incomplete_sets)
    objects = [ef for ef in result.envoyfilters if ef["metadata"]["name"] not in keep]
    summary = f"{len(objects)} EnvoyFilter(s) in force" + (f"; {mesh_wide}" if mesh_wide else "")
    return Rendered(
        objects=objects,
        status=result.status,
        conditions=with_ready(problems, "Rendered", summary),
        keep=keep,
        shared=None if result.incomplete_sets else result.rls_descriptors,
    )


def _mesh_wide(cr: Mapping[str, Any], ctx: LimiterContext) -> str:
    """Istio's rule: an EnvoyFilter without workloadSelector in the root namespace applies to every
    proxy of its context; for a gateway limiter, to every gateway in the mesh."""
    spec = spec_dict(cr)
    ns = (cr.get("metadata") or {}).get("namespace", "default")
    if ns == ctx.istio_namespace and spec.get("gateway") and not spec.get("workloadSelector"):
        return "applies to every gateway in the mesh (Istio root namespace, no workloadSelector)"
    return ""
