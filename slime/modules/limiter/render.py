"""SmartLimiter + cluster context -> EnvoyFilters, RLS entries and status. Pure.

No Kubernetes client, no clock, no environment: the controller gathers the context
(Service, DestinationRules, metric values, config) and applies the result.

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
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import ValidationError

from slime.framework.expr import (
    ExpressionError,
    MissingMetricError,
    evaluate_condition,
    evaluate_quota,
    placeholders,
)
from slime.modules.limiter import api
from slime.modules.limiter.api import (
    BASE_SET,
    ActiveDescriptor,
    LimiterConfig,
    SmartLimitDescriptor,
    SmartLimiterSpec,
)
from slime.modules.limiter.descriptors import activate, is_global, rls_descriptor
from slime.modules.limiter.patches import config_patches

REV_LABEL = "istio.io/rev"
ENVOYFILTER_API = "networking.istio.io/v1alpha3"
READY, METRICS = "Ready", "MetricsAvailable"
UINT32_MAX = 2**32 - 1


class Problem(NamedTuple):
    """Input for a status condition: (type, status, reason, message)."""

    type: str
    status: str
    reason: str
    message: str


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


def envoyfilter_name(name: str, namespace: str, set_name: str = BASE_SET) -> str:
    if set_name == BASE_SET:
        return f"{name}.{namespace}.ratelimit"
    return f"{name}.{namespace}.{set_name}.ratelimit"


def rev_in_scope(rev: str, istio_rev: str, strict_rev: bool) -> bool:
    """Whether an object labelled istio.io/rev=rev is managed by this deployment."""
    if not istio_rev:
        return True
    if not rev and not strict_rev:
        return True
    return rev in [r.strip() for r in istio_rev.split(",")]


def _spec_dict(cr: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = cr.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def required_metrics(cr: Mapping[str, Any]) -> set[str]:
    """Metric keys the conditions and quotas refer to (unparsable templates are skipped)."""
    keys: set[str] = set()
    sets = _spec_dict(cr).get("sets")
    for item in (sets or {}).values() if isinstance(sets, Mapping) else ():
        for d in (item or {}).get("descriptor") or []:
            action = d.get("action") or {}
            for text in (d.get("condition"), action.get("quota")):
                if isinstance(text, str):
                    try:
                        keys |= placeholders(text)
                    except ExpressionError:
                        pass
    return keys


def _service_selector(service: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not service:
        return None
    return dict((service.get("spec") or {}).get("selector") or {})


def _base_selector(spec: SmartLimiterSpec, ctx: LimiterContext) -> tuple[dict[str, str] | None, str]:
    """Workload labels of the EnvoyFilter (may be empty for gateways), or None and why not."""
    if spec.gateway or spec.workloadSelector:
        return dict(spec.workloadSelector), ""
    if spec.host:
        if ctx.host_selector is None:
            return None, f"no mesh service found for host {spec.host!r}"
        labels = {k: v or "default" for k, v in ctx.host_selector.items()}
        return (labels, "") if labels else (None, f"mesh service {spec.host!r} has no label selector")
    selector = _service_selector(ctx.service)
    if selector is None:
        return None, "Service not found (a SmartLimiter limits the Service with its name and namespace)"
    if not selector:
        return None, "the Service has no selector; set spec.workloadSelector"
    return selector, ""


def pod_selector(
    cr: Mapping[str, Any], service: Mapping[str, Any] | None, host_selector: Mapping[str, str] | None = None
) -> dict[str, str] | None:
    """Labels of the pods whose count is ``_base.pod`` (None: no pods to count)."""
    spec = _spec_dict(cr)
    ws = spec.get("workloadSelector") or {}
    if ws:
        return dict(ws)
    if spec.get("gateway"):
        return None
    if spec.get("host"):
        return {k: v or "default" for k, v in host_selector.items()} if host_selector else None
    return _service_selector(service) or None


def pod_namespace(cr: Mapping[str, Any], istio_namespace: str = "istio-system") -> str | None:
    """Namespace to count pods in; None = all (a workloadSelector in the istio root namespace)."""
    ns = (cr.get("metadata") or {}).get("namespace", "default")
    if (_spec_dict(cr).get("workloadSelector") or {}) and ns == istio_namespace:
        return None
    return str(ns)


def _fqdn(host: str, namespace: str) -> str:
    return host if "." in host else f"{host}.{namespace}.svc.cluster.local"


def subsets(
    cr: Mapping[str, Any], destination_rules: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, str]]:
    """DestinationRule subsets (name -> labels) of the limited host, in a stable order.

    Only inbound limiters without workloadSelector have subsets, as upstream.
    """
    meta = cr.get("metadata") or {}
    name, ns = meta.get("name", ""), meta.get("namespace", "default")
    spec = _spec_dict(cr)
    if spec.get("gateway") or spec.get("workloadSelector") or _raw_outbound(spec):
        return {}
    host = _fqdn(spec.get("host") or f"{name}.{ns}.svc.cluster.local", ns)
    out: dict[str, dict[str, str]] = {}

    def key(dr: Mapping[str, Any]) -> tuple[str, str]:
        m = dr.get("metadata") or {}
        return (m.get("namespace", ""), m.get("name", ""))

    for dr in sorted(destination_rules, key=key):
        dr_spec = dr.get("spec") or {}
        if _fqdn(dr_spec.get("host", ""), key(dr)[0] or ns) != host:
            continue
        for sub in dr_spec.get("subsets") or []:
            sub_name = sub.get("name")
            if sub_name and sub_name != BASE_SET and sub_name not in out:
                out[sub_name] = dict(sub.get("labels") or {})
    return out


def _raw_outbound(spec: Mapping[str, Any]) -> bool:
    default = (spec.get("target") or {}).get("direction")
    sets = spec.get("sets") or {}
    for item in sets.values() if isinstance(sets, Mapping) else ():
        for d in (item or {}).get("descriptor") or []:
            target = d.get("target")
            if (target.get("direction") if target is not None else default) == api.OUTBOUND:
                return True
    return False


def _validation_message(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"spec.{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _evaluate(
    d: SmartLimitDescriptor,
    metrics: Mapping[str, str],
    where: str,
    problems: list[Problem],
    missing: set[str],
) -> int | None:
    """The quota if the descriptor is active now, else None (problems recorded)."""
    try:
        if not evaluate_condition(d.condition, metrics):
            return None
        quota = evaluate_quota(d.action.quota, metrics)
    except MissingMetricError as e:
        missing.update(e.missing)
        problems.append(Problem(METRICS, "False", "MissingMetric", f"{where}: {e}"))
        return None
    except ExpressionError as e:
        problems.append(Problem(READY, "False", "InvalidExpression", f"{where}: {e}"))
        return None
    low = 0 if d.action.strategy == api.GLOBAL else 1
    if not low <= quota <= UINT32_MAX:
        problems.append(
            Problem(
                READY, "False", "InvalidQuota", f"{where}: quota is {quota}, must be in {low}..{UINT32_MAX}"
            )
        )
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
        spec = SmartLimiterSpec.model_validate(_spec_dict(cr))
    except ValidationError as e:
        problem = Problem(READY, "False", "InvalidSpec", _validation_message(e))
        return LimiterResult(valid=False, status=status, problems=[problem])

    problems: list[Problem] = []
    selector, why = _base_selector(spec, ctx)
    if selector is None:
        problems.append(Problem(READY, "False", "NoWorkload", why))
        return LimiterResult(
            status=status, problems=problems, incomplete_sets=frozenset(spec.sets) | {BASE_SET}
        )

    subset_labels = subsets(cr, ctx.destination_rules)
    order = [*subset_labels, BASE_SET]
    for unknown in sorted(set(spec.sets) - set(order)):
        problems.append(
            Problem(
                READY, "False", "UnknownSet", f"set {unknown!r} is neither _base nor a DestinationRule subset"
            )
        )

    envoyfilters: list[dict[str, Any]] = []
    rls: list[dict[str, Any]] = []
    missing: set[str] = set()
    incomplete: set[str] = set()
    for set_name in order:
        if set_name not in spec.sets:
            continue
        active: list[ActiveDescriptor] = []
        for i, d in enumerate(spec.sets[set_name].descriptor):
            seen = len(problems)
            quota = _evaluate(d, ctx.metrics, f"spec.sets.{set_name}.descriptor.{i}", problems, missing)
            if any(p.type == METRICS for p in problems[seen:]):
                incomplete.add(set_name)
            if quota is not None:
                active += activate(d, quota)
        if not active:
            continue
        patches, messages = config_patches(active, spec.target, spec.gateway, name, ns, ctx.config)
        problems += [Problem(READY, "False", "RateLimitServiceNotConfigured", m) for m in messages]
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
