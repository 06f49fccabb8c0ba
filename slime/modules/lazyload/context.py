"""What a ServiceFence's render reads, gathered from a ``ClusterView``. Pure but for the clock.

* the Service of the fence's name (``workloadSelector.fromService``);
* every Service (``labelSelector``, ``ns/*`` expansion) and every VirtualService (expansion);
* Namespaces, only when ``namespaceSelector`` holds a label selector;
* the fence's learning record (``LearnedDependencies``, a module-private kind the operator's view
  adds; ``slime render`` may take one from its input): the time to render at and what was learned
  since the last status write;
* the Prometheus results of the fence (prometheus mode): ``Metrics`` from the contract (the operator's
  queries of ``fence_queries``, or ``slime render --metrics``), replacing ``metricStatus``.

The time comes from that record; without one (``slime render``) the wall clock is read: deadlines,
the TTL and the EXPIREWAIT grace all depend on it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from slime.framework import kinds
from slime.framework.kinds import NAMESPACE, SERVICE, VIRTUAL_SERVICE, Kind
from slime.framework.metrics import Query
from slime.framework.module import NO_METRICS, ClusterView, Metrics, Settings
from slime.modules.lazyload.config import Fence
from slime.modules.lazyload.domains import destination_map, parse_namespace_selector
from slime.modules.lazyload.learning import prometheus_queries

Obj = Mapping[str, Any]

# Not served by any apiserver: the operator's view answers it, and `slime render` input may hold it.
LEARNED = Kind("lazyload.slime.io/v1alpha1", "LearnedDependencies", "learneddependencies")
kinds.register(LEARNED)


@dataclass(frozen=True)
class FenceContext:
    config: Fence = field(default_factory=Fence)
    istio_namespace: str = "istio-system"
    slime_namespace: str = "mesh-operator"
    service_label: str = "app"  # global.service: the default workload selector's key
    istio_rev: str = ""
    strict_rev: bool = False
    service: Obj | None = None  # the Service named like the fence
    services: Sequence[Obj] = ()
    namespaces: Sequence[Obj] = ()
    virtual_services: Sequence[Obj] = ()
    now: float = 0.0
    learned: Mapping[str, str] = field(default_factory=dict)  # new metricStatus entries
    seen: Mapping[str, int] = field(default_factory=dict)  # metric key -> Unix seconds last reported
    prometheus: Mapping[str, str] | None = None  # prometheus mode: the query result (replaces metricStatus)

    @property
    def destinations(self) -> dict[str, list[str]]:
        return destination_map(self.virtual_services)


def learned_record(namespace: str, name: str, now: float, learned: Mapping[str, str] | None = None,
                   seen: Mapping[str, int] | None = None,
                   prometheus: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``LearnedDependencies`` object of a fence, as the operator's view serves it."""
    record: dict[str, Any] = {
        "apiVersion": LEARNED.api_version,
        "kind": LEARNED.kind,
        "metadata": {"name": name, "namespace": namespace},
        "now": now,
        "learned": dict(learned or {}),
        "seen": dict(seen or {}),
    }
    if prometheus is not None:
        record["prometheus"] = dict(prometheus)
    return record


def _needs_namespaces(spec: Mapping[str, Any]) -> bool:
    entries = spec.get("namespaceSelector") or []
    for entry in entries if isinstance(entries, list) else []:
        try:
            if isinstance(entry, str) and parse_namespace_selector(entry)[0] is None:
                return True
        except ValueError:
            return False
    return False


def _services(spec: Mapping[str, Any], cluster: ClusterView) -> list[Obj]:
    """The Services the domains read: all of them for ``labelSelector`` or a namespace label selector,
    else those of the ``ns/*`` namespaces (their VirtualService destinations), else none."""
    if spec.get("labelSelector") or _needs_namespaces(spec):
        return _sorted(cluster.list(SERVICE))
    raw_hosts, raw_entries = spec.get("host"), spec.get("namespaceSelector")
    hosts: Mapping[str, Any] = raw_hosts if isinstance(raw_hosts, Mapping) else {}
    entries: list[Any] = raw_entries if isinstance(raw_entries, list) else []
    names = {str(k)[:-2] for k in hosts if str(k).endswith("/*")} | {str(e) for e in entries}
    return _sorted([s for ns in sorted(names) for s in cluster.list(SERVICE, ns)])


def _config(settings: Settings) -> Fence:
    return settings.general if isinstance(settings.general, Fence) else Fence.model_validate(settings.general or {})


def fence_queries(cr: Obj, cluster: ClusterView, settings: Settings) -> dict[str, Query]:
    """Prometheus mode: the handlers' queries of an enabled fence (``$namespace``, ``$source_app``: its name)."""
    prom = settings.metric.prometheus if settings.metric is not None else None
    if _config(settings).source != "prometheus" or prom is None or not (cr.get("spec") or {}).get("enable"):
        return {}
    meta = cr.get("metadata") or {}
    return prometheus_queries(str(meta.get("namespace") or "default"), str(meta.get("name") or ""), prom.handlers)


def fence_context(cr: Obj, cluster: ClusterView, settings: Settings, metrics: Metrics = NO_METRICS) -> FenceContext:
    meta = cr.get("metadata") or {}
    name, ns = str(meta.get("name") or ""), str(meta.get("namespace") or "default")
    raw_spec = cr.get("spec")
    spec: Mapping[str, Any] = raw_spec if isinstance(raw_spec, Mapping) else {}
    config = _config(settings)
    glob = settings.globals
    record = cluster.get(LEARNED, ns, name) or {}
    now = record.get("now")
    prom = record.get("prometheus")
    if metrics.source and metrics.error is None:  # queried now (operator) or given (slime render --metrics)
        prom = dict(metrics.values)
    return FenceContext(
        config=config,
        istio_namespace=glob.istioNamespace or "istio-system",
        slime_namespace=glob.slimeNamespace or "mesh-operator",
        service_label=glob.service or "app",
        istio_rev=glob.istioRev,
        strict_rev=glob.strictRev,
        service=cluster.get(SERVICE, ns, name),
        services=_services(spec, cluster),
        namespaces=_sorted(cluster.list(NAMESPACE)) if _needs_namespaces(spec) else (),
        virtual_services=_sorted(cluster.list(VIRTUAL_SERVICE)),
        now=float(now) if isinstance(now, int | float) else time.time(),
        learned={str(k): str(v) for k, v in (record.get("learned") or {}).items()},
        seen={str(k): int(v) for k, v in (record.get("seen") or {}).items()},
        prometheus={str(k): str(v) for k, v in prom.items()} if isinstance(prom, Mapping) else None,
    )


def _sorted(objs: Sequence[Obj]) -> list[Obj]:
    def key(o: Obj) -> tuple[str, str]:
        m = o.get("metadata") or {}
        return str(m.get("namespace") or ""), str(m.get("name") or "")

    return sorted(objs, key=key)


class LearningView:
    """A ``ClusterView`` that also answers the ``LearnedDependencies`` record of each fence (the operator's
    Hooks.view wraps the informers' view in it)."""

    def __init__(self, cluster: ClusterView, records: Mapping[tuple[str, str], Obj]) -> None:
        self._cluster = cluster
        self._records = records

    def list(self, kind: Kind, namespace: str | None = None) -> list[Obj]:
        if kind == LEARNED:
            return [r for (ns, _), r in self._records.items() if namespace is None or ns == namespace]
        return self._cluster.list(kind, namespace)

    def get(self, kind: Kind, namespace: str | None, name: str) -> Obj | None:
        if kind == LEARNED:
            return self._records.get((namespace or "", name))
        return self._cluster.get(kind, namespace, name)
