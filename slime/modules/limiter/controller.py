"""kopf wiring for SmartLimiter: gather -> pure render -> sync -> status.

Each SmartLimiter gets a daemon that re-evaluates it every ``refresh`` and soon after
anything it depends on changes (its spec, pods, its Service, DestinationRules), with a
short debounce. Cluster objects come from kopf indexes (memory, no API reads); the only
blocking calls are Prometheus queries and API writes, both in worker threads.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from slime.framework import observability
from slime.framework.conditions import ConditionUpdate, same_conditions, set_conditions
from slime.framework.kube import CONFIG_MAP, ENVOY_FILTER, Kind, Kube
from slime.framework.metrics import Backoff, MetricsUnavailableError
from slime.framework.prometheus import PrometheusSource
from slime.framework.runtime import ModuleRuntime
from slime.framework.sync import sync_children
from slime.modules.limiter.api import GROUP, PLURAL, VERSION, LimiterConfig
from slime.modules.limiter.context import limiter_context, prometheus_queries
from slime.modules.limiter.render import (
    METRICS,
    READY,
    LimiterResult,
    envoyfilter_name,
    pod_namespace,
    pod_selector,
    render_smartlimiter,
)
from slime.modules.limiter.rls import CONFIG_KEY, merge_rls_updates

log = logging.getLogger("slime.limiter")
DEBOUNCE_SECONDS = 0.3
# A limiter whose expressions need no Prometheus value changes only through events (its
# spec, pods, Service, DestinationRules), which wake it; the timer is then only a safety net.
IDLE_RESYNC_SECONDS = 60.0
FULL_RESYNC_SECONDS = 300.0  # re-list children now and then to repair drift made by others
RLS_WRITE_ATTEMPTS = 5


@dataclass
class LimiterState:
    """Per SmartLimiter, in memory: what was last written, to write only on change."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    applied_digest: str = ""
    last_full_sync: float = 0.0
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=1.0, cap=60.0))
    # Which pods this limiter counts, from its last evaluation, so that a pod event wakes only
    # the limiters that count it. Until the first evaluation any pod of the namespace does.
    evaluated: bool = False
    generation: int | None = None  # metadata.generation of the last evaluation
    spec_changed: bool = False  # woken by its own spec: evaluate at once
    selector: dict[str, str] | None = None  # None: counts no pods
    pod_namespace: str | None = None  # None: all namespaces (a limiter in the Istio root namespace)


@dataclass
class Limiter:
    runtime: ModuleRuntime
    config: LimiterConfig
    states: dict[tuple[str, str], LimiterState] = field(default_factory=dict)
    prometheus: PrometheusSource | None = None

    @property
    def kube(self) -> Kube:
        return self.runtime.kube

    @functools.cached_property
    def rls(self) -> RlsWriter:
        return RlsWriter(self.kube, self.config)

    def poke_namespace(self, namespace: str | None) -> None:
        for (ns, _), state in self.states.items():
            if namespace is None or ns == namespace:
                state.wake.set()

    def poke_name(self, namespace: str | None, name: str | None) -> None:
        state = self.states.get((namespace or "", name or ""))
        if state:
            state.wake.set()

    def poke_pod(self, namespace: str | None, labels: dict[str, str]) -> None:
        """Wake the limiters that count this pod (their selector is a subset of its labels)."""
        for (ns, _), state in self.states.items():
            if not state.evaluated:
                if ns == namespace:
                    state.wake.set()
            elif state.selector is not None and state.pod_namespace in (None, namespace) and all(
                    labels.get(k) == v for k, v in state.selector.items()):
                state.wake.set()


def register(registry: kopf.OperatorRegistry, runtime: ModuleRuntime) -> None:
    config = LimiterConfig.model_validate(runtime.config.general or {})
    globals_ = runtime.config.globals
    metric = runtime.config.metric
    limiter = Limiter(runtime=runtime, config=config)
    if metric and metric.prometheus and not config.disableAdaptive:
        limiter.prometheus = PrometheusSource(metric.prometheus.address)
    handlers = metric.prometheus.handlers if metric and metric.prometheus else {}

    # --- indexes: the cluster objects a render needs, kept in memory by kopf's watches
    @kopf.index("", "v1", "services", registry=registry, id="services")
    def services(namespace: Any, name: Any, body: kopf.Body, **_: Any) -> Any:
        return {(namespace, name): _plain(body)}

    @kopf.index("", "v1", "pods", registry=registry, id="pods")
    def pods(namespace: Any, body: kopf.Body, **_: Any) -> Any:
        return {namespace: _slim_pod(body)}

    @kopf.index("networking.istio.io", "v1beta1", "destinationrules", registry=registry, id="destinationrules")
    def destinationrules(namespace: Any, body: kopf.Body, **_: Any) -> Any:
        return {namespace: _plain(body)}

    @kopf.index("networking.istio.io", "v1beta1", "serviceentries", registry=registry, id="serviceentries")
    def serviceentries(namespace: Any, body: kopf.Body, **_: Any) -> Any:
        return {namespace: _plain(body)}

    # --- triggers: anything a render depends on wakes the limiters of that namespace
    @kopf.on.event("", "v1", "pods", registry=registry)
    def pod_changed(namespace: Any, labels: Any, **_: Any) -> None:
        limiter.poke_pod(namespace, dict(labels or {}))

    @kopf.on.event("", "v1", "services", registry=registry)
    def service_changed(namespace: Any, name: Any, **_: Any) -> None:
        limiter.poke_name(namespace, name)  # a SmartLimiter limits the Service of its own name

    @kopf.on.event("networking.istio.io", "v1beta1", "destinationrules", registry=registry)
    def destinationrule_changed(namespace: Any, **_: Any) -> None:
        limiter.poke_namespace(namespace)

    # An event handler, not on.update: kopf then keeps no diff-base annotation, which would cost a
    # patch and a second watch event for every create and update.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def spec_changed(namespace: Any, name: Any, meta: Any, **_: Any) -> None:
        state = limiter.states.get((namespace, name))
        if state is not None and meta.get("generation") != state.generation:
            state.spec_changed = True
            state.wake.set()

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=5.0)
    async def evaluate(body: kopf.Body, namespace: Any, name: Any, stopped: Any, logger: Any,
                       **kwargs: Any) -> None:
        key = (namespace, name)
        state = limiter.states.setdefault(key, LimiterState())
        try:
            while not stopped:
                try:
                    delay = await _reconcile_once(limiter, state, body, kwargs, handlers, globals_, logger)
                except Exception as e:  # one bad evaluation must not stop this limiter for good
                    observability.RECONCILE_ERRORS.labels(kind="SmartLimiter", reason=type(e).__name__).inc()
                    logger.exception("Failed to evaluate SmartLimiter %s/%s: %s", namespace, name, e)
                    state.applied_digest = ""
                    delay = state.backoff.next_delay()
                await _sleep(state, stopped, delay)
        finally:
            limiter.states.pop(key, None)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, optional=not limiter.rls.enabled)
    def remove_rls_entries(namespace: Any, name: Any, **_: Any) -> None:
        # EnvoyFilters go by ownerReference GC; the shared RLS ConfigMap needs us.
        limiter.rls.write(name, namespace, [])


async def _sleep(state: LimiterState, stopped: Any, delay: float) -> None:
    """Until the next evaluation: ``delay`` passes, something wakes us, or we stop. A wake by
    a dependency (pods come in bursts) is debounced; one by the limiter's own spec is not."""

    async def until_stopped() -> None:
        await stopped.wait()

    waiters = [asyncio.ensure_future(state.wake.wait()), asyncio.ensure_future(until_stopped())]
    done, pending = await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    if state.wake.is_set() and not state.spec_changed and not stopped:
        await asyncio.sleep(DEBOUNCE_SECONDS)
    state.wake.clear()
    state.spec_changed = False


async def _reconcile_once(limiter: Limiter, state: LimiterState, body: kopf.Body, indexes: dict[str, Any],
                          handlers: Any, globals_: Any, logger: logging.Logger) -> float:
    """One evaluation; returns the seconds until the next one."""
    refresh = limiter.config.refresh_seconds
    started = time.perf_counter()
    cr = _plain(body)
    ns, name = cr["metadata"]["namespace"], cr["metadata"]["name"]
    ctx_args: dict[str, Any] = dict(
        cr=cr,
        services=indexes["services"].get((ns, name), []),
        pods=_pods_for(cr, indexes["pods"], globals_.istioNamespace),
        destination_rules=indexes["destinationrules"].get(ns, []),
        service_entries=indexes["serviceentries"],
        config=limiter.config,
        globals_=globals_,
    )
    prom_values: dict[str, str] = {}
    queries = prometheus_queries(handlers=handlers, **ctx_args) if limiter.prometheus else {}
    metrics_condition = ConditionUpdate(METRICS, True, "MetricsRead" if queries else "NoQueries",
                                        f"{len(queries)} Prometheus queries answered" if queries else "")
    if queries:
        try:
            prom_values = await asyncio.to_thread(limiter.prometheus.query, queries)  # type: ignore[union-attr]
            observability.METRIC_QUERIES.labels(source="prometheus", result="ok").inc()
            state.backoff.reset()
        except MetricsUnavailableError as e:
            observability.METRIC_QUERIES.labels(source="prometheus", result="error").inc()
            delay = min(state.backoff.next_delay(), refresh)
            logger.warning("Kept the last limits of SmartLimiter %s/%s: metrics unavailable (%s): %s",
                           ns, name, e.reason, e.message)
            await asyncio.to_thread(_write_status, limiter.kube, cr, None,
                                    [ConditionUpdate(METRICS, False, e.reason, e.message)])
            observability.RECONCILES.labels(kind="SmartLimiter", result="metrics_unavailable").inc()
            return delay
    ctx = limiter_context(metrics=prom_values, **ctx_args)
    state.selector = pod_selector(cr, ctx.service, ctx.host_selector)
    state.pod_namespace = pod_namespace(cr, globals_.istioNamespace)
    state.evaluated = True
    state.generation = cr["metadata"].get("generation")
    result = render_smartlimiter(cr, ctx)
    if not result.in_scope:
        return max(refresh, IDLE_RESYNC_SECONDS)
    try:
        await asyncio.to_thread(_apply, limiter, state, cr, result, metrics_condition)
        observability.RECONCILES.labels(kind="SmartLimiter", result="ok").inc()
    except Exception as e:  # a failed write must not kill the daemon: report and retry
        observability.RECONCILE_ERRORS.labels(kind="SmartLimiter", reason=type(e).__name__).inc()
        logger.error("Failed to apply SmartLimiter %s/%s: %s", ns, name, e)
        state.applied_digest = ""
        return min(state.backoff.next_delay(), refresh)
    finally:
        observability.RECONCILE_SECONDS.labels(kind="SmartLimiter").observe(time.perf_counter() - started)
    return refresh if queries else max(refresh, IDLE_RESYNC_SECONDS)


def _apply(limiter: Limiter, state: LimiterState, cr: dict[str, Any], result: LimiterResult,
           metrics_condition: ConditionUpdate) -> None:
    """Write what the render produced: EnvoyFilters, RLS entries, status. Blocking."""
    ns, name = cr["metadata"]["namespace"], cr["metadata"]["name"]
    conditions = [ConditionUpdate(p.type, p.status, p.reason, p.message) for p in result.problems]
    types = {c.type for c in conditions}
    if METRICS not in types:
        conditions.append(metrics_condition)
    if result.valid:
        desired = [ef for ef in result.envoyfilters if not _of_sets(ef, result.incomplete_sets, ns, name)]
        keep = [envoyfilter_name(name, ns, s) for s in result.incomplete_sets]
        digest = _digest(cr["metadata"]["uid"], desired, keep, result.rls_descriptors)
        resync = time.monotonic() - state.last_full_sync > FULL_RESYNC_SECONDS
        if digest != state.applied_digest or resync:
            _sync_envoyfilters(limiter.kube, cr, desired, keep)
            limiter.rls.write(name, ns, result.rls_descriptors)
            state.applied_digest = digest
            state.last_full_sync = time.monotonic()
    if READY not in types:  # Ready sums up: false while any other condition reports a problem
        failing = next((c for c in conditions if c.status_text == "False"), None)
        if failing is not None:
            conditions.append(ConditionUpdate(READY, False, failing.reason, failing.message))
        elif result.valid:
            in_force = f"{len(result.envoyfilters)} EnvoyFilter(s) in force"
            conditions.append(ConditionUpdate(READY, True, "Rendered", in_force))
    _write_status(limiter.kube, cr, result.status if result.valid else None, conditions)


def _sync_envoyfilters(kube: Kube, cr: dict[str, Any], desired: list[dict[str, Any]], keep: list[str]) -> None:
    if keep:  # sets that could not be evaluated keep their applied EnvoyFilter
        ns = cr["metadata"]["namespace"]
        for ef_name in keep:
            current = kube.get(ENVOY_FILTER, ns, ef_name)
            if current is not None:
                desired = desired + [_strip_server_fields(current)]
    result = sync_children(kube, cr, desired, [ENVOY_FILTER])
    for what in result.applied:
        log.info("Applied %s for SmartLimiter %s/%s", what, cr["metadata"]["namespace"], cr["metadata"]["name"])
    for what in result.deleted:
        log.info("Deleted %s of SmartLimiter %s/%s", what, cr["metadata"]["namespace"], cr["metadata"]["name"])


def _write_status(kube: Kube, cr: dict[str, Any], fields: dict[str, Any] | None,
                  conditions: list[ConditionUpdate]) -> None:
    """Patch status through the status subresource, only if something changed."""
    old = cr.get("status") or {}
    generation = cr["metadata"].get("generation", 0)
    new_conditions = set_conditions(old.get("conditions"), conditions, generation)
    patch: dict[str, Any] = {}
    if fields is not None:
        patch.update({k: v for k, v in fields.items() if old.get(k) != v})
    if old.get("observedGeneration") != generation:
        patch["observedGeneration"] = generation
    if not same_conditions(old.get("conditions"), new_conditions):
        patch["conditions"] = new_conditions
    if patch:
        kind = Kind(f"{GROUP}/{VERSION}", "SmartLimiter", PLURAL)
        kube.merge_patch(kind, cr["metadata"]["namespace"], cr["metadata"]["name"], {"status": patch},
                         subresource="status")


class RlsWriter:
    """Writes SmartLimiters' entries into the one RLS ConfigMap they share.

    Group commit: a caller queues its entries and the first to get the write lock writes
    everything queued in one read-modify-write, so a burst of global limiters costs a few
    writes, not one parse and dump of an ever larger file each. The read's resourceVersion
    is a precondition of the write: when someone else wrote in between, start over.
    """

    def __init__(self, kube: Kube, config: LimiterConfig) -> None:
        self.kube = kube
        self.config = config
        self._queue: dict[tuple[str, str], tuple[list[dict[str, Any]], Future[None]]] = {}
        self._queue_lock = threading.Lock()
        self._write_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        cm = self.config.rlsConfigMap
        return bool(cm and cm.name and not self.config.disableGlobalRateLimit)

    def write(self, name: str, namespace: str, descriptors: list[dict[str, Any]]) -> None:
        """Blocks until this limiter's entries (none: removed) are in the ConfigMap."""
        if not self.enabled:
            return
        done: Future[None] = Future()
        with self._queue_lock:
            superseded = self._queue.get((name, namespace))
            self._queue[(name, namespace)] = (descriptors, done)
        if superseded is not None:
            superseded[1].set_result(None)  # its entries are replaced by ours, in the same write
        with self._write_lock:
            if not done.done():
                with self._queue_lock:
                    batch, self._queue = self._queue, {}
                try:
                    self._write_batch({key: entries for key, (entries, _) in batch.items()})
                except Exception as e:
                    for _, waiter in batch.values():
                        waiter.set_exception(e)
                else:
                    for _, waiter in batch.values():
                        waiter.set_result(None)
        done.result()

    def _write_batch(self, updates: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
        assert self.config.rlsConfigMap is not None
        cm_name, cm_ns = self.config.rlsConfigMap.name, self.config.rlsConfigMap.namespace or "istio-system"
        for _ in range(RLS_WRITE_ATTEMPTS):
            cm = self.kube.get(CONFIG_MAP, cm_ns, cm_name)
            text = ((cm or {}).get("data") or {}).get(CONFIG_KEY)
            merged = merge_rls_updates(text, updates, domain=self.config.domain)
            if merged == text or (cm is None and not any(updates.values())):
                return
            try:
                if cm is None:
                    self.kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                                      "metadata": {"name": cm_name, "namespace": cm_ns},
                                      "data": {CONFIG_KEY: merged}})
                else:
                    self.kube.merge_patch(CONFIG_MAP, cm_ns, cm_name, {
                        "metadata": {"resourceVersion": cm["metadata"]["resourceVersion"]},
                        "data": {CONFIG_KEY: merged}})
                return
            except ApiException as e:
                if e.status != 409:  # 409: changed (or created) since we read it
                    raise
        raise RuntimeError(f"RLS ConfigMap {cm_ns}/{cm_name} kept changing; will retry")


# --- small helpers


def _pods_for(cr: dict[str, Any], pods_index: Any, istio_namespace: str) -> Any:
    """The pods a limiter may count: its namespace's, or all for one in the Istio root namespace."""
    ns = pod_namespace(cr, istio_namespace)
    return pods_index if ns is None else pods_index.get(ns, [])


def _plain(body: Any) -> dict[str, Any]:
    """A plain, JSON-safe copy of a kopf body (kopf's views must not leak into renders)."""
    return json.loads(json.dumps(dict(body), default=dict))


def _slim_pod(body: Any) -> dict[str, Any]:
    meta = body.get("metadata", {})
    return {
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"),
                     "labels": dict(meta.get("labels") or {}),
                     **({"deletionTimestamp": meta["deletionTimestamp"]} if meta.get("deletionTimestamp") else {})},
        "status": {"phase": (body.get("status") or {}).get("phase")},
    }


def _strip_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta},
            "spec": obj.get("spec", {})}


def _of_sets(ef: dict[str, Any], sets: frozenset[str], ns: str, name: str) -> bool:
    return ef["metadata"]["name"] in {envoyfilter_name(name, ns, s) for s in sets}


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

