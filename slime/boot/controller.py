"""What only the operator does for SlimeBoots, beyond the generic reconciler: read the installed
SlimeBoot CRD at start-up (one log line when it is upstream's, and the ``CRDCompatible`` condition on
every SlimeBoot), wake the SlimeBoots when a namespace comes or goes, and, when a SlimeBoot is
deleted, remove what the modules it deployed wrote for themselves (lazyload's global-sidecar and
fallback route: upstream's chart deployed those with the SlimeBoot, so they went with it)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from slime.boot.api import SLIME_BOOT
from slime.boot.context import FOREIGN_CRD, crd_verdict
from slime.framework.kinds import CLUSTER_PEERING, CRD, DEPLOYMENT, POD, Kind
from slime.framework.module import ClusterView, Hooks, Obj
from slime.framework.sync import INSTANCE, OWNER_UID, instance_id

log = logging.getLogger("slime.boot")
PODS_GONE_TIMEOUT = 60.0  # seconds the clean-up waits for a deleted module's Pods to stop


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

    def deleted(self, cr: Obj) -> None:
        """Blocking; before the generic clean-up of the children (the SlimeBoot always has some outside
        GC's reach: its ClusterRoles). The objects of the ``Module.manages`` kinds labelled with the
        instance id of a module it deployed (its peering name) are deleted, after that module's
        Deployment and Pods, so that no module Pod writes them again meanwhile."""
        kube = self.runtime.kube
        uid = cr["metadata"]["uid"]
        manages = {k.kind: k for info in self.runtime.settings.catalog.values() for k in info.manages}
        ids = [instance_id(p["metadata"]["name"]) for p in kube.list(CLUSTER_PEERING, None, f"{OWNER_UID}={uid}")]

        def written() -> list[tuple[Kind, Obj]]:
            return [(kind, obj) for kind in manages.values() for i in ids
                    for obj in kube.list(kind, None, f"{INSTANCE}={i}")]

        if not ids or not written():
            return
        deployments = kube.list(DEPLOYMENT, None, f"{OWNER_UID}={uid}")
        for dep in deployments:
            kube.delete(DEPLOYMENT, dep["metadata"]["namespace"], dep["metadata"]["name"])
        deadline = time.monotonic() + PODS_GONE_TIMEOUT
        for dep in deployments:
            labels = (dep["spec"].get("selector") or {}).get("matchLabels") or {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            while selector and kube.list(POD, dep["metadata"]["namespace"], selector) and time.monotonic() < deadline:
                time.sleep(0.5)
        for kind, obj in written():
            meta = obj["metadata"]
            if kube.delete(kind, meta.get("namespace"), meta["name"], uid=meta.get("uid")):
                log.info("Deleted %s %s/%s of a module of deleted SlimeBoot %s/%s", kind.kind, meta.get("namespace"),
                         meta["name"], cr["metadata"]["namespace"], cr["metadata"]["name"])
