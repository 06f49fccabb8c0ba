"""Kubernetes Events on Slime objects, for ``kubectl describe``: Ready flips, invalid specs,
write failures. De-duplicated: the same (reason, message) on the same object is emitted once,
until something else was said about it. Blocking: call from a worker thread."""

from __future__ import annotations

import logging
import threading
from typing import Any

from slime.framework.api import now_rfc3339
from slime.framework.kube import Kube, short_error

log = logging.getLogger("slime.events")
COMPONENT = "slime"


class Recorder:
    def __init__(self, kube: Kube, component: str = COMPONENT) -> None:
        self.kube = kube
        self.component = component
        self._last: dict[str, tuple[str, str]] = {}  # uid -> last (reason, message)
        self._lock = threading.Lock()

    def emit(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> bool:
        """Post an Event about ``obj`` unless it repeats the last one; False when skipped or failed."""
        meta = obj["metadata"]
        uid = meta.get("uid", "")
        with self._lock:
            if self._last.get(uid) == (reason, message):
                return False
            self._last[uid] = (reason, message)
        now = now_rfc3339()
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name'][:200]}.", "namespace": meta.get("namespace") or "default"},
            "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta["name"],
                               "namespace": meta.get("namespace"), "uid": uid,
                               "resourceVersion": meta.get("resourceVersion")},
            "type": type_, "reason": reason, "message": message[:1024],
            "source": {"component": self.component}, "reportingComponent": self.component,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            self.kube.create(event)
            return True
        except Exception as e:  # an event is a courtesy: never let it fail a reconcile
            log.warning("Could not post event %s on %s %s/%s: %s", reason, obj.get("kind"),
                        meta.get("namespace"), meta["name"], short_error(e))
            return False

    def forget(self, uid: str) -> None:
        with self._lock:
            self._last.pop(uid, None)

    def __len__(self) -> int:
        return len(self._last)
