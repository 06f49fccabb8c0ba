"""The envoyproxy/ratelimit config file (ConfigMap key ``config.yaml``), pure.

Each SmartLimiter owns the top-level descriptors whose value is one of its
``Service[<name>.<ns>]-Id[...]`` values; everything else in the file is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

CONFIG_KEY = "config.yaml"


def _owned(entry: Any, name: str, namespace: str) -> bool:
    # upstream matches the substring "<name>.<ns>", which also hits "x<name>.<ns>"
    value = entry.get("value") if isinstance(entry, dict) else None
    return isinstance(value, str) and value.startswith(f"Service[{name}.{namespace}]-")


def merge_rls_config(
    text: str | None, name: str, namespace: str, descriptors: Sequence[dict[str, Any]], domain: str = "slime"
) -> str:
    """``config.yaml`` with this SmartLimiter's entries replaced by ``descriptors``.

    Pass no descriptors to remove its entries (on delete). Other keys of the file
    (e.g. shadow_mode in other entries) are kept. Raises yaml.YAMLError or ValueError
    if the existing text is not a ratelimit config.
    """
    doc = yaml.safe_load(text) if text else None
    doc = doc if doc is not None else {}
    if not isinstance(doc, dict) or not isinstance(doc.get("descriptors") or [], list):
        raise ValueError("RLS config is not a mapping with a descriptors list")
    kept = [e for e in doc.get("descriptors") or [] if not _owned(e, name, namespace)]
    merged = kept + [dict(d) for d in descriptors]
    merged.sort(
        key=lambda e: (str(e.get("value", "")), str(e.get("key", ""))) if isinstance(e, dict) else ("", "")
    )
    out: dict[str, Any] = {"domain": domain}
    out.update({k: v for k, v in doc.items() if k not in ("domain", "descriptors")})
    out["descriptors"] = merged
    return yaml.safe_dump(out, sort_keys=False, default_flow_style=False)
