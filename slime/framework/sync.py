"""Keep the set of objects a CR owns equal to the set its render produced.

Children carry the owner's uid in a label (``slime.io/owner-uid``) and, when they live in the
owner's namespace, an ownerReference (so Kubernetes garbage-collects them). Children that are
cluster-scoped or in another namespace cannot have one: they are found by the label and removed
by the reconciler on delete, under the owner's finalizer ``slime.io/children``.

Rules (hardening): an object is only ever applied to, or deleted, when it is this owner's: it
does not exist yet, or it carries this owner's uid (label or ownerReference). An object of the
same name that belongs to someone else is never touched: the sync reports a ``Conflict`` and the
CR says so in its status (two CRs of this process wanting one name: ``Claims``);
every write is a server-side apply (field manager ``slime``), so fields we stop setting go away.

Nothing is written when nothing changed: in listing mode only differences are written; with
``previous`` (the children after this process's last sync) nothing is listed at all.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from slime.framework import kinds
from slime.framework.kinds import Kind
from slime.framework.kube import Kube

MANAGED_BY = "app.kubernetes.io/managed-by"
OWNER_UID = "slime.io/owner-uid"
OWNER_KIND = "slime.io/owner-kind"
OWNER = "slime.io/owner"  # annotation: "<Kind> <namespace>/<name>", to name the owner in messages
CHILDREN_FINALIZER = "slime.io/children"  # on owners of children outside their namespace
# On objects a module instance's hooks write for the instance as a whole (not for one CR: lazyload's
# global-sidecar and fallback route): ``instance_id`` of the operator's peering name, which names the
# Deployment it runs in (a SlimeBoot's modules: ``slime.<namespace>.<name>``), so that the SlimeBoot
# that deployed the instance removes them with it.
INSTANCE = "slime.io/instance"
Key = tuple[str, str, str]  # (kind, namespace or "", name)


def instance_id(peering_name: str) -> str:
    """The ``INSTANCE`` label value of a process whose replicas elect through ``peering_name`` (a hash:
    such names may be longer than a label value)."""
    return hashlib.sha256(peering_name.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Conflict:
    key: Key
    owner: str  # who owns the object instead ("SmartLimiter ns/name", or "someone else")

    @property
    def message(self) -> str:
        return f"{describe(self.key)} already exists and belongs to {self.owner}; not touched"


@dataclass
class SyncResult:
    applied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    children: frozenset[Key] = frozenset()  # ours after the sync (conflicting ones excluded)

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.deleted)


def owner_label(owner: dict[str, Any]) -> str:
    return f"{owner['kind']} {owner['metadata'].get('namespace', '')}/{owner['metadata']['name']}".replace(" /", " ")


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_local(child: dict[str, Any], owner: dict[str, Any]) -> bool:
    """Whether an ownerReference can point from ``child`` to ``owner`` (same namespace)."""
    ns = (child.get("metadata") or {}).get("namespace")
    return bool(ns) and ns == owner["metadata"].get("namespace")


def owned(child: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``child`` labelled (and, in the owner's namespace, referenced) as the owner's.
    A namespaced child without a namespace goes to the owner's; a cluster-scoped one has none."""
    obj = copy.deepcopy(child)
    meta = obj.setdefault("metadata", {})
    if kinds.of(obj).namespaced:
        meta.setdefault("namespace", owner["metadata"].get("namespace"))
    else:
        meta.pop("namespace", None)
    labels = meta.setdefault("labels", {})
    labels[MANAGED_BY] = "slime"
    labels[OWNER_UID] = owner["metadata"]["uid"]
    labels[OWNER_KIND] = owner["kind"].lower()
    meta.setdefault("annotations", {})[OWNER] = owner_label(owner)
    if is_local(obj, owner):
        meta["ownerReferences"] = [owner_reference(owner)]
    else:
        meta.pop("ownerReferences", None)
    return obj


def belongs_to(obj: dict[str, Any], uid: str) -> bool:
    meta = obj.get("metadata") or {}
    if (meta.get("labels") or {}).get(OWNER_UID) == uid:
        return True
    return any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or [])


def owner_of(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    named = (meta.get("annotations") or {}).get(OWNER)
    if named:
        return str(named)
    refs = meta.get("ownerReferences") or []
    if refs:
        return f"{refs[0].get('kind')} {refs[0].get('name')}"
    return "someone else (not created by slime for this object)"


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


def needs_finalizer(desired: Iterable[dict[str, Any]], owner: dict[str, Any]) -> bool:
    """Children that garbage collection cannot remove (cluster-scoped, another namespace)."""
    own_ns = owner["metadata"].get("namespace")
    for obj in desired:
        if not kinds.of(obj).namespaced:
            return True
        if (obj.get("metadata") or {}).get("namespace", own_ns) != own_ns:
            return True
    return False


def list_children(kube: Kube, owner: dict[str, Any], kinds_: Iterable[Kind],
                  everywhere: bool = False) -> dict[Key, dict[str, Any]]:
    """The owner's children by label: in its namespace, or ``everywhere`` (all namespaces)."""
    selector = f"{OWNER_UID}={owner['metadata']['uid']}"
    namespace = None if everywhere else owner["metadata"].get("namespace")
    found: dict[Key, dict[str, Any]] = {}
    for kind in kinds_:
        for obj in kube.list(kind, namespace if kind.namespaced else None, selector):
            found[key_of(obj)] = obj
    return found


def sync_children(
    kube: Kube,
    owner: dict[str, Any],
    desired: Iterable[dict[str, Any]],
    kinds_: Iterable[Kind],
    previous: Collection[Key] | None = None,
    keep: Collection[str] = (),
    claims: Claims | None = None,
) -> SyncResult:
    """Make the owner's children of ``kinds_`` exactly ``desired`` (plus those named in ``keep``,
    left as they are).

    ``previous``: the children after this process's last sync of the owner (``SyncResult.children``).
    Given, nothing is listed: a desired object known as ours is applied (the server makes an equal
    one a no-op), a new one is created, the previous ones no longer desired are deleted. Without it
    the children are listed by label (everywhere when the owner carries ``CHILDREN_FINALIZER``)
    and only differences are written."""
    kinds_ = list(kinds_)
    uid = owner["metadata"]["uid"]
    result = SyncResult()
    want = [owned(obj, owner) for obj in desired]
    wanted_keys = {key_of(obj) for obj in want}
    existing: dict[Key, dict[str, Any]] = {}
    if previous is None:
        everywhere = CHILDREN_FINALIZER in (owner["metadata"].get("finalizers") or [])
        existing = list_children(kube, owner, kinds_, everywhere)
        known = set(existing)
    else:
        known = set(previous)
    ours: set[Key] = set()
    for obj in want:
        key = key_of(obj)
        current = existing.get(key)
        if current is not None and contains(current, obj):
            result.unchanged.append(describe(key))
            ours.add(key)
            continue
        conflict = _write(kube, obj, key in known, uid, owner_label(owner), claims)
        if conflict is not None:
            result.conflicts.append(Conflict(key, conflict))
            continue
        result.applied.append(describe(key))
        ours.add(key)
    kept = {k for k in known if k[2] in keep}
    gone = known - wanted_keys - kept
    for key in sorted(gone):
        listed = existing.get(key) or {}
        if kube.delete(_kind(kinds_, key), key[1] or None, key[2], uid=listed.get("metadata", {}).get("uid")):
            result.deleted.append(describe(key))
    result.children = frozenset(ours | kept)
    if claims is not None:
        claims.release_all(uid, keep=result.children)
    return result


def _write(kube: Kube, obj: dict[str, Any], known: bool, uid: str, label: str,
           claims: Claims | None) -> str | None:
    """Server-side apply ``obj`` if it is ours to write; else who owns it instead.

    A child not known as ours is read first: applied only when absent or already carrying our
    uid (created before a restart, or by an earlier version). ``claims`` closes the window
    between that read and the write for two CRs of this process wanting the same name."""
    key = key_of(obj)
    if claims is not None:
        other = claims.claim(key, uid, label)
        if other is not None:
            return other
    if not known:
        kind, meta = kinds.of(obj), obj["metadata"]
        current = kube.get(kind, meta.get("namespace"), meta["name"])
        if current is not None and not belongs_to(current, uid):
            if claims is not None:
                claims.release(key, uid)
            return owner_of(current)
    kube.apply(obj)
    return None


class Claims:
    """Which owner (uid) writes each child name in this process: two CRs whose renders produce the
    same child name must not overwrite each other's object; the second is told who has it."""

    def __init__(self) -> None:
        self._owners: dict[Key, tuple[str, str]] = {}
        self._by_uid: dict[str, set[Key]] = {}

    def claim(self, key: Key, uid: str, label: str) -> str | None:
        """None when ``uid`` may write ``key`` (now claimed by it); else the other owner."""
        current = self._owners.setdefault(key, (uid, label))
        if current[0] == uid:
            self._by_uid.setdefault(uid, set()).add(key)
            return None
        return current[1]

    def release(self, key: Key, uid: str) -> None:
        if self._owners.get(key, ("",))[0] == uid:
            del self._owners[key]
            self._by_uid.get(uid, set()).discard(key)

    def release_all(self, uid: str, keep: Collection[Key] = ()) -> None:
        """Forget ``uid``'s claims except ``keep`` (its children after a sync; none once deleted)."""
        claimed = self._by_uid.get(uid, set())
        for key in [k for k in claimed if k not in keep]:
            self._owners.pop(key, None)
            claimed.discard(key)
        if not claimed:
            self._by_uid.pop(uid, None)

    def __len__(self) -> int:
        return len(self._owners)


def delete_children(kube: Kube, owner: dict[str, Any], kinds_: Iterable[Kind]) -> list[str]:
    """Delete every child of the owner, wherever it is (an owner being deleted)."""
    deleted = []
    kinds_ = list(kinds_)
    for key, obj in list_children(kube, owner, kinds_, everywhere=True).items():
        if kube.delete(_kind(kinds_, key), key[1] or None, key[2], uid=obj["metadata"].get("uid")):
            deleted.append(describe(key))
    return deleted


def _kind(kinds_: list[Kind], key: Key) -> Kind:
    return next(k for k in kinds_ if k.kind == key[0])


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace") or "", meta["name"]


def describe(key: Key) -> str:
    kind, namespace, name = key
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
