"""What only the operator does for SlimeBoots, beyond the generic reconciler: read the installed
SlimeBoot CRD at start-up (one log line when it is upstream's, and the ``CRDCompatible`` condition on
every SlimeBoot), and wake the SlimeBoots when a namespace comes or goes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from slime.boot.api import SLIME_BOOT
from slime.boot.context import FOREIGN_CRD, crd_verdict
from slime.framework.kinds import CRD, Kind
from slime.framework.module import ClusterView, Hooks, Obj

log = logging.getLogger("slime.boot")


class WithCrd:
    """A cluster view that also holds the SlimeBoot CRD as read at start-up."""

    def __init__(self, cluster: ClusterView, crd: Obj | None) -> None:
        self.cluster, self.crd = cluster, crd

    def list(self, kind: Kind, namespace: str | None = None) -> list[Obj]:
        if kind == CRD:
            return [self.crd] if self.crd is not None else []
        return self.cluster.list(kind, namespace)

    def get(self, kind: Kind, namespace: str | None, name: str) -> Obj | None:
        if kind == CRD:
            return self.crd if name == SLIME_BOOT.crd_name else None
        return self.cluster.get(kind, namespace, name)


class BootHooks(Hooks):
    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        self.crd: Obj | None = None

    async def start(self) -> None:
        self.crd = await asyncio.to_thread(self.read_crd)
        verdict = crd_verdict(self.crd)
        if verdict is not None and not verdict[0]:
            log.warning("Found a foreign SlimeBoot CRD: %s", FOREIGN_CRD)

    def read_crd(self) -> Obj | None:
        try:
            return self.runtime.kube.get(CRD, None, SLIME_BOOT.crd_name)
        except ApiException as e:
            log.warning("Could not read CRD %s (%s): not checked", SLIME_BOOT.crd_name, e.reason)
            return None

    def view(self, cr: Obj, cluster: ClusterView, state: dict[str, Any]) -> ClusterView:
        return WithCrd(cluster, self.crd)

    def dependents(self, kind: Kind, namespace: str, name: str, obj: Obj,
                   crs: Mapping[tuple[str, str], dict[str, Any]]) -> Iterable[tuple[str, str]]:
        return list(crs)  # a namespace came or went: few SlimeBoots, any may deploy into it
