"""``istio.io/rev`` scoping, as upstream: which objects one slime instance handles."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REV_LABEL = "istio.io/rev"


def rev_in_scope(rev: str, istio_rev: str, strict_rev: bool) -> bool:
    """Whether an object labelled ``istio.io/rev=rev`` ("" when unlabelled) is this instance's:
    every object when ``istio_rev`` (global.istioRev, a comma list) is empty; otherwise those with
    one of its values, and unlabelled ones unless ``strict_rev``."""
    if not istio_rev:
        return True
    if not rev and not strict_rev:
        return True
    return rev in [r.strip() for r in istio_rev.split(",")]


def object_in_scope(obj: Mapping[str, Any], istio_rev: str, strict_rev: bool) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return rev_in_scope(str(labels.get(REV_LABEL, "")), istio_rev, strict_rev)
