"""The operator's in-memory view of the cluster: one informer per kind that any module reads,
shared by every module of the process, and the ``ClusterView`` renders read it through.

Each change is reported to the listeners of its kind on the event loop (the reconcilers, which
wake the CRs that depend on it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from slime.framework.informer import Informer
from slime.framework.kinds import POD, Kind
from slime.framework.kube import Kube
from slime.framework.module import Obj

Listener = Callable[[Kind, str, str, dict[str, Any]], None]


def slim_pod(body: Any) -> dict[str, Any]:
    """What renders read of a Pod; the rest is not kept (thousands of pods)."""
    meta = body.get("metadata", {})
    status = body.get("status") or {}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"),
                     "labels": dict(meta.get("labels") or {}),
                     **({"deletionTimestamp": meta["deletionTimestamp"]} if meta.get("deletionTimestamp") else {})},
        "status": {k: status[k] for k in ("phase", "podIP", "podIPs") if k in status},
    }


def _typed(kind: Kind) -> Callable[[Any], dict[str, Any]]:
    def add_type(obj: Any) -> dict[str, Any]:  # list items come without apiVersion/kind
        return {"apiVersion": kind.api_version, "kind": kind.kind, **obj}
    return add_type


SLIM = {POD.kind: slim_pod}


class Cluster:
    """Informers for the kinds the enabled modules read; a ``ClusterView`` over their copies."""

    def __init__(self, kube: Kube, namespaces: list[str] | None = None) -> None:
        self.kube = kube
        self.namespaces = namespaces or None
        self.informers: dict[str, Informer] = {}
        self._listeners: dict[str, list[Listener]] = {}
        self._started = False

    def watch(self, kinds: Iterable[Kind], listener: Listener | None = None) -> None:
        """Keep a copy of each of ``kinds``; report their changes to ``listener``."""
        for kind in kinds:
            if kind.kind not in self.informers:
                assert not self._started, "kinds are added before start()"
                slim = SLIM.get(kind.kind, _typed(kind))
                self.informers[kind.kind] = Informer(
                    self.kube, kind, self.namespaces if kind.namespaced else None, slim=slim,
                    changed=functools.partial(self._changed, kind))
            if listener is not None:
                self._listeners.setdefault(kind.kind, []).append(listener)

    def _changed(self, kind: Kind, namespace: str, name: str, obj: dict[str, Any]) -> None:
        for listener in self._listeners.get(kind.kind, []):
            listener(kind, namespace, name, obj)

    def start(self) -> None:
        if not self._started:
            self._started = True
            for informer in self.informers.values():
                informer.start()

    def stop(self) -> None:
        for informer in self.informers.values():
            informer.stop()

    async def wait_synced(self) -> None:
        for informer in self.informers.values():
            await informer.wait_synced()

    # --- ClusterView (read on the event loop)

    def list(self, kind: Kind, namespace: str | None = None) -> list[Obj]:
        informer = self.informers.get(kind.kind)
        if informer is None:
            raise KeyError(f"{kind.kind} is not watched: add it to the module's `reads`")
        if namespace is None:
            return [o for objs in informer.by_namespace.values() for o in objs.values()]
        return list(informer.by_namespace.get(namespace, {}).values())

    def get(self, kind: Kind, namespace: str | None, name: str) -> Obj | None:
        informer = self.informers.get(kind.kind)
        if informer is None:
            raise KeyError(f"{kind.kind} is not watched: add it to the module's `reads`")
        return informer.by_namespace.get(namespace or "", {}).get(name)
