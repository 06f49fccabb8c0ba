"""What the SlimeBoot render needs besides the CR (pure): the boot config, every module's RBAC
rules and config model (``Settings.catalog``), which namespaces exist, and whether the installed
SlimeBoot CRD is ours."""

from __future__ import annotations

from typing import Any

from slime.boot.api import SLIME_BOOT
from slime.boot.config import BootConfig
from slime.boot.render import BootContext
from slime.framework.kinds import CRD, NAMESPACE
from slime.framework.module import ClusterView, Metrics, Obj, Settings

PART_OF = "app.kubernetes.io/part-of"
FOREIGN_CRD = (f"the installed CRD {SLIME_BOOT.crd_name} is not slime's (upstream's install/init?): it has no "
               "Ready column and silently drops misspelt fields; apply slime's CRDs again (README, Migrating "
               "from upstream)")


def crd_verdict(crd: Obj | None) -> tuple[bool, str] | None:
    """(ours, message) about the SlimeBoot CRD; None when it was not seen (``slime render`` without it)."""
    if crd is None:
        return None
    labels = (crd.get("metadata") or {}).get("labels") or {}
    versions = (crd.get("spec") or {}).get("versions") or []
    columns = {c.get("name") for v in versions if v.get("name") == SLIME_BOOT.version
               for c in v.get("additionalPrinterColumns") or []}
    if labels.get(PART_OF) == "slime" and "Ready" in columns:
        return True, f"{SLIME_BOOT.crd_name} is slime's"
    return False, FOREIGN_CRD


def context(cr: Obj, cluster: ClusterView, settings: Settings, metrics: Metrics) -> BootContext:
    config: Any = settings.general
    if not isinstance(config, BootConfig):
        config = BootConfig.model_validate(config or {})
    names = {str((ns.get("metadata") or {}).get("name")) for ns in cluster.list(NAMESPACE)}
    names.add(str((cr.get("metadata") or {}).get("namespace") or ""))  # the SlimeBoot's own exists
    return BootContext(config=config, catalog=dict(settings.catalog), namespaces=tuple(sorted(names)),
                       crd=crd_verdict(cluster.get(CRD, None, SLIME_BOOT.crd_name)))
