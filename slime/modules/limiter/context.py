"""Context of one SmartLimiter from a view of the cluster. Pure.

``context`` and ``queries`` are the module contract's functions: the operator calls them with
a view of its informers' copies, ``slime render`` with a view of the objects read from files,
so both render from exactly the same context. The helpers below take Kubernetes API dicts; a
collection of them is an iterable of objects or an index (a mapping from any key to iterables
of objects).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from slime.framework.config import GlobalConfig
from slime.framework.kinds import DESTINATION_RULE, POD, SERVICE, SERVICE_ENTRY
from slime.framework.metrics import Handler, Query, build_queries, pods_by_set, ready_pods
from slime.framework.module import ClusterView, Metrics, Settings
from slime.modules.limiter.api import LimiterConfig
from slime.modules.limiter.render import LimiterContext
from slime.modules.limiter.selectors import pod_namespace, pod_selector, required_metrics, subsets

Obj = Mapping[str, Any]
Objects = Iterable[Obj] | Mapping[Any, Iterable[Obj]]


def _flat(objects: Objects) -> list[Obj]:
    if isinstance(objects, Mapping):
        return [o for group in objects.values() for o in group]
    return list(objects)


def _meta(obj: Obj) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _ns(obj: Obj) -> str:
    return str(_meta(obj).get("namespace") or "default")


def find_service(cr: Obj, services: Objects) -> Obj | None:
    """The Service a SmartLimiter limits: same name and namespace."""
    name, ns = _meta(cr).get("name"), _ns(cr)
    return next((s for s in _flat(services) if _meta(s).get("name") == name and _ns(s) == ns), None)


def host_selector(cr: Obj, service_entries: Objects, globals_: GlobalConfig) -> dict[str, str] | None:
    """Labels of the mesh service named by ``spec.host``, as upstream's config controller builds them:
    the ServiceEntry's workloadSelector, else its labels whose keys are in ``misc.seLabelSelectorKeys``.
    A ServiceEntry in the SmartLimiter's namespace wins; None if no ServiceEntry has the host."""
    host = (cr.get("spec") or {}).get("host")
    if not host:
        return None
    ns = _ns(cr)
    matching = sorted(
        (se for se in _flat(service_entries) if host in ((se.get("spec") or {}).get("hosts") or [])),
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


def _pods_by_set(
    cr: Obj,
    service: Obj | None,
    pods: Objects,
    drs: list[Obj],
    host_labels: Mapping[str, str] | None,
    istio_namespace: str,
) -> dict[str, list[str]]:
    """Ready pod names per set (``_base`` and each DestinationRule subset); {} when the limiter
    selects no pods (a gateway without workloadSelector, a missing Service)."""
    selector = pod_selector(cr, service, host_labels)
    if selector is None:
        return {}
    ns = pod_namespace(cr, istio_namespace)
    in_scope = [p for p in _flat(pods) if ns is None or _ns(p) == ns]
    return pods_by_set(in_scope, selector, subsets(cr, drs))


def counted_pods(cr: Obj, services: Objects, pods: Objects, globals_: GlobalConfig,
                 service_entries: Objects = ()) -> list[Obj]:
    """The pods ``cr`` may count in any set: in its scope, Running, matching its selector. Contexts
    and queries from these alone equal those from all ``pods``: the operator narrows a namespace's
    pods to them once per evaluation instead of scanning them all for each use."""
    selector = pod_selector(cr, find_service(cr, services), host_selector(cr, service_entries, globals_))
    if selector is None:
        return []
    ns = pod_namespace(cr, globals_.istioNamespace)
    return ready_pods((p for p in _flat(pods) if ns is None or _ns(p) == ns), selector)


def limiter_pods(
    cr: Obj,
    services: Objects,
    pods: Objects,
    destination_rules: Objects,
    globals_: GlobalConfig,
    service_entries: Objects = (),
) -> dict[str, list[str]]:
    """Ready pod names per set, as counted for ``<set>.pod`` and put in ``$pod_name``."""
    drs = [d for d in _flat(destination_rules) if _ns(d) == _ns(cr)]
    host_labels = host_selector(cr, service_entries, globals_)
    return _pods_by_set(cr, find_service(cr, services), pods, drs, host_labels, globals_.istioNamespace)


def prometheus_queries(
    cr: Obj,
    services: Objects,
    pods: Objects,
    destination_rules: Objects,
    config: LimiterConfig,
    globals_: GlobalConfig,
    handlers: Mapping[str, Handler],
    service_entries: Objects = (),
) -> dict[str, Query]:
    """The Prometheus queries for ``cr`` (none with ``disableAdaptive``): the template of each
    handler its expressions refer to, with the SmartLimiter's namespace, name and pods per set.
    Handlers it does not use are not queried (upstream queried every handler for every limiter)."""
    required = required_metrics(cr)
    used = {h: handler for h, handler in handlers.items() if any(k == h or k.endswith("." + h) for k in required)}
    if config.disableAdaptive or not used:
        return {}
    meta = _meta(cr)
    by_set = limiter_pods(cr, services, pods, destination_rules, globals_, service_entries)
    queries = build_queries(used, namespace=_ns(cr), name=str(meta.get("name", "")), pods=by_set)
    return {key: query for key, query in queries.items() if key in required}


def limiter_context(
    cr: Obj,
    services: Objects,
    pods: Objects,
    destination_rules: Objects,
    metrics: Mapping[str, Any],
    config: LimiterConfig,
    globals_: GlobalConfig,
    service_entries: Objects = (),
    pass_label_regex: str = "",
    handlers: Iterable[str] = (),
) -> LimiterContext:
    """The render context of ``cr``; ``ctx.metrics`` holds the metric values it renders with.

    Pod counts (``<set>.pod``) come from ``pods``, always: they are never taken from ``metrics``
    (Prometheus or ``--metrics``), so there is one source for them. A set without Running pods
    has no count (as upstream): ``100/{{._base.pod}}`` is then a missing metric, which keeps the
    applied limit, not a division by zero, which would drop it. With ``disableAdaptive`` the
    operator queries no Prometheus, so ``metrics`` is not used at all. ``globals_`` must have
    defaults filled (``ModuleConfig.globals``). DestinationRules count in the SmartLimiter's
    namespace only.
    """
    service = find_service(cr, services)
    drs = [d for d in _flat(destination_rules) if _ns(d) == _ns(cr)]
    host_labels = host_selector(cr, service_entries, globals_)
    values: dict[str, str] = {}
    if not config.disableAdaptive:
        values.update({str(k): str(v) for k, v in metrics.items() if not is_pod_count(str(k))})
    by_set = _pods_by_set(cr, service, pods, drs, host_labels, globals_.istioNamespace)
    values.update({f"{s}.pod": str(len(names)) for s, names in by_set.items() if names})
    return LimiterContext(
        service=service,
        destination_rules=drs,
        metrics=values,
        config=config,
        istio_namespace=globals_.istioNamespace,
        istio_rev=globals_.istioRev,
        strict_rev=globals_.strictRev,
        host_selector=host_labels,
        pass_label_regex=pass_label_regex,
        handlers=frozenset(handlers),
        uses_prometheus=any(not is_pod_count(k) for k in required_metrics(cr)),
    )


def is_pod_count(key: str) -> bool:
    """``_base.pod``, ``v1.pod``: keys that only the Pods may give."""
    return key.endswith(".pod")


# --------------------------------------------------------------------------- the module contract


def _handlers(settings: Settings) -> Mapping[str, Handler]:
    prometheus = settings.metric.prometheus if settings.metric else None
    return prometheus.handlers if prometheus else {}


def _service(cr: Obj, cluster: ClusterView) -> list[Obj]:
    """The Service of the limiter's name and namespace (a lookup, not a scan of the namespace)."""
    service = cluster.get(SERVICE, _ns(cr), str(_meta(cr).get("name", "")))
    return [service] if service is not None else []


def _inputs(cr: Obj, cluster: ClusterView, settings: Settings) -> dict[str, Any]:
    ns = _ns(cr)
    globals_ = settings.globals
    return dict(
        cr=cr,
        services=_service(cr, cluster),
        pods=cluster.list(POD, pod_namespace(cr, globals_.istioNamespace)),
        destination_rules=cluster.list(DESTINATION_RULE, ns),
        service_entries=cluster.list(SERVICE_ENTRY),
        globals_=globals_,
    )


def queries(cr: Obj, cluster: ClusterView, settings: Settings) -> dict[str, Query]:
    """The Prometheus queries ``cr`` needs (none without a Prometheus in the module config)."""
    if settings.metric is None or settings.metric.prometheus is None:
        return {}
    return prometheus_queries(config=settings.general, handlers=_handlers(settings),
                              **_inputs(cr, cluster, settings))


def context(cr: Obj, cluster: ClusterView, settings: Settings, metrics: Metrics) -> LimiterContext:
    """The render context of ``cr``: its Service, pods, DestinationRules, the mesh service of its
    ``host``, the module config, and the metric values read for it (or why they could not be)."""
    ctx = limiter_context(metrics=metrics.values, config=settings.general, handlers=_handlers(settings),
                          **_inputs(cr, cluster, settings))
    if metrics.error is None:
        return ctx
    return dataclasses.replace(ctx, metrics_error=metrics.error)
