"""Keep the set of objects a CR owns equal to the set its render produced.

List the existing children by an ownership label, apply the missing or changed ones
(server-side apply, field manager ``slime``), delete the extras. Nothing is written
when nothing changed, so a periodic re-render of an unchanged CR costs only a list. A caller
that knows the children from its last sync can skip the list (see ``sync_children``).
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from slime.framework.kube import Kind, Kube

MANAGED_BY = "app.kubernetes.io/managed-by"
OWNER_UID = "slime.io/owner-uid"
OWNER_KIND = "slime.io/owner-kind"


@dataclass
class SyncResult:
    applied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    children: frozenset[tuple[str, str, str]] = frozenset()  # (kind, namespace, name) after the sync

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.deleted)


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned(child: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``child`` labelled and referenced as owned by ``owner``."""
    obj = copy.deepcopy(child)
    meta = obj.setdefault("metadata", {})
    meta.setdefault("namespace", owner["metadata"].get("namespace"))
    labels = meta.setdefault("labels", {})
    labels[MANAGED_BY] = "slime"
    labels[OWNER_UID] = owner["metadata"]["uid"]
    labels[OWNER_KIND] = owner["kind"].lower()
    same_namespace = meta.get("namespace") == owner["metadata"].get("namespace")
    if same_namespace:  # owner references cannot cross namespaces
        meta["ownerReferences"] = [owner_reference(owner)]
    return obj


def contains(have: Any, want: Any) -> bool:
    """True when every field in ``want`` is in ``have`` with the same value.

    The server adds fields (uid, resourceVersion, managedFields, defaults); those are
    not differences. Lists must match in length and element by element.
    """
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and contains(have[k], v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(have) == len(want) and all(map(contains, have, want))
    return bool(have == want)


def sync_children(
    kube: Kube,
    owner: dict[str, Any],
    desired: Iterable[dict[str, Any]],
    kinds: Iterable[Kind],
    previous: Collection[tuple[str, str, str]] | None = None,
) -> SyncResult:
    """Make the owner's children of ``kinds`` exactly ``desired``.

    ``previous``: the children after this process's last sync of the owner (``SyncResult.children``).
    Given, nothing is listed: every desired object is applied (the server makes an equal one a
    no-op) and the previous ones no longer desired are deleted; one round trip less per change.
    Without it the children are listed and only differences are written (after a start, and now
    and then to repair what others changed)."""
    kinds = list(kinds)
    result = SyncResult()
    namespace = owner["metadata"].get("namespace")
    want = [owned(obj, owner) for obj in desired]
    wanted_keys = frozenset(_key(obj) for obj in want)
    existing: dict[tuple[str, str, str], dict[str, Any]] = {}
    if previous is None:
        selector = f"{OWNER_UID}={owner['metadata']['uid']}"
        for kind in kinds:
            for obj in kube.list(kind, namespace, selector):
                existing[_key(obj)] = obj
    for obj in want:
        key = _key(obj)
        current = existing.get(key)
        if current is not None and contains(current, obj):
            result.unchanged.append(_name(key))
            continue
        kube.apply(obj)
        result.applied.append(_name(key))
    gone = (set(previous) if previous is not None else set(existing)) - wanted_keys
    for key in sorted(gone):
        kind_name, ns, name = key
        if kube.delete(next(k for k in kinds if k.kind == kind_name), ns or None, name):
            result.deleted.append(_name(key))
    result.children = wanted_keys
    return result


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace") or "", meta["name"]


def _name(key: tuple[str, str, str]) -> str:
    kind, namespace, name = key
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
