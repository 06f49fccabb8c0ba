"""Context of one SmartLimiter from a set of cluster objects. Pure.

The operator calls these with the objects of its in-memory indexes, ``slime render``
with the objects read from files, so both render from exactly the same context.
Objects are Kubernetes API dicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from slime.framework.config import GlobalConfig
from slime.framework.metrics import pods_by_set
from slime.modules.limiter.api import LimiterConfig
from slime.modules.limiter.render import LimiterContext, pod_namespace, pod_selector, subsets

Obj = Mapping[str, Any]


def _meta(obj: Obj) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _ns(obj: Obj) -> str:
    return str(_meta(obj).get("namespace") or "default")


def find_service(cr: Obj, services: Sequence[Obj]) -> Obj | None:
    """The Service a SmartLimiter limits: same name and namespace."""
    name, ns = _meta(cr).get("name"), _ns(cr)
    return next((s for s in services if _meta(s).get("name") == name and _ns(s) == ns), None)


def host_selector(cr: Obj, service_entries: Sequence[Obj], globals_: GlobalConfig) -> dict[str, str] | None:
    """Labels of the mesh service named by ``spec.host``, as upstream's config controller builds them:
    the ServiceEntry's workloadSelector, else its labels whose keys are in ``misc.seLabelSelectorKeys``.
    A ServiceEntry in the SmartLimiter's namespace wins; None if no ServiceEntry has the host."""
    host = (cr.get("spec") or {}).get("host")
    if not host:
        return None
    ns = _ns(cr)
    matching = sorted(
        (se for se in service_entries if host in ((se.get("spec") or {}).get("hosts") or [])),
        key=lambda se: (_ns(se) != ns, _ns(se), str(_meta(se).get("name", ""))),
    )
    if not matching:
        return None
    se = matching[0]
    selector = ((se.get("spec") or {}).get("workloadSelector") or {}).get("labels") or {}
    if selector:
        return {str(k): str(v) for k, v in selector.items()}
    keys = {k.strip() for k in globals_.misc.get("seLabelSelectorKeys", "app").split(",") if k.strip()}
    return {str(k): str(v) for k, v in (_meta(se).get("labels") or {}).items() if k in keys}


def same_namespace(cr: Obj, objects: Sequence[Obj]) -> list[Obj]:
    ns = _ns(cr)
    return [o for o in objects if _ns(o) == ns]


def limiter_pods(
    cr: Obj,
    service: Obj | None,
    pods: Sequence[Obj],
    destination_rules: Sequence[Obj],
    host_labels: Mapping[str, str] | None,
    istio_namespace: str,
) -> dict[str, list[str]] | None:
    """Ready pod names per set (``_base`` and each DestinationRule subset), for pod counts and for
    the ``$pod_name`` of Prometheus queries; None when the limiter selects no pods (gateway).
    ``destination_rules`` as given to the render (``same_namespace``)."""
    selector = pod_selector(cr, service, host_labels)
    if selector is None:
        return None
    ns = pod_namespace(cr, istio_namespace)
    in_scope = [p for p in pods if ns is None or _ns(p) == ns]
    return pods_by_set(in_scope, selector, subsets(cr, destination_rules))


def limiter_context(
    cr: Obj,
    services: Sequence[Obj],
    pods: Sequence[Obj],
    destination_rules: Sequence[Obj],
    metrics: Mapping[str, Any],
    config: LimiterConfig,
    globals_: GlobalConfig,
    service_entries: Sequence[Obj] = (),
    pass_label_regex: str = "",
) -> tuple[LimiterContext, dict[str, str]]:
    """The render context of ``cr`` and the metric values in it.

    Pod counts (``<set>.pod``) come from ``pods``, always: they are never taken from ``metrics``
    (Prometheus or ``--metrics``), so there is one source for them. With ``disableAdaptive`` the
    operator queries no Prometheus, so ``metrics`` is not used at all. ``globals_`` must have
    defaults filled (``ModuleConfig.globals``).
    """
    service = find_service(cr, services)
    drs = same_namespace(cr, destination_rules)
    host_labels = host_selector(cr, service_entries, globals_)
    values: dict[str, str] = {}
    if not config.disableAdaptive:
        values.update({str(k): str(v) for k, v in metrics.items() if not is_pod_count(str(k))})
    by_set = limiter_pods(cr, service, pods, drs, host_labels, globals_.istioNamespace)
    values.update({f"{s}.pod": str(len(names)) for s, names in (by_set or {}).items()})
    ctx = LimiterContext(
        service=service,
        destination_rules=drs,
        metrics=values,
        config=config,
        istio_namespace=globals_.istioNamespace,
        istio_rev=globals_.istioRev,
        strict_rev=globals_.strictRev,
        host_selector=host_labels,
        pass_label_regex=pass_label_regex,
    )
    return ctx, values


def is_pod_count(key: str) -> bool:
    """``_base.pod``, ``v1.pod``: keys that only the Pods may give."""
    return key.endswith(".pod")
