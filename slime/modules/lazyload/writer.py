"""The module's own writes, outside the per-fence sync. Blocking: call them in a worker thread.

* ``apply_plan``: auto-fence's creates and deletes. A create never replaces an existing object
  (409 is fine: someone made the fence first); a delete re-reads the fence and deletes it only if it
  still carries auto-fence's label (a fence the user adopted meanwhile stays).
* ``sync_fallback``: the fallback route's objects (``render_fallback``). Each is applied only when it is
  absent or already labelled as this instance's; a foreign object of the same name is reported, never
  overwritten. Objects of this instance that are no longer wanted are deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from slime.framework.kinds import CONFIG_MAP, DEPLOYMENT, DESTINATION_RULE, ENVOY_FILTER, SERVICE, lookup
from slime.modules.lazyload.api import SERVICE_FENCE
from slime.modules.lazyload.autofence import Plan, is_ours
from slime.modules.lazyload.globalsidecar import FALLBACK_LABEL
from slime.modules.lazyload.names import check_object_name

log = logging.getLogger("slime.lazyload")
FENCE = SERVICE_FENCE.kind_ref
FALLBACK_KINDS = (DEPLOYMENT, SERVICE, CONFIG_MAP, ENVOY_FILTER, DESTINATION_RULE)


class Client(Protocol):
    """What is needed of ``slime.framework.kube.Kube``."""

    def get(self, kind: Any, namespace: str | None, name: str) -> dict[str, Any] | None: ...
    def list(self, kind: Any, namespace: str | None, label_selector: str = "") -> list[dict[str, Any]]: ...
    def create(self, obj: dict[str, Any]) -> dict[str, Any]: ...
    def apply(self, obj: dict[str, Any], *, subresource: str = "") -> dict[str, Any]: ...
    def delete(self, kind: Any, namespace: str | None, name: str, uid: str | None = None) -> bool: ...


@dataclass
class Outcome:
    written: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _status(e: Exception) -> int | None:
    return getattr(e, "status", None)


def apply_plan(client: Client, plan: Plan) -> Outcome:
    out = Outcome()
    for fence in plan.create:
        meta = fence["metadata"]
        ref = f"ServiceFence {meta['namespace']}/{meta['name']}"
        try:
            check_object_name(meta["name"])
            client.create(fence)
            out.written.append(ref)
            log.info("Created %s (auto-fence)", ref)
        except Exception as e:  # noqa: BLE001 - reported per object, the others go on
            if _status(e) == 409:
                continue
            out.errors.append(f"{ref}: {e}".splitlines()[0])
    for ns, name in plan.delete:
        ref = f"ServiceFence {ns}/{name}"
        try:
            current = client.get(FENCE, ns, name)
            if current is None or not is_ours(current):
                continue
            if client.delete(FENCE, ns, name):
                out.deleted.append(ref)
                log.info("Deleted %s (auto-fence: no longer wanted)", ref)
        except Exception as e:  # noqa: BLE001
            out.errors.append(f"{ref}: {e}".splitlines()[0])
    return out


def _ref(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind']} {obj['metadata']['namespace']}/{obj['metadata']['name']}"


def sync_fallback(client: Client, desired: Iterable[dict[str, Any]], instance: str,
                  namespaces: Iterable[str]) -> Outcome:
    """Make the fallback objects of ``instance`` in ``namespaces`` exactly ``desired``."""
    out = Outcome()
    wanted = {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]): o for o in desired}
    for (kind_name, ns, name), obj in sorted(wanted.items()):
        kind = lookup(obj["apiVersion"], kind_name)
        try:
            current = client.get(kind, ns, name)
            owner = ((current or {}).get("metadata") or {}).get("labels", {}).get(FALLBACK_LABEL)
            if current is not None and owner != instance:
                out.conflicts.append(f"{_ref(obj)} exists and is not this module's (label {FALLBACK_LABEL})")
                continue
            client.apply(obj)
            out.written.append(_ref(obj))
        except Exception as e:  # noqa: BLE001
            out.errors.append(f"{_ref(obj)}: {e}".splitlines()[0])
    for kind in FALLBACK_KINDS:
        for ns in sorted(set(namespaces)):
            try:
                existing = client.list(kind, ns, f"{FALLBACK_LABEL}={instance}")
            except Exception as e:  # noqa: BLE001
                out.errors.append(f"list {kind.kind} in {ns}: {e}".splitlines()[0])
                continue
            for obj in existing:
                key = (kind.kind, ns, obj["metadata"]["name"])
                if key not in wanted:
                    try:
                        if client.delete(kind, ns, obj["metadata"]["name"]):
                            out.deleted.append(f"{kind.kind} {ns}/{obj['metadata']['name']}")
                    except Exception as e:  # noqa: BLE001
                        out.errors.append(f"delete {kind.kind} {ns}/{obj['metadata']['name']}: {e}".splitlines()[0])
    for line in out.conflicts + out.errors:
        log.warning("Fallback route: %s", line)
    return out

