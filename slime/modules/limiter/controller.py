"""What only the operator does for SmartLimiters, beyond the generic reconciler
(``slime.framework.reconciler``): which events wake which limiter, the counted-pod cache, the
evaluation cadence, and the shared RLS ConfigMap with its finalizer.

* A pod event wakes only the limiters that count that pod; a Service event the limiter of its
  name; a DestinationRule event the limiters of its namespace.
* A limiter re-evaluates every ``refresh`` when it reads Prometheus; otherwise only events
  change it, and the timer is a safety net.
* Only a limiter with entries in the RLS ConfigMap gets the finalizer ``slime.io/rls-entries``:
  its entries are removed on delete, even if the operator was down then.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from typing import Any

from kubernetes.client.exceptions import ApiException

from slime.framework.kinds import CONFIG_MAP, DESTINATION_RULE, POD, SERVICE, SERVICE_ENTRY, Kind
from slime.framework.kube import Kube
from slime.framework.module import ClusterView, Hooks, Metrics, Obj, Rendered, Settings
from slime.framework.status import finalizer_patch
from slime.modules.limiter.context import counted_pods, find_service, host_selector
from slime.modules.limiter.crd import SMART_LIMITER
from slime.modules.limiter.rls import build_configmap, rls_ref
from slime.modules.limiter.selectors import pod_namespace, pod_selector

log = logging.getLogger("slime.limiter")
# A limiter whose expressions need no Prometheus value changes only through events (its spec,
# pods, Service, DestinationRules), which wake it; the timer is then only a safety net.
IDLE_RESYNC_SECONDS = 60.0
RLS_WRITE_ATTEMPTS = 5
RLS_FINALIZER = "slime.io/rls-entries"


class CountedPods:
    """A ``ClusterView`` whose pods are only those the limiter may count (computed once per
    evaluation instead of scanning the namespace for each use)."""

    def __init__(self, cluster: ClusterView, pods: list[Obj]) -> None:
        self._cluster, self._pods = cluster, pods

    def list(self, kind: Kind, namespace: str | None = None) -> list[Obj]:
        if kind.kind == POD.kind:
            return self._pods
        return self._cluster.list(kind, namespace)

    def get(self, kind: Kind, namespace: str | None, name: str) -> Obj | None:
        return self._cluster.get(kind, namespace, name)


class LimiterHooks(Hooks):
    finalizers = frozenset({RLS_FINALIZER})

    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        self.settings: Settings = runtime.settings
        self.refresh = self.settings.general.refresh_seconds
        # Bumped on each event of their kind: a limiter's counted pods are reused while these stand still.
        self.pod_epochs: dict[str | None, int] = {}  # by namespace; None: any
        self.object_epoch = 0  # Services and ServiceEntries (they decide the pod selector)
        self.rls = RlsWriter(runtime.kube, self.settings)

    # --- which limiters an event wakes (event loop)

    def dependents(self, kind: Kind, namespace: str, name: str, obj: Obj,
                   crs: Mapping[tuple[str, str], dict[str, Any]]) -> Iterable[tuple[str, str]]:
        if kind.kind == POD.kind:
            self.pod_epochs[namespace] = self.pod_epochs.get(namespace, 0) + 1
            self.pod_epochs[None] = self.pod_epochs.get(None, 0) + 1
            labels = (obj.get("metadata") or {}).get("labels") or {}
            return [key for key, s in crs.items() if _counts(key, s, namespace, labels)]
        if kind.kind in (SERVICE.kind, SERVICE_ENTRY.kind):
            self.object_epoch += 1  # a Service or a ServiceEntry (of a `host`) decides the selector
            return [(namespace, name)] if kind.kind == SERVICE.kind else []
        if kind.kind == DESTINATION_RULE.kind:
            return [key for key in crs if key[0] == namespace]
        return []

    def view(self, cr: Obj, cluster: ClusterView, state: dict[str, Any]) -> ClusterView:
        """The cluster with only the pods this limiter counts; notes its selector for the pod wake rule."""
        meta = cr.get("metadata") or {}
        ns = str(meta.get("namespace", "default"))
        globals_ = self.settings.globals
        service = cluster.get(SERVICE, ns, str(meta.get("name", "")))
        services = [service] if service is not None else []
        entries = cluster.list(SERVICE_ENTRY)
        pods_ns = pod_namespace(cr, globals_.istioNamespace)
        epochs = (meta.get("generation"), self.pod_epochs.get(pods_ns, 0), self.object_epoch)
        counted = state.get("counted")
        if counted is None or counted[0] != epochs:
            counted = (epochs, counted_pods(cr, services, cluster.list(POD, pods_ns), globals_, entries))
            state["counted"] = counted
        state["selector"] = pod_selector(cr, find_service(cr, services), host_selector(cr, entries, globals_))
        state["pod_namespace"] = pods_ns
        state["evaluated"] = True
        return CountedPods(cluster, counted[1])

    def next_run(self, cr: Obj, rendered: Rendered, metrics: Metrics) -> float | None:
        return self.refresh if metrics.source == "prometheus" else max(self.refresh, IDLE_RESYNC_SECONDS)

    # --- the RLS ConfigMap (worker threads)

    def applied(self, cr: Obj, rendered: Rendered, state: dict[str, Any]) -> None:
        """Write the limiter's RLS entries. Most limiters are local: once one is known to own no
        entry, the shared file is left alone (each write reads, parses and dumps all of it)."""
        entries = rendered.shared
        if entries is None or not self.rls.enabled or (not entries and state.get("rls_owned") is False):
            return
        meta = cr["metadata"]
        if entries and RLS_FINALIZER not in (meta.get("finalizers") or []):
            # before the entries: they must not outlive the limiter
            written = self.runtime.kube.merge_patch(SMART_LIMITER.kind_ref, meta["namespace"], meta["name"],
                                                    finalizer_patch(dict(cr), add=RLS_FINALIZER))
            meta["finalizers"] = written["metadata"].get("finalizers")
            meta["resourceVersion"] = written["metadata"]["resourceVersion"]
        self.rls.write(meta["name"], meta["namespace"], entries)
        state["rls_owned"] = bool(entries)

    def deleted(self, cr: Obj) -> None:
        meta = cr["metadata"]
        self.rls.write(meta["name"], meta["namespace"], [])
        log.info("Removed the RLS entries of deleted SmartLimiter %s/%s", meta["namespace"], meta["name"])


def _counts(key: tuple[str, str], state: dict[str, Any], namespace: str, labels: Mapping[str, str]) -> bool:
    """Whether a limiter counts a pod with these labels (before its first evaluation: any of its namespace)."""
    if not state.get("evaluated"):
        return key[0] == namespace
    selector = state.get("selector")
    return selector is not None and state.get("pod_namespace") in (None, namespace) and all(
        labels.get(k) == v for k, v in selector.items())


class RlsWriter:
    """Writes SmartLimiters' entries into the one RLS ConfigMap they share, through the module's
    one builder (``rls.build_configmap``, which ``slime render`` uses too).

    Group commit: a caller queues its entries and the first to get the write lock writes
    everything queued in one read-modify-write, so a burst of global limiters costs a few
    writes, not one parse and dump of an ever larger file each. The read's resourceVersion
    is a precondition of the write: when someone else wrote in between, start over.
    """

    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.settings = settings
        self._queue: dict[tuple[str, str], tuple[list[dict[str, Any]], Future[None]]] = {}
        self._queue_lock = threading.Lock()
        self._write_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return rls_ref(self.settings) is not None

    def write(self, name: str, namespace: str, descriptors: list[dict[str, Any]]) -> None:
        """Blocks until this limiter's entries (none: removed) are in the ConfigMap."""
        if not self.enabled:
            return
        done: Future[None] = Future()
        with self._queue_lock:
            superseded = self._queue.get((namespace, name))
            self._queue[(namespace, name)] = (descriptors, done)
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

    def _write_batch(self, parts: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
        ref = rls_ref(self.settings)
        assert ref is not None
        _, cm_ns, cm_name = ref
        for _ in range(RLS_WRITE_ATTEMPTS):
            existing = self.kube.get(CONFIG_MAP, cm_ns, cm_name)
            wanted = build_configmap(existing, parts, self.settings)
            if wanted is None:
                return
            try:
                if existing is None:
                    self.kube.create(wanted)
                else:
                    self.kube.merge_patch(CONFIG_MAP, cm_ns, cm_name, {
                        "metadata": {"resourceVersion": existing["metadata"]["resourceVersion"]},
                        "data": wanted["data"]})
            except ApiException as e:
                if e.status != 409:  # 409: changed (or created) since we read it
                    raise
                continue
            return
        raise RuntimeError(f"RLS ConfigMap {cm_ns}/{cm_name} kept changing; will retry")
