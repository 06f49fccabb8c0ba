"""kopf wiring for SmartLimiter: gather -> pure render -> sync -> status.

kopf watches SmartLimiters; informers (slime.framework.informer) keep the cluster objects a render
needs (Services, Pods, DestinationRules, ServiceEntries) in memory. One scheduler (slime.framework.scheduler)
evaluates each limiter every ``refresh`` when it reads Prometheus, and soon after anything it
depends on changes (debounced), or at once when its own spec changes. The only blocking calls
are Prometheus queries and API writes, both in worker threads. kopf keeps no bookkeeping on
SmartLimiters (no finalizer, no annotations: each would be another write and watch event):
EnvoyFilters go by ownerReference GC, and only a limiter with entries in the shared RLS ConfigMap
gets our own finalizer, released once its entries are removed.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kopf
from kubernetes.client.exceptions import ApiException

from slime.framework import observability
from slime.framework.conditions import ConditionUpdate, same_conditions, set_conditions
from slime.framework.informer import ByName, ByNamespace, Informer
from slime.framework.kube import CONFIG_MAP, DESTINATION_RULE, ENVOY_FILTER, POD, SERVICE, SERVICE_ENTRY, Kind, Kube
from slime.framework.metrics import Backoff, MetricsUnavailableError
from slime.framework.prometheus import PrometheusSource
from slime.framework.runtime import ModuleRuntime
from slime.framework.scheduler import Scheduler
from slime.framework.sync import sync_children
from slime.modules.limiter.api import GROUP, PLURAL, VERSION, LimiterConfig
from slime.modules.limiter.context import counted_pods, limiter_context, prometheus_queries
from slime.modules.limiter.render import (
    METRICS,
    READY,
    LimiterResult,
    envoyfilter_name,
    pod_namespace,
    pod_selector,
    render_smartlimiter,
)
from slime.modules.limiter.rls import CONFIG_KEY, dump_rls_config, merge_rls_doc, parse_rls_config, rls_owners

log = logging.getLogger("slime.limiter")
T = TypeVar("T")
Key = tuple[str, str]  # (namespace, name)
DEBOUNCE_SECONDS = 0.3
# A limiter whose expressions need no Prometheus value changes only through events (its
# spec, pods, Service, DestinationRules), which wake it; the timer is then only a safety net.
IDLE_RESYNC_SECONDS = 60.0
FULL_RESYNC_SECONDS = 300.0  # re-list children now and then to repair drift made by others
RLS_WRITE_ATTEMPTS = 5
CONCURRENCY = 6  # evaluations due by timer or dependency at once; a limiter's own edits are not limited
THREADS = 16  # for blocking calls; more than CONCURRENCY so that edits never queue behind refreshes
RLS_FINALIZER = "slime.io/rls-entries"  # on limiters with RLS entries: removed on delete, then released
# Released on delete too: kopf's finalizer, which earlier versions put on every SmartLimiter.
OUR_FINALIZERS = frozenset({RLS_FINALIZER, "slime.io/finalizer"})
SMARTLIMITER = Kind(f"{GROUP}/{VERSION}", "SmartLimiter", PLURAL)


@dataclass
class LimiterState:
    """Per SmartLimiter, in memory: its latest body and what was last written, to write only on change."""

    cr: dict[str, Any]
    applied_digest: str = ""
    children: frozenset[tuple[str, str, str]] | None = None  # EnvoyFilters after our last sync; None: list them
    rls_owned: bool | None = None  # has entries in the RLS ConfigMap; None: not known (after a start)
    written_status: dict[str, Any] = field(default_factory=dict)  # status we wrote (the body may lag)
    last_full_sync: float = 0.0
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=1.0, cap=60.0))
    # Which pods this limiter counts, from its last evaluation, so that a pod event wakes only
    # the limiters that count it. Until the first evaluation any pod of the namespace does.
    evaluated: bool = False
    generation: int | None = None  # metadata.generation of the last evaluation
    selector: dict[str, str] | None = None  # None: counts no pods
    pod_namespace: str | None = None  # None: all namespaces (a limiter in the Istio root namespace)
    counted: tuple[Any, list[Any]] | None = None  # (epochs, its pods): a refresh with no pod event reuses them


@dataclass
class Limiter:
    runtime: ModuleRuntime
    config: LimiterConfig
    handlers: Any = None  # Prometheus handlers of the module config
    globals_: Any = None
    states: dict[Key, LimiterState] = field(default_factory=dict)
    prometheus: PrometheusSource | None = None
    indexes: dict[str, Any] = field(default_factory=dict)  # views of the informers' copies, by kind
    scheduler: Scheduler[Key] = field(init=False)
    executor: ThreadPoolExecutor = field(init=False)
    # Bumped on each event of their kind: a limiter's counted pods are reused while these stand still.
    pod_epochs: dict[str | None, int] = field(default_factory=dict)  # by namespace; None: any
    object_epoch: int = 0  # Services and ServiceEntries (they decide the pod selector)

    def __post_init__(self) -> None:
        self.scheduler = Scheduler(self.evaluate, concurrency=CONCURRENCY, debounce=DEBOUNCE_SECONDS)
        self.executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="limiter")

    @property
    def kube(self) -> Kube:
        return self.runtime.kube

    @functools.cached_property
    def rls(self) -> RlsWriter:
        return RlsWriter(self.kube, self.config)

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args))

    # --- pokes from watch handlers (event loop)

    def poke_namespace(self, namespace: str | None) -> None:
        for key in self.states:
            if namespace is None or key[0] == namespace:
                self.scheduler.poke(key)

    def poke_name(self, namespace: str | None, name: str | None) -> None:
        key = (namespace or "", name or "")
        if key in self.states:
            self.scheduler.poke(key)

    def poke_pod(self, namespace: str | None, labels: dict[str, str]) -> None:
        """Wake the limiters that count this pod (their selector is a subset of its labels)."""
        self.pod_epochs[namespace] = self.pod_epochs.get(namespace, 0) + 1
        self.pod_epochs[None] = self.pod_epochs.get(None, 0) + 1
        for key, state in self.states.items():
            if not state.evaluated:
                if key[0] == namespace:
                    self.scheduler.poke(key)
            elif state.selector is not None and state.pod_namespace in (None, namespace) and all(
                    labels.get(k) == v for k, v in state.selector.items()):
                self.scheduler.poke(key)

    def seen(self, event_type: str | None, cr: dict[str, Any]) -> None:
        """A SmartLimiter event: keep its body; evaluate it at once when its spec changed."""
        meta = cr["metadata"]
        key = (meta["namespace"], meta["name"])
        if event_type == "DELETED":
            self.states.pop(key, None)
            self.scheduler.forget(key)
            return
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = LimiterState(cr=cr)
            if event_type == "ADDED":  # created while we watch: it has no children nor RLS entries yet
                state.children, state.last_full_sync, state.rls_owned = frozenset(), time.monotonic(), False
        else:
            state.cr = cr
        if meta.get("deletionTimestamp"):
            if OUR_FINALIZERS & set(meta.get("finalizers") or []):
                self.scheduler.poke(key, urgent=True)  # remove its RLS entries, then let it go
        elif meta.get("generation") != state.generation:
            # Edited or created now: urgent. Listed at start (type None): in turn, with the others.
            self.scheduler.poke(key, urgent=event_type is not None)

    def forget_all(self) -> None:
        """Paused by peering: the active replica takes over; on resume kopf lists everything again."""
        self.states.clear()
        self.scheduler.forget_all()

    # --- the scheduler's job

    async def evaluate(self, key: Key) -> float | None:
        state = self.states.get(key)
        if state is None:
            return None
        try:
            return await _reconcile_once(self, state)
        except Exception as e:  # one bad evaluation must not stop this limiter for good
            observability.RECONCILE_ERRORS.labels(kind="SmartLimiter", reason=type(e).__name__).inc()
            log.exception("Failed to evaluate SmartLimiter %s/%s: %s", key[0], key[1], e)
            state.applied_digest, state.children = "", None
            return state.backoff.next_delay()


def register(registry: kopf.OperatorRegistry, runtime: ModuleRuntime) -> None:
    config = LimiterConfig.model_validate(runtime.config.general or {})
    metric = runtime.config.metric
    limiter = Limiter(runtime=runtime, config=config, globals_=runtime.config.globals,
                      handlers=metric.prometheus.handlers if metric and metric.prometheus else {})
    if metric and metric.prometheus and not config.disableAdaptive:
        limiter.prometheus = PrometheusSource(metric.prometheus.address)
    runtime.peering.on_change(lambda active: None if active else limiter.forget_all())

    # --- the cluster objects a render needs, copied in memory; each change wakes the limiters
    # that depend on it (on the event loop: the scheduler is not thread-safe).
    def pod_changed(ns: str, name: str, pod: dict[str, Any]) -> None:
        limiter.poke_pod(ns, dict(pod["metadata"].get("labels") or {}))

    def service_changed(ns: str, name: str, service: dict[str, Any]) -> None:
        limiter.object_epoch += 1
        limiter.poke_name(ns, name)  # a SmartLimiter limits the Service of its own name

    def serviceentry_changed(ns: str, name: str, entry: dict[str, Any]) -> None:
        limiter.object_epoch += 1  # read at the next evaluation (a limiter's `host` may name it)

    def destinationrule_changed(ns: str, name: str, rule: dict[str, Any]) -> None:
        limiter.poke_namespace(ns)

    namespaces = runtime.namespaces or None
    informers = {
        "services": Informer(runtime.kube, SERVICE, namespaces, changed=service_changed),
        "pods": Informer(runtime.kube, POD, namespaces, slim=_slim_pod, changed=pod_changed),
        "destinationrules": Informer(runtime.kube, DESTINATION_RULE, namespaces, changed=destinationrule_changed),
        "serviceentries": Informer(runtime.kube, SERVICE_ENTRY, namespaces, changed=serviceentry_changed),
    }
    limiter.indexes = {name: ByName(inf) if name == "services" else ByNamespace(inf) for name, inf in informers.items()}

    async def ready() -> None:
        """The scheduler runs only in the active replica, once every copy is listed."""
        await runtime.peering.wait_active()
        for informer in informers.values():
            await informer.wait_synced()

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def smartlimiter_changed(type: Any, body: kopf.Body, **_: Any) -> None:
        limiter.seen(type, _plain(body))

    @kopf.on.startup(registry=registry)
    async def start_scheduler(**_: Any) -> None:
        for informer in informers.values():
            informer.start()
        task = asyncio.get_running_loop().create_task(limiter.scheduler.run(active=ready), name="limiter scheduler")
        runtime.state["limiter_scheduler"] = task

    @kopf.on.cleanup(registry=registry)
    async def stop_scheduler(**_: Any) -> None:
        task = runtime.state.pop("limiter_scheduler", None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for informer in informers.values():
            informer.stop()
        limiter.executor.shutdown(wait=False, cancel_futures=True)


async def _reconcile_once(limiter: Limiter, state: LimiterState) -> float | None:
    """One evaluation; returns the seconds until the next one (None: only when poked)."""
    refresh = limiter.config.refresh_seconds
    started = time.perf_counter()
    cr = state.cr
    ns, name = cr["metadata"]["namespace"], cr["metadata"]["name"]
    if cr["metadata"].get("deletionTimestamp"):
        if OUR_FINALIZERS & set(cr["metadata"].get("finalizers") or []):
            await limiter.blocking(_release, limiter, cr)
        return None
    indexes = limiter.indexes
    services = indexes["services"].get((ns, name), [])
    ctx_args: dict[str, Any] = dict(
        cr=cr,
        services=services,
        pods=_counted_pods(limiter, state, services),
        destination_rules=indexes["destinationrules"].get(ns, []),
        service_entries=indexes["serviceentries"],
        config=limiter.config,
        globals_=limiter.globals_,
    )
    prom_values: dict[str, str] = {}
    queries = prometheus_queries(handlers=limiter.handlers, **ctx_args) if limiter.prometheus else {}
    metrics_condition = ConditionUpdate(METRICS, True, "MetricsRead" if queries else "NoQueries",
                                        f"{len(queries)} Prometheus queries answered" if queries else "")
    if queries:
        try:
            prom_values = await limiter.blocking(limiter.prometheus.query, queries)  # type: ignore[union-attr]
            observability.METRIC_QUERIES.labels(source="prometheus", result="ok").inc()
            state.backoff.reset()
        except MetricsUnavailableError as e:
            observability.METRIC_QUERIES.labels(source="prometheus", result="error").inc()
            delay = min(state.backoff.next_delay(), refresh)
            log.warning("Kept the last limits of SmartLimiter %s/%s: metrics unavailable (%s): %s",
                        ns, name, e.reason, e.message)
            await limiter.blocking(_write_status, limiter.kube, state, None,
                                   [ConditionUpdate(METRICS, False, e.reason, e.message)])
            observability.RECONCILES.labels(kind="SmartLimiter", result="metrics_unavailable").inc()
            return delay
    ctx = limiter_context(metrics=prom_values, **ctx_args)
    state.selector = pod_selector(cr, ctx.service, ctx.host_selector)
    state.pod_namespace = pod_namespace(cr, limiter.globals_.istioNamespace)
    state.evaluated = True
    state.generation = cr["metadata"].get("generation")
    result = render_smartlimiter(cr, ctx)
    if not result.in_scope:
        return max(refresh, IDLE_RESYNC_SECONDS)
    try:
        await limiter.blocking(_apply, limiter, state, result, metrics_condition)
        observability.RECONCILES.labels(kind="SmartLimiter", result="ok").inc()
    except Exception as e:  # a failed write must not stop the limiter: report and retry
        observability.RECONCILE_ERRORS.labels(kind="SmartLimiter", reason=type(e).__name__).inc()
        log.error("Failed to apply SmartLimiter %s/%s: %s", ns, name, e)
        state.applied_digest, state.children = "", None
        return min(state.backoff.next_delay(), refresh)
    finally:
        observability.RECONCILE_SECONDS.labels(kind="SmartLimiter").observe(time.perf_counter() - started)
    return refresh if queries else max(refresh, IDLE_RESYNC_SECONDS)


def _apply(limiter: Limiter, state: LimiterState, result: LimiterResult, metrics_condition: ConditionUpdate) -> None:
    """Write what the render produced: EnvoyFilters, RLS entries, status. Blocking."""
    cr = state.cr
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
            state.applied_digest = ""  # until all of it is written
            state.children = _sync_envoyfilters(limiter.kube, cr, desired, keep, None if resync else state.children)
            # Most limiters are local: once one is known to own no RLS entry, leave the shared
            # file alone (each write reads, parses and dumps all of it).
            if result.rls_descriptors or state.rls_owned is not False:
                if result.rls_descriptors and limiter.rls.enabled:
                    _hold(limiter.kube, cr)  # before the entries: they must not outlive the limiter
                limiter.rls.write(name, ns, result.rls_descriptors)
                state.rls_owned = bool(result.rls_descriptors)
            state.applied_digest = digest
            state.last_full_sync = time.monotonic()
    if READY not in types:  # Ready sums up: false while any other condition reports a problem
        failing = next((c for c in conditions if c.status_text == "False"), None)
        if failing is not None:
            conditions.append(ConditionUpdate(READY, False, failing.reason, failing.message))
        elif result.valid:
            in_force = f"{len(result.envoyfilters)} EnvoyFilter(s) in force"
            conditions.append(ConditionUpdate(READY, True, "Rendered", in_force))
    _write_status(limiter.kube, state, result.status if result.valid else None, conditions)


def _sync_envoyfilters(kube: Kube, cr: dict[str, Any], desired: list[dict[str, Any]], keep: list[str],
                       previous: frozenset[tuple[str, str, str]] | None) -> frozenset[tuple[str, str, str]]:
    if keep:  # sets that could not be evaluated keep their applied EnvoyFilter
        ns = cr["metadata"]["namespace"]
        for ef_name in keep:
            current = kube.get(ENVOY_FILTER, ns, ef_name)
            if current is not None:
                desired = desired + [_strip_server_fields(current)]
    result = sync_children(kube, cr, desired, [ENVOY_FILTER], previous)
    for what in result.applied:
        log.info("Applied %s for SmartLimiter %s/%s", what, cr["metadata"]["namespace"], cr["metadata"]["name"])
    for what in result.deleted:
        log.info("Deleted %s of SmartLimiter %s/%s", what, cr["metadata"]["namespace"], cr["metadata"]["name"])
    return result.children


def _hold(kube: Kube, cr: dict[str, Any]) -> None:
    """Add RLS_FINALIZER, if missing. The resourceVersion precondition keeps others' finalizers
    (a merge patch replaces the whole list); on a conflict the evaluation fails and is retried."""
    meta = cr["metadata"]
    finalizers = list(meta.get("finalizers") or [])
    if RLS_FINALIZER not in finalizers:
        kube.merge_patch(SMARTLIMITER, meta["namespace"], meta["name"], {"metadata": {
            "resourceVersion": meta["resourceVersion"], "finalizers": [*finalizers, RLS_FINALIZER]}})


def _release(limiter: Limiter, cr: dict[str, Any]) -> None:
    """A deleted limiter: remove its RLS entries, then its finalizer (same precondition as _hold)."""
    meta = cr["metadata"]
    limiter.rls.write(meta["name"], meta["namespace"], [])
    finalizers = [f for f in meta.get("finalizers") or [] if f not in OUR_FINALIZERS]
    try:
        limiter.kube.merge_patch(SMARTLIMITER, meta["namespace"], meta["name"], {"metadata": {
            "resourceVersion": meta["resourceVersion"], "finalizers": finalizers or None}})
    except ApiException as e:
        if e.status != 404:  # 409: changed meanwhile; the next event brings the new body
            raise
    log.info("Removed the RLS entries of deleted SmartLimiter %s/%s", meta["namespace"], meta["name"])


def _write_status(kube: Kube, state: LimiterState, fields: dict[str, Any] | None,
                  conditions: list[ConditionUpdate]) -> None:
    """Patch status through the status subresource, only if something changed. Compared with the
    body's status overlaid with what we last wrote: under load the body may not show that yet."""
    cr = state.cr
    old = {**(cr.get("status") or {}), **state.written_status}
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
        kube.merge_patch(SMARTLIMITER, cr["metadata"]["namespace"], cr["metadata"]["name"], {"status": patch},
                         subresource="status")
        state.written_status.update(patch)


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
        self._parsed: tuple[str | None, dict[str, Any], set[str]] | None = None  # (resourceVersion, file, owners)

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

    def _read(self, cm_ns: str, cm_name: str) -> tuple[dict[str, Any] | None, dict[str, Any], set[str]]:
        """The ConfigMap, its parsed file and the owners in it; parsed once per resourceVersion
        (a parse of a file with many global limiters takes tens of ms, holding the GIL)."""
        cm = self.kube.get(CONFIG_MAP, cm_ns, cm_name)
        if cm is None:
            return None, {}, set()
        rv = cm["metadata"].get("resourceVersion")
        if self._parsed is None or self._parsed[0] != rv:
            doc = parse_rls_config((cm.get("data") or {}).get(CONFIG_KEY))
            self._parsed = (rv, doc, rls_owners(doc))
        return cm, self._parsed[1], self._parsed[2]

    def _write_batch(self, updates: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
        assert self.config.rlsConfigMap is not None
        cm_name, cm_ns = self.config.rlsConfigMap.name, self.config.rlsConfigMap.namespace or "istio-system"
        for _ in range(RLS_WRITE_ATTEMPTS):
            cm, doc, owners = self._read(cm_ns, cm_name)
            if not any(updates.values()) and not owners & {f"{name}.{ns}" for name, ns in updates}:
                return  # only removals, of entries that are not there
            merged = merge_rls_doc(doc, updates, domain=self.config.domain)
            if cm is not None and merged == doc:
                return
            data = {CONFIG_KEY: dump_rls_config(merged)}
            try:
                if cm is None:
                    written = self.kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                                                "metadata": {"name": cm_name, "namespace": cm_ns}, "data": data})
                else:
                    written = self.kube.merge_patch(CONFIG_MAP, cm_ns, cm_name, {
                        "metadata": {"resourceVersion": cm["metadata"]["resourceVersion"]}, "data": data})
            except ApiException as e:
                if e.status != 409:  # 409: changed (or created) since we read it
                    raise
                continue
            self._parsed = (written["metadata"].get("resourceVersion"), merged, rls_owners(merged))
            return
        raise RuntimeError(f"RLS ConfigMap {cm_ns}/{cm_name} kept changing; will retry")


# --- small helpers


def _counted_pods(limiter: Limiter, state: LimiterState, services: Any) -> list[Any]:
    """The pods the limiter may count (see ``counted_pods``), from its namespace's (all, for one in
    the Istio root namespace). Kept until a pod, Service or ServiceEntry event or a spec change:
    an adaptive limiter re-evaluated every refresh does not scan the namespace's pods each time."""
    cr = state.cr
    ns = pod_namespace(cr, limiter.globals_.istioNamespace)
    epochs = (cr["metadata"].get("generation"), limiter.pod_epochs.get(ns, 0), limiter.object_epoch)
    if state.counted is None or state.counted[0] != epochs:
        pods_index = limiter.indexes["pods"]
        pods = pods_index if ns is None else pods_index.get(ns, [])
        state.counted = (epochs, counted_pods(cr, services, pods, limiter.globals_,
                                              limiter.indexes["serviceentries"]))
    return state.counted[1]


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

