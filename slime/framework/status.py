"""Status of Slime objects: written through the status subresource, only when it changed;
``Ready`` going False, and back to True, becomes an Event and one log line; conditions become gauges.

A failure on the way (an API write refused, a name the apiserver rejects) always ends in a
condition: ``Ready`` False with the reason, so every problem shows in ``kubectl get``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from kubernetes.client.exceptions import ApiException

from slime.framework import observability
from slime.framework.conditions import READY, ConditionUpdate, bounded, same_conditions, set_conditions
from slime.framework.events import Recorder
from slime.framework.kinds import lookup
from slime.framework.kube import Kube, short_error
from slime.framework.module import Rendered
from slime.framework.names import InvalidNameError

log = logging.getLogger("slime.status")


def finalizer_patch(cr: dict[str, Any], add: str | None = None, remove: Iterable[str] = ()) -> dict[str, Any]:
    """A merge patch of ``metadata.finalizers``. It replaces the whole list, so the
    resourceVersion precondition keeps others' finalizers: on a conflict the caller retries."""
    meta = cr["metadata"]
    finalizers = [f for f in meta.get("finalizers") or [] if f not in set(remove)]
    if add and add not in finalizers:
        finalizers.append(add)
    return {"metadata": {"resourceVersion": meta["resourceVersion"], "finalizers": finalizers or None}}


def failure_reason(e: BaseException) -> str:
    if isinstance(e, InvalidNameError):
        return "InvalidName"
    if isinstance(e, ApiException):
        return {403: "Forbidden", 404: "NotFound", 409: "Conflict", 422: "Rejected"}.get(e.status or 0, "WriteFailed")
    return "WriteFailed"


def merge_diff(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) turning ``old`` into ``new``: maps recurse and keys that
    are gone become null (a plain ``new`` would leave them in the stored object); anything else
    is replaced whole."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_diff(old[key], value)
    return patch


class StatusWriter:
    def __init__(self, kube: Kube, recorder: Recorder | None = None) -> None:
        self.kube = kube
        self.recorder = recorder
        self._written: dict[str, dict[str, Any]] = {}  # uid -> status we wrote (the body may lag)
        self._lock = threading.Lock()

    def conditions_of(self, uid: str) -> list[dict[str, Any]]:
        return list(self._written.get(uid, {}).get("conditions") or [])

    def forget(self, uid: str) -> None:
        with self._lock:
            self._written.pop(uid, None)

    def __len__(self) -> int:
        return len(self._written)

    def write(self, cr: dict[str, Any], rendered: Rendered, sync_problems: list[tuple[str, str]]) -> None:
        conditions = list(rendered.conditions)
        if sync_problems:
            message = bounded([m for _, m in sync_problems])
            conditions = [c for c in conditions if c.type != READY]
            conditions.insert(0, ConditionUpdate(READY, False, sync_problems[0][0], message))
        fields = rendered.status if rendered.objects is not None else {}
        self._patch(cr, fields, conditions)

    def write_failure(self, cr: dict[str, Any], error: BaseException) -> None:
        """An evaluation failed (an API write, most likely): say so in Ready, never silently."""
        update = ConditionUpdate(READY, False, failure_reason(error), f"could not write: {short_error(error)}")
        old = [ConditionUpdate(c["type"], c["status"], c.get("reason", ""), c.get("message", ""))
               for c in self._current(cr).get("conditions") or [] if c.get("type") != READY]
        try:
            self._patch(cr, {}, [update, *old])
        except Exception as e:  # the status itself could not be written: the log line is all we have
            log.warning("Could not write the status of %s %s/%s: %s", cr.get("kind"),
                        cr["metadata"].get("namespace"), cr["metadata"]["name"], short_error(e))

    def _current(self, cr: dict[str, Any]) -> dict[str, Any]:
        return {**(cr.get("status") or {}), **self._written.get(cr["metadata"].get("uid", ""), {})}

    def _patch(self, cr: dict[str, Any], fields: dict[str, Any], conditions: list[ConditionUpdate]) -> None:
        meta = cr["metadata"]
        uid = meta.get("uid", "")
        old = self._current(cr)
        generation = meta.get("generation", 0)
        new_conditions = set_conditions(old.get("conditions"), conditions, generation, replace=True)
        patch: dict[str, Any] = {k: merge_diff(old.get(k), v) for k, v in fields.items() if old.get(k) != v}
        if old.get("observedGeneration") != generation:
            patch["observedGeneration"] = generation
        if not same_conditions(old.get("conditions"), new_conditions):
            patch["conditions"] = new_conditions
        if not patch:
            return
        kind = lookup(cr["apiVersion"], cr["kind"])
        self.kube.merge_patch(kind, meta.get("namespace"), meta["name"], {"status": patch}, subresource="status")
        with self._lock:
            written = self._written.setdefault(uid, {})
            written.update({k: v for k, v in fields.items() if k in patch})
            if "conditions" in patch:
                written["conditions"] = patch["conditions"]
            if "observedGeneration" in patch:
                written["observedGeneration"] = patch["observedGeneration"]
        if "conditions" in patch:
            self._report(cr, old.get("conditions") or [], new_conditions)

    def _report(self, cr: dict[str, Any], before: list[dict[str, Any]], after: list[dict[str, Any]]) -> None:
        meta = cr["metadata"]
        observability.set_conditions(cr["kind"], meta.get("namespace") or "", meta["name"],
                                     {c["type"]: c["status"] for c in after})
        was = next((c for c in before if c.get("type") == READY), {})
        now = next((c for c in after if c.get("type") == READY), {})
        if (was.get("status"), was.get("reason"), was.get("message")) == (now.get("status"), now.get("reason"),
                                                                         now.get("message")):
            return
        label = f"{cr['kind']} {meta.get('namespace')}/{meta['name']}"
        if now.get("status") == "True":
            if was.get("status") != "False":
                # a new object that is fine, or a new message: nothing to look into (no Event, no line)
                log.debug("%s is Ready: %s", label, now.get("message"))
                return
            log.info("%s is Ready again: %s", label, now.get("message"))
            event_type = "Normal"
        else:
            log.warning("%s is not Ready (%s): %s", label, now.get("reason"), now.get("message"))
            event_type = "Warning"
        if self.recorder is not None:
            self.recorder.emit(cr, event_type, str(now.get("reason") or "Ready"), str(now.get("message") or ""))
