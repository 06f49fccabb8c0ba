"""The lazyload module in the operator: what the generic reconciler cannot do by itself.

``register`` is today's wiring (validation and the verdict reported); ``LazyloadHooks`` is the module's
part of the generic reconciler (issue 7) once it lands. The reconciler renders each ServiceFence
(``MODULE.context`` + ``MODULE.render``) through ``view``; the hooks add:

* learning (accesslog mode): the gRPC access log server, ``sink`` -> ``LearningBuffer`` on the event loop,
  a flusher that wakes each fence with news at most once per ``learnInterval``;
* learning (prometheus mode): every ``learnInterval`` the handlers' queries per enabled fence, off the loop;
* timers: a wake at the next moment a fence's domains change by themselves (EXPIREWAIT ends, a deadline,
  a learned dependency's TTL);
* auto-fence: the plan (pure) after Service/Namespace changes and every minute, written off the loop;
* the fallback route: rendered from the config (+ autoPort's ports) and synced off the loop.

What the hooks need of the runtime beyond today's ``ModuleRuntime`` (``config``, ``kube``, ``peering``):
``cluster`` (a ClusterView over the module's ``reads`` and the ServiceFences) and ``wake(namespace, name)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

import kopf

from slime.framework.acceptance import register_acceptance
from slime.framework.kinds import ENDPOINT_SLICE, ENDPOINTS, NAMESPACE, POD, SERVICE, VIRTUAL_SERVICE, Kind
from slime.framework.module import ClusterView, Hooks, Rendered, Settings
from slime.framework.runtime import ModuleRuntime
from slime.modules.lazyload.accesslog import AccessLogServer, listen_address
from slime.modules.lazyload.api import KINDS, ServiceFenceSpec, ServiceFenceStatus
from slime.modules.lazyload.autofence import plan, workload_ip_index
from slime.modules.lazyload.config import Fence
from slime.modules.lazyload.context import LearningView, learned_record
from slime.modules.lazyload.domains import Domain, expiry_times
from slime.modules.lazyload.globalsidecar import auto_ports, gs_namespaces, http_ports, render_fallback
from slime.modules.lazyload.learning import (
    AccessLogEntry,
    FenceKey,
    LearningBuffer,
    convert_batch,
    ip_index,
    known_services,
    merge_group_results,
    prometheus_queries,
    ttl_deadlines,
)
from slime.modules.lazyload.writer import FENCE, KubeClient, apply_plan, sync_fallback

log = logging.getLogger("slime.lazyload")
RESYNC = 60.0  # auto-fence and fallback route: at least this often
IP_INDEX_TTL = 2.0


def register(registry: kopf.OperatorRegistry, runtime: ModuleRuntime) -> None:
    for info in KINDS:
        register_acceptance(registry, info)


def module_settings(runtime: Any) -> Settings:
    settings = getattr(runtime, "settings", None)
    if isinstance(settings, Settings):
        return settings
    cfg = runtime.config
    return Settings(name=cfg.name, general=Fence.model_validate(cfg.general), globals=cfg.globals, metric=cfg.metric)


class LazyloadHooks(Hooks):
    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        self.settings = module_settings(runtime)
        self.config: Fence = self.settings.general
        self.buffer = LearningBuffer(self.config.learn_interval, self.config.ttl if self.config.source == "accesslog"
                                     else 0.0)
        self.prometheus: dict[FenceKey, dict[str, str]] = {}
        self.server: AccessLogServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: dict[FenceKey, asyncio.TimerHandle] = {}
        self._news = asyncio.Event()
        self._autofence = asyncio.Event()
        self._ips: tuple[float, dict[str, list[FenceKey]], set[FenceKey]] = (float("-inf"), {}, set())
        self.dropped = 0  # access-log entries received while this replica was not active
        self._ports: set[int] = set()  # autoPort: HTTP ports found on Services

    # ----------------------------------------------------------------- what the reconciler calls

    @property
    def cluster(self) -> ClusterView:
        view: ClusterView = self.runtime.cluster
        return view

    def _active(self) -> bool:
        gate = getattr(self.runtime, "peering", None)
        return bool(getattr(gate, "active", True))

    def _wake(self, fence: FenceKey) -> None:
        self.runtime.wake(*fence)

    def dependents(self, kind: Kind, namespace: str, name: str, obj: Any,
                   crs: Iterable[tuple[str, str]]) -> Iterable[tuple[str, str]]:
        if kind in (SERVICE, NAMESPACE) or (kind == POD and self.config.fenceLabelKeyAlias):
            self._autofence.set()
        if kind in (ENDPOINTS, ENDPOINT_SLICE):
            return []  # read by the access-log mapping only, never by a render
        if kind in (SERVICE, VIRTUAL_SERVICE, NAMESPACE):
            return list(crs)  # labelSelector, ns/* and VirtualService expansion may name any namespace
        return super().dependents(kind, namespace, name, obj, crs)

    def view(self, cr: Any, cluster: ClusterView, state: dict[str, Any]) -> ClusterView:
        meta = cr.get("metadata") or {}
        key = (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
        learned, seen = self.buffer.record(key)
        record = learned_record(key[0], key[1], time.time(), learned, seen, self.prometheus.get(key))
        return LearningView(cluster, {key: record})

    def applied(self, cr: Any, rendered: Rendered, state: dict[str, Any]) -> None:
        """Worker thread: the status holding ``rendered.status`` was written."""
        meta = cr.get("metadata") or {}
        key = (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
        loop = state.get("loop") or getattr(self.runtime, "loop", None)
        if loop is not None:
            loop.call_soon_threadsafe(self._after_write, key, cr, rendered)
        else:
            self._after_write(key, cr, rendered)

    def deleted(self, cr: Any) -> None:
        meta = cr.get("metadata") or {}
        key = (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
        self.buffer.forget(key)
        self.prometheus.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._autofence.set()  # with autoFence on, a deleted fence of a fenced Service comes back

    # ----------------------------------------------------------------- after a status write (event loop)

    def _after_write(self, key: FenceKey, cr: Any, rendered: Rendered) -> None:
        status = rendered.status or {}
        self.buffer.written(key, status.get("metricStatus") or {}, status.get("lastSeen") or {})
        try:
            hosts = ServiceFenceSpec.model_validate(cr.get("spec") or {}).host
            domains = {k: Domain(hosts=list(d.hosts), status=d.state, expire_at=d.expireAt) for k, d in
                       ServiceFenceStatus.model_validate({"domains": status.get("domains") or {}}).domains.items()}
        except ValueError:
            return  # an invalid spec has no timers
        now = time.time()
        times = [t for t in expiry_times(domains, hosts) + ttl_deadlines(status.get("lastSeen") or {}, self.config.ttl)
                 if t > now]
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        if times:
            delay = max(0.0, min(times) - time.time())
            self._timers[key] = asyncio.get_running_loop().call_later(delay, self._wake, key)

    # ----------------------------------------------------------------- learning

    def _index(self) -> tuple[dict[str, list[FenceKey]], set[FenceKey]]:
        stamp, ips, known = self._ips
        if time.monotonic() - stamp > IP_INDEX_TTL:
            endpoints, slices = self.cluster.list(ENDPOINTS), self.cluster.list(ENDPOINT_SLICE)
            ips, known = ip_index(endpoints, slices), known_services(endpoints, slices)
            if self.config.fenceLabelKeyAlias:  # a pod's workload fence counts too (upstream)
                for ip, fences in workload_ip_index(self.cluster.list(POD), self.config).items():
                    ips[ip] = sorted({*ips.get(ip, []), *fences})
            self._ips = (time.monotonic(), ips, known)
        return ips, known

    def sink(self, entries: list[AccessLogEntry]) -> None:
        """On the event loop: one batch of the access log."""
        if not self._active():
            self.dropped += len(entries)
            return
        ips, known = self._index()
        now = time.time()
        for fence, counts in convert_batch(entries, ips, known, self.config.enableShortDomain).items():
            cr = self.cluster.get(FENCE, *fence)
            if cr is None or not (cr.get("spec") or {}).get("enable"):
                continue  # as upstream: only enabled fences learn
            status = cr.get("status") or {}
            if self.buffer.observe(fence, counts, now, status.get("metricStatus") or {}, status.get("lastSeen") or {}):
                self._news.set()

    async def _flush(self) -> None:
        while True:
            next_due = self.buffer.next_due()
            timeout = None if next_due is None else max(0.0, next_due - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), timeout)
            self._news.clear()
            for fence in self.buffer.due(time.time()):
                self._wake(fence)

    async def _prometheus(self) -> None:
        from slime.framework.prometheus import PrometheusSource

        prom = self.settings.metric.prometheus if self.settings.metric else None
        if prom is None:
            log.error("lazyload: metricSourceType prometheus needs metric.prometheus (address, handlers)")
            return
        source = PrometheusSource(prom.address)
        while True:
            await asyncio.sleep(max(self.config.learn_interval, 10.0))
            if not self._active():
                continue
            for cr in self.cluster.list(FENCE):
                meta = cr.get("metadata") or {}
                key = (str(meta.get("namespace")), str(meta.get("name")))
                if not (cr.get("spec") or {}).get("enable"):
                    continue
                try:
                    queries = prometheus_queries(key[0], key[1], prom.handlers)
                    results = [await asyncio.to_thread(source.query_group, k, q.promql)
                               for k, q in sorted(queries.items())]
                    result = merge_group_results(results)
                except Exception as e:  # noqa: BLE001 - one fence's failure is logged, the others go on
                    log.warning("Prometheus query for ServiceFence %s/%s failed: %s", *key, e)
                    continue
                if result != ((cr.get("status") or {}).get("metricStatus") or {}):
                    self.prometheus[key] = result
                    self._wake(key)

    # ----------------------------------------------------------------- auto-fence and the fallback route

    async def _maintain(self) -> None:
        kube = getattr(self.runtime, "kube", None)
        if kube is None:
            log.warning("lazyload: no API client: auto-fence and the fallback route are not maintained")
            return
        client = KubeClient(kube)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._autofence.wait(), RESYNC)
            self._autofence.clear()
            await asyncio.sleep(0.5)  # a burst of Service events makes one pass
            if not self._active():
                continue
            services, namespaces = self.cluster.list(SERVICE), self.cluster.list(NAMESPACE)
            pods = self.cluster.list(POD) if self.config.fenceLabelKeyAlias else []
            todo = plan(services, namespaces, self.cluster.list(FENCE), self.config, self.settings.globals, pods)
            if todo.create or todo.delete:
                await asyncio.to_thread(apply_plan, client, todo)
            if self.config.autoPort:
                self._ports = auto_ports(self._ports, http_ports(services, self.config.supportH2),
                                         self.config.cleanupWormholePort)
            extra = self._ports
            try:
                desired = render_fallback(self.settings, extra)
            except ValueError as e:
                log.error("lazyload: fallback route not rendered: %s", e)
                continue
            namespaces_used = gs_namespaces(self.config, self.settings.globals.slimeNamespace) + [
                self.settings.globals.istioNamespace]
            await asyncio.to_thread(sync_fallback, client, desired, self.settings.name, namespaces_used)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self.config.source == "accesslog":
            address = listen_address(self.settings.globals.misc.get("logSourcePort", ":8082"))
            self.server = AccessLogServer(address, self.sink)
            await self.server.start()
            self._tasks.append(asyncio.create_task(self._flush(), name="lazyload learning flush"))
        else:
            self._tasks.append(asyncio.create_task(self._prometheus(), name="lazyload prometheus"))
        self._tasks.append(asyncio.create_task(self._maintain(), name="lazyload auto-fence and fallback"))
        self._autofence.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self.server is not None:
            await self.server.stop()
            self.server = None
