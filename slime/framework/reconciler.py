"""The one reconciler every module runs on: gather -> context -> render -> sync -> status.

kopf watches each kind of the module and hands every event to ``Reconciler.seen``; the cluster
objects renders read come from the shared informers (``slime.framework.cluster``). One scheduler
(``slime.framework.scheduler``) evaluates each CR: at once when its own spec changed, soon after
something it depends on changed (debounced), and again when the module asks (``Hooks.next_run``).
Blocking work (Prometheus, API writes) runs in the module's worker threads, never on the loop.

kopf keeps no bookkeeping on our objects (no finalizer, no annotations: each would be another
write and watch event). Children go by ownerReference GC; an owner of children GC cannot reach
(cluster-scoped, another namespace) carries ``slime.io/children`` until they are removed, and a
module may add finalizers of its own (``Hooks.finalizers``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kopf

from slime.framework import observability
from slime.framework.finish import finish
from slime.framework.kinds import Kind
from slime.framework.kube import short_error
from slime.framework.metrics import Backoff, MetricsUnavailableError
from slime.framework.module import NO_METRICS, Metrics, Rendered
from slime.framework.runtime import ModuleRuntime
from slime.framework.scheduler import Scheduler
from slime.framework.status import StatusWriter, finalizer_patch
from slime.framework.sync import CHILDREN_FINALIZER, Key, delete_children, describe, needs_finalizer, sync_children

log = logging.getLogger("slime.reconciler")
T = TypeVar("T")
CrKey = tuple[str, str, str]  # (kind, namespace, name)
DEBOUNCE_SECONDS = 0.3
FULL_RESYNC_SECONDS = 300.0  # list children now and then to repair drift made by others
CONCURRENCY = 6  # evaluations due by timer or dependency at once; a CR's own edits are not limited
THREADS = 16  # blocking calls; more than CONCURRENCY so that edits never queue behind refreshes
OLD_KOPF_FINALIZER = "slime.io/finalizer"  # put on every CR by earlier versions; released on delete
HOUSEKEEPING_SECONDS = 30.0
TRIM_AFTER_FORGOTTEN = 100


@dataclass
class CrState:
    """Per CR, in memory: its latest body and what was last written, to write only on change."""

    cr: dict[str, Any]
    applied_digest: str = ""
    children: frozenset[Key] | None = None  # after our last sync; None: list them
    sync_problems: list[tuple[str, str]] = field(default_factory=list)  # (reason, message) of the last sync
    last_full_sync: float = 0.0
    generation: int | None = None  # metadata.generation of the last evaluation
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=1.0, cap=300.0))
    scratch: dict[str, Any] = field(default_factory=dict)  # the module hooks' own per-CR state


class Reconciler:
    def __init__(self, runtime: ModuleRuntime) -> None:
        self.runtime = runtime
        self.module = runtime.module
        self.settings = runtime.settings
        self.kube = runtime.kube
        self.cluster = runtime.shared.cluster
        self.hooks = self.module.load_hooks()(runtime)
        self.states: dict[CrKey, CrState] = {}
        self.scheduler: Scheduler[CrKey] = Scheduler(self.evaluate, concurrency=CONCURRENCY, debounce=DEBOUNCE_SECONDS)
        self.executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix=self.module.name)
        self.status = StatusWriter(self.kube, runtime.shared.recorder)
        self.prometheus: Any = None
        metric = self.settings.metric
        if self.module.queries is not None and metric is not None and metric.prometheus is not None:
            from slime.framework.prometheus import PrometheusSource

            self.prometheus = PrometheusSource(metric.prometheus.address)
        self.finalizers = frozenset({CHILDREN_FINALIZER, OLD_KOPF_FINALIZER, *self.hooks.finalizers})
        runtime.wake = self.wake
        self._forgotten = 0  # objects forgotten since the last memory trim

    def wake(self, namespace: str, name: str) -> None:
        """Re-evaluate the module's CRs of this namespace and name soon (debounced; event loop)."""
        for key in self.states:
            if key[1] == namespace and key[2] == name:
                self.scheduler.poke(key)

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args))

    # --- events (on the event loop)

    def seen(self, event_type: str | None, cr: dict[str, Any]) -> None:
        """An event of one of the module's kinds: keep its body; evaluate at once when its spec changed."""
        meta = cr["metadata"]
        key = (cr["kind"], meta.get("namespace") or "", meta["name"])
        if event_type == "DELETED":
            self.forget(key, cr)
            return
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = CrState(cr=cr)
            if event_type == "ADDED":  # created while we watch: it has no children yet
                state.children, state.last_full_sync = frozenset(), time.monotonic()
        else:
            state.cr = cr
        if meta.get("deletionTimestamp"):
            if self.finalizers & set(meta.get("finalizers") or []):
                self.scheduler.poke(key, urgent=True)
        elif meta.get("generation") != state.generation:
            # Edited or created now: urgent. Listed at start (type None): in turn, with the others.
            self.scheduler.poke(key, urgent=event_type is not None)

    def forget(self, key: CrKey, cr: dict[str, Any]) -> None:
        state = self.states.pop(key, None)
        self.scheduler.forget(key)
        uid = cr["metadata"].get("uid", "")
        self.runtime.shared.claims.release_all(uid)
        if self.runtime.shared.recorder is not None:
            self.runtime.shared.recorder.forget(uid)
        written = (state.cr.get("status") if state else None) or {}
        types = [c.get("type") for c in (written.get("conditions") or []) + self.status.conditions_of(uid)]
        self.status.forget(uid)
        observability.forget(key[0], key[1], key[2], [t for t in dict.fromkeys(types) if t])
        self._forgotten += 1

    def report_caches(self) -> None:
        """What is kept per object, for /metrics: each falls to 0 when the objects are gone."""
        shared = self.runtime.shared
        name = self.module.name
        for cache, size in (("states", len(self.states)), ("scheduled", len(self.scheduler.keys)),
                            ("statuses", len(self.status)), ("claims", len(shared.claims)),
                            ("events", len(shared.recorder) if shared.recorder is not None else 0)):
            observability.CACHED.labels(module=name, cache=cache).set(size)

    def forget_all(self) -> None:
        """Paused by peering: the active replica takes over; on resume kopf lists everything again."""
        self.states.clear()
        self.scheduler.forget_all()

    def dependency_changed(self, kind: Kind, namespace: str, name: str, obj: dict[str, Any]) -> None:
        scratch = {(k[1], k[2]): s.scratch for k, s in self.states.items()}
        wanted = set(self.hooks.dependents(kind, namespace, name, obj, scratch))
        for key in self.states:
            if (key[1], key[2]) in wanted:
                self.scheduler.poke(key)

    # --- the scheduler's job

    async def evaluate(self, key: CrKey) -> float | None:
        state = self.states.get(key)
        if state is None:
            return None
        started = time.perf_counter()
        try:
            return await self._evaluate(state)
        except Exception as e:  # one bad evaluation must not stop this CR for good
            self._count(key[0], "error", type(e).__name__)
            log.error("Failed to evaluate %s %s/%s: %s", key[0], key[1], key[2], short_error(e),
                      exc_info=not _expected(e))
            state.applied_digest, state.children = "", None
            await self.blocking(self.status.write_failure, state.cr, e)
            return state.backoff.next_delay()
        finally:
            observability.RECONCILE_SECONDS.labels(kind=key[0]).observe(time.perf_counter() - started)

    async def _evaluate(self, state: CrState) -> float | None:
        cr = state.cr
        if cr["metadata"].get("deletionTimestamp"):
            if self.finalizers & set(cr["metadata"].get("finalizers") or []):
                await self.blocking(self._release, cr)
            return None
        view = self.hooks.view(cr, self.cluster, state.scratch)
        metrics = await self._metrics(cr, view, state)
        ctx = self.module.context(cr, view, self.settings, metrics)
        rendered = finish(self.module, cr, self.module.render(cr, ctx))
        state.generation = cr["metadata"].get("generation")
        if not rendered.in_scope:
            return None
        await self.blocking(self._apply, state, rendered)
        ready = rendered.ready
        ok = ready is not None and ready.status_text == "True" and not state.sync_problems
        reason = state.sync_problems[0][0] if state.sync_problems else (ready.reason if ready else "NoReady")
        self._count(cr["kind"], "ready" if ok else "not_ready", "" if ok else reason)
        if metrics.error is not None:  # retried with backoff, at most as often as the module asks
            return min(state.backoff.next_delay(), self.hooks.next_run(cr, rendered, metrics) or 60.0)
        state.backoff.reset()
        return self.hooks.next_run(cr, rendered, metrics)

    async def _metrics(self, cr: dict[str, Any], view: Any, state: CrState) -> Metrics:
        if self.prometheus is None or self.module.queries is None:
            return NO_METRICS
        queries = self.module.queries(cr, view, self.settings)
        if not queries:
            return NO_METRICS
        try:
            values = await self.blocking(self.prometheus.query, queries)
        except MetricsUnavailableError as e:
            observability.METRIC_QUERIES.labels(source="prometheus", result="error").inc()
            meta = cr["metadata"]
            log.warning("Kept the last limits of %s %s/%s: metrics unavailable (%s): %s", cr["kind"],
                        meta.get("namespace"), meta["name"], e.reason, e.message)
            return Metrics(error=(e.reason, e.message), source="prometheus")
        observability.METRIC_QUERIES.labels(source="prometheus", result="ok").inc()
        return Metrics(values=values, source="prometheus")

    def _apply(self, state: CrState, rendered: Rendered) -> None:
        """Write what the render produced: children, shared outputs (hooks), status. Blocking."""
        cr = state.cr
        if rendered.objects is not None:
            digest = _digest(cr["metadata"]["uid"], rendered.objects, sorted(rendered.keep), rendered.shared)
            resync = time.monotonic() - state.last_full_sync > FULL_RESYNC_SECONDS
            if digest != state.applied_digest or resync:
                state.applied_digest = ""  # until all of it is written
                self._sync(state, rendered, None if resync else state.children)
                self.hooks.applied(cr, rendered, state.scratch)
                state.applied_digest = digest
                state.last_full_sync = time.monotonic()
        self.status.write(cr, rendered, state.sync_problems)

    def _sync(self, state: CrState, rendered: Rendered, previous: frozenset[Key] | None) -> None:
        cr = state.cr
        assert rendered.objects is not None
        meta = cr["metadata"]
        if needs_finalizer(rendered.objects, cr) and CHILDREN_FINALIZER not in (meta.get("finalizers") or []):
            patch = finalizer_patch(cr, add=CHILDREN_FINALIZER)
            written = self.kube.merge_patch(self._kind(cr), meta.get("namespace"), meta["name"], patch)
            meta["finalizers"], meta["resourceVersion"] = written["metadata"].get("finalizers"), \
                written["metadata"]["resourceVersion"]
        result = sync_children(self.kube, cr, rendered.objects, self.module.writes, previous, rendered.keep,
                               self.runtime.shared.claims)
        label = f"{cr['kind']} {meta.get('namespace')}/{meta['name']}"
        for what in result.applied:
            log.info("Applied %s for %s", what, label)
        for what in result.deleted:
            log.info("Deleted %s of %s", what, label)
        state.children = result.children
        state.sync_problems = [("NameConflict", c.message) for c in result.conflicts]

    def _release(self, cr: dict[str, Any]) -> None:
        """A CR with one of our finalizers is being deleted: clean up, then let it go."""
        meta = cr["metadata"]
        self.hooks.deleted(cr)
        if CHILDREN_FINALIZER in (meta.get("finalizers") or []):
            for what in delete_children(self.kube, cr, self.module.writes):
                log.info("Deleted %s of deleted %s %s/%s", what, cr["kind"], meta.get("namespace"), meta["name"])
        patch = finalizer_patch(cr, remove=self.finalizers)
        try:
            self.kube.merge_patch(self._kind(cr), meta.get("namespace"), meta["name"], patch)
        except Exception as e:
            if getattr(e, "status", None) != 404:  # 409: changed meanwhile; the next event brings it
                raise

    def _kind(self, cr: dict[str, Any]) -> Kind:
        info = self.module.kind(cr["kind"])
        assert info is not None
        return info.kind_ref

    def _count(self, kind: str, result: str, reason: str) -> None:
        observability.RECONCILES.labels(kind=kind, result=result).inc()
        if result != "ready":
            observability.RECONCILE_ERRORS.labels(kind=kind, reason=reason).inc()

    async def _housekeeping(self) -> None:
        """Every half minute: report the caches; after many objects went, hand the freed memory back
        (the C allocator keeps it otherwise: RSS would stay at its high-water mark)."""
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            self.report_caches()
            if self._forgotten >= TRIM_AFTER_FORGOTTEN:
                self._forgotten = 0
                await asyncio.to_thread(_trim_memory)

    # --- wiring into kopf

    def register(self, registry: kopf.OperatorRegistry) -> None:
        self.cluster.watch(self.module.reads, self.dependency_changed)
        for info in self.module.kinds:
            # the id ends in "_changed": the operator's log drops kopf's "succeeded" line of such a
            # handler (one per watch event; see slime.operator.QuietWatchHandlers)
            @kopf.on.event(info.group, info.version, info.plural, registry=registry,
                           id=f"{info.kind.lower()}_changed")
            async def changed(type: Any, body: kopf.Body, **_: Any) -> None:
                self.seen(type, _plain(body))

        self.runtime.peering.on_change(lambda active: None if active else self.forget_all())

        async def ready() -> None:
            """The scheduler runs only in the active replica, once every copy is listed."""
            await self.runtime.peering.wait_active()
            await self.cluster.wait_synced()

        @kopf.on.startup(registry=registry, id=f"{self.module.name} module start")
        async def start(**_: Any) -> None:
            self.cluster.start()
            await self.hooks.start()
            task = asyncio.get_running_loop().create_task(self.scheduler.run(active=ready),
                                                          name=f"{self.module.name} scheduler")
            self.runtime.state["scheduler"] = task
            self.runtime.state["housekeeping"] = asyncio.get_running_loop().create_task(
                self._housekeeping(), name=f"{self.module.name} housekeeping")

        @kopf.on.cleanup(registry=registry, id=f"{self.module.name} module stop")
        async def stop(**_: Any) -> None:
            for name in ("scheduler", "housekeeping"):
                task = self.runtime.state.pop(name, None)
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            await self.hooks.stop()
            self.cluster.stop()
            self.executor.shutdown(wait=False, cancel_futures=True)


def _trim_memory() -> None:
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _plain(body: Any) -> dict[str, Any]:
    """A plain, JSON-safe copy of a kopf body (kopf's views must not leak into renders)."""
    return json.loads(json.dumps(dict(body), default=dict))


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _expected(e: Exception) -> bool:
    """Failures that need no traceback in the log: API errors, bad names."""
    from kubernetes.client.exceptions import ApiException

    from slime.framework.names import InvalidNameError

    return isinstance(e, ApiException | InvalidNameError | OSError)


__all__ = ["CrState", "Reconciler", "describe"]
