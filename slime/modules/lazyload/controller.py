"""The lazyload module in the operator: its part of the generic reconciler (``Hooks``).

The reconciler renders each ServiceFence (``MODULE.context`` + ``MODULE.render``) through ``view``,
which adds the fence's learning record. Besides, the hooks run:

* learning (accesslog mode): the gRPC access log server (``server.py``); ``sink`` feeds a
  ``LearningBuffer`` on the event loop; a flusher wakes each fence with news at most once per
  ``learnInterval`` (``runtime.wake``). Only the active replica serves it: a standby closes its port,
  so the global-sidecar's long-lived stream, sent to a Service over every replica, ends up on the
  replica that learns (a stream to a standby would be dropped for as long as it lasts);
* learning (prometheus mode): the reconciler runs ``fence_queries`` itself; ``next_run`` asks for a
  query every ``max(learnInterval, 10s)``;
* timers: ``next_run`` is the next moment a fence's domains change by themselves (EXPIREWAIT ends,
  a deadline passes, a learned dependency outlives its TTL);
* auto-fence: the plan (pure) after Service/Namespace/Pod changes and every minute, written off the loop;
* the fallback route: rendered from the config (+ autoPort's ports) and synced off the loop.

``runtime.wake(namespace, name)`` is the reconciler's debounced re-evaluation of one CR. (Without
it, as in tests that run the hooks alone, enabled fences are re-evaluated every ``learnInterval``,
at least 5 s, to pick up what was learned.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from slime.framework.kinds import ENDPOINT_SLICE, ENDPOINTS, NAMESPACE, POD, SERVICE, VIRTUAL_SERVICE, Kind
from slime.framework.module import ClusterView, Hooks, Metrics, Rendered, Settings
from slime.framework.sync import INSTANCE
from slime.modules.lazyload.api import ServiceFenceSpec, ServiceFenceStatus
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
    ttl_deadlines,
)
from slime.modules.lazyload.server import AccessLogServer, listen_address
from slime.modules.lazyload.writer import FENCE, apply_plan, sync_fallback

log = logging.getLogger("slime.lazyload")
RESYNC = 60.0  # auto-fence and fallback route: at least this often
IP_INDEX_TTL = 2.0
POLL_WITHOUT_WAKE = 5.0


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
        self.server: AccessLogServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._news = asyncio.Event()
        self._autofence = asyncio.Event()
        self._ips: tuple[float, dict[str, list[FenceKey]], set[FenceKey]] = (float("-inf"), {}, set())
        self.dropped = 0  # access-log entries received while this replica was not active
        self._ports: set[int] = set()  # autoPort: HTTP ports found on Services
        self._is_active = True  # only the active replica learns and writes (peering flips it)
        self._fallback_written = False  # written by this process (a config without a fallback route makes no call)
        self._started = False
        self._server_lock = asyncio.Lock()
        self._serving: set[asyncio.Task[None]] = set()
        self._handed: dict[FenceKey, dict[str, str]] = {}  # what ``view`` gave each fence's latest render
        gate = getattr(runtime, "peering", None)
        if gate is not None and hasattr(gate, "on_change"):
            gate.on_change(self._peering_changed)

    # ----------------------------------------------------------------- what the reconciler calls

    @property
    def cluster(self) -> ClusterView:
        shared = getattr(self.runtime, "shared", None)
        view: ClusterView = shared.cluster if shared is not None else self.runtime.cluster
        return view

    def _active(self) -> bool:
        return self._is_active

    def _peering_changed(self, active: bool) -> None:
        self._is_active = active
        if self._started and self.config.source == "accesslog":
            task = asyncio.get_running_loop().create_task(self._serve(), name="lazyload access log service")
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)

    def _wake(self, fence: FenceKey) -> None:
        wake = getattr(self.runtime, "wake", None)
        if wake is not None:
            wake(*fence)

    def dependents(self, kind: Kind, namespace: str, name: str, obj: Any,
                   crs: Mapping[tuple[str, str], dict[str, Any]]) -> Iterable[tuple[str, str]]:
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
        self._handed[key] = dict(learned)
        return LearningView(cluster, {key: learned_record(key[0], key[1], time.time(), learned, seen)})

    def next_run(self, cr: Any, rendered: Rendered, metrics: Metrics) -> float | None:
        """On the loop, after each evaluation (its status written); the next evaluation is due when a
        domain changes by itself.

        What was learned leaves the buffer once the body evaluated (``cr``) holds it, not when a status
        with it was written: the body of the next evaluation may predate that write (its watch event
        has not arrived), and a render from it without the learned entries would write them away.
        Entries the render was given and left out of the status (it never will persist them) leave at
        once; what a ``due`` released during the evaluation waits for the next render."""
        meta = cr.get("metadata") or {}
        key = (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
        status = rendered.status or {}
        if rendered.objects is not None:
            seen_status = cr.get("status") or {}
            persisted = dict(seen_status.get("metricStatus") or {})
            out = status.get("metricStatus") or {}
            persisted.update({k: v for k, v in self._handed.pop(key, {}).items() if k not in out})
            self.buffer.written(key, persisted, seen_status.get("lastSeen") or {})
        try:
            hosts = ServiceFenceSpec.model_validate(cr.get("spec") or {}).host
            domains = {k: Domain(hosts=list(d.hosts), status=d.state, expire_at=d.expireAt) for k, d in
                       ServiceFenceStatus.model_validate({"domains": status.get("domains") or {}}).domains.items()}
        except ValueError:
            return None  # an invalid spec waits for its next edit
        now = time.time()
        times = [t - now for t in expiry_times(domains, hosts) + ttl_deadlines(status.get("lastSeen") or {},
                                                                                self.config.ttl) if t > now]
        enabled = bool((cr.get("spec") or {}).get("enable"))
        if enabled and self.config.source == "prometheus":
            times.append(max(self.config.learn_interval, 10.0))
        elif enabled and getattr(self.runtime, "wake", None) is None:
            times.append(max(self.config.learn_interval, POLL_WITHOUT_WAKE))
        return min(times) if times else 300.0

    def deleted(self, cr: Any) -> None:
        meta = cr.get("metadata") or {}
        key = (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
        self.buffer.forget(key)
        self._handed.pop(key, None)
        self._autofence.set()  # with autoFence on, a deleted fence of a fenced Service comes back

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

    # ----------------------------------------------------------------- auto-fence and the fallback route

    async def _maintain(self) -> None:
        kube = getattr(self.runtime, "kube", None)
        if kube is None:
            log.warning("lazyload: no API client: auto-fence and the fallback route are not maintained")
            return
        shared = getattr(self.runtime, "shared", None)
        if shared is not None:
            await shared.cluster.wait_synced()  # plan from complete copies only
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._autofence.wait(), RESYNC)
            self._autofence.clear()
            await asyncio.sleep(0.5)  # a burst of Service events makes one pass
            if not self._active():
                continue
            try:
                await self._maintain_once(kube)
            except Exception as e:  # the next pass retries; the loop must not die
                log.error("lazyload: auto-fence or fallback route pass failed: %s", e, exc_info=True)

    async def _maintain_once(self, client: Any) -> None:
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
            return
        instance = getattr(self.runtime, "instance", "")
        for obj in desired if instance else []:  # whoever deployed this instance removes them with it
            obj["metadata"]["labels"][INSTANCE] = instance
        if not desired and not self._fallback_written:
            return  # nothing to write and nothing of ours to remove: no API call
        namespaces_used = gs_namespaces(self.config, self.settings.globals.slimeNamespace) + [
            self.settings.globals.istioNamespace]
        await asyncio.to_thread(sync_fallback, client, desired, self.settings.name, namespaces_used)
        self._fallback_written = bool(desired)

    # ----------------------------------------------------------------- lifecycle

    async def _serve(self) -> None:
        """Serve the access log service while active, close it while standby (idempotent)."""
        async with self._server_lock:
            if self._is_active and self.server is None:
                address = listen_address(self.settings.globals.misc.get("logSourcePort", ":8082"))
                server = AccessLogServer(address, self.sink)
                try:
                    await server.start()
                    self.server = server
                except (OSError, RuntimeError) as e:  # the operator goes on; fences keep what they learned
                    log.error("lazyload: cannot serve the access log service on %s (%s): learning from the "
                              "access log is off; set global.misc.logSourcePort", address, e)
            elif not self._is_active and self.server is not None:
                server, self.server = self.server, None
                log.info("lazyload: standby: the access log service is closed until this replica is active")
                await server.stop(grace=0)

    async def start(self) -> None:
        self._started = True
        if self.config.source == "accesslog":
            await self._serve()
            self._tasks.append(asyncio.create_task(self._flush(), name="lazyload learning flush"))
        self._tasks.append(asyncio.create_task(self._maintain(), name="lazyload auto-fence and fallback"))
        self._autofence.set()

    async def stop(self) -> None:
        self._started = False
        tasks = [*self._tasks, *self._serving]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        async with self._server_lock:
            if self.server is not None:
                await self.server.stop()
                self.server = None
