"""The RBAC rules a set of modules needs, derived from what each declares (pure).

A module reads its ``reads`` kinds (informers: get, list, watch), writes its ``writes`` kinds
(its children: also create, update, patch, delete), updates the object it shares with other CRs
(get, create, patch), and manages its own kinds (watch; patch for finalizers and status).
Every process also needs kopf's and slime's own: CRDs and namespaces (kopf's scan), peering
objects, Events. Nothing gets ``*``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from slime.framework.kinds import CLUSTER_PEERING, CRD, EVENT, NAMESPACE, NAMESPACED_PEERING, Kind
from slime.framework.module import Module

READ = ("get", "list", "watch")
WRITE = (*READ, "create", "update", "patch", "delete")
SHARED = ("get", "create", "patch")
OWN = (*READ, "patch")
_ORDER = ("get", "list", "watch", "create", "update", "patch", "delete")


def _add(grants: dict[tuple[str, str], set[str]], kind: Kind, verbs: Iterable[str], sub: str = "") -> None:
    grants.setdefault((kind.group, kind.plural + sub), set()).update(verbs)


def rules_for(modules: Iterable[Module]) -> list[dict[str, Any]]:
    """ClusterRole rules, one per (API group, verbs), resources sorted."""
    grants: dict[tuple[str, str], set[str]] = {}
    basics: tuple[tuple[Kind, tuple[str, ...]], ...] = (
        (CRD, READ), (NAMESPACE, READ), (CLUSTER_PEERING, (*READ, "create", "patch")),
        (NAMESPACED_PEERING, (*READ, "create", "patch")), (EVENT, ("create",)))
    for kind, verbs in basics:
        _add(grants, kind, verbs)
    for module in modules:
        for kind in module.reads:
            _add(grants, kind, READ)
        for kind in (*module.writes, *module.manages):
            _add(grants, kind, WRITE)
        if module.shared is not None:
            _add(grants, module.shared.kind, SHARED)
        for info in module.kinds:
            _add(grants, info.kind_ref, OWN)
            _add(grants, info.kind_ref, ("patch",), "/status")
    by_verbs: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), granted in sorted(grants.items()):
        ordered = tuple(v for v in _ORDER if v in granted)
        by_verbs.setdefault((group, ordered), []).append(resource)
    return [{"apiGroups": [group], "resources": sorted(resources), "verbs": list(verbs)}
            for (group, verbs), resources in sorted(by_verbs.items())]
