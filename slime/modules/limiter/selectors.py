"""Which workloads, pods and subsets a SmartLimiter is about, and the names of its EnvoyFilters. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from slime.framework.expr import ExpressionError, placeholders
from slime.modules.limiter import api
from slime.modules.limiter.api import BASE_SET


def envoyfilter_name(name: str, namespace: str, set_name: str = BASE_SET) -> str:
    if set_name == BASE_SET:
        return f"{name}.{namespace}.ratelimit"
    return f"{name}.{namespace}.{set_name}.ratelimit"


def spec_dict(cr: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = cr.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def required_metrics(cr: Mapping[str, Any]) -> set[str]:
    """Metric keys the conditions and quotas refer to (unparsable templates are skipped)."""
    keys: set[str] = set()
    sets = spec_dict(cr).get("sets")
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


def service_selector(service: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not service:
        return None
    return dict((service.get("spec") or {}).get("selector") or {})


def pod_selector(
    cr: Mapping[str, Any], service: Mapping[str, Any] | None, host_selector: Mapping[str, str] | None = None
) -> dict[str, str] | None:
    """Labels of the pods whose count is ``_base.pod`` (None: no pods to count)."""
    spec = spec_dict(cr)
    ws = spec.get("workloadSelector") or {}
    if ws:
        return dict(ws)
    if spec.get("gateway"):
        return None
    if spec.get("host"):
        return {k: v or "default" for k, v in host_selector.items()} if host_selector else None
    return service_selector(service) or None


def pod_namespace(cr: Mapping[str, Any], istio_namespace: str = "istio-system") -> str | None:
    """Namespace to count pods in; None = all (a workloadSelector in the istio root namespace)."""
    ns = (cr.get("metadata") or {}).get("namespace", "default")
    if (spec_dict(cr).get("workloadSelector") or {}) and ns == istio_namespace:
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
    spec = spec_dict(cr)
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
