"""The envoyproxy/ratelimit config file (ConfigMap key ``config.yaml``), pure.

Each SmartLimiter owns the top-level descriptors whose value is one of its
``Service[<name>.<ns>]-Id[...]`` values; everything else in the file is kept.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

CONFIG_KEY = "config.yaml"


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the file grows with every global limiter
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _owner(entry: Any) -> str | None:
    """``<name>.<ns>`` of the SmartLimiter a top-level entry belongs to, from its value."""
    value = entry.get("value") if isinstance(entry, dict) else None
    if isinstance(value, str) and value.startswith("Service[") and "]-" in value:
        return value[len("Service[") : value.index("]-")]
    return None


def parse_rls_config(text: str | None) -> dict[str, Any]:
    """The parsed file ({} when empty). Raises yaml.YAMLError or ValueError if it is not a ratelimit config."""
    doc = yaml.load(text, Loader=_Loader) if text else None
    doc = doc if doc is not None else {}
    if not isinstance(doc, dict) or not isinstance(doc.get("descriptors") or [], list):
        raise ValueError("RLS config is not a mapping with a descriptors list")
    return doc


def rls_owners(doc: Mapping[str, Any]) -> set[str]:
    """``<name>.<ns>`` of every SmartLimiter with an entry in the parsed file."""
    return {owner for e in doc.get("descriptors") or [] if (owner := _owner(e)) is not None}


def merge_rls_doc(
    doc: Mapping[str, Any], updates: Mapping[tuple[str, str], Sequence[dict[str, Any]]], domain: str = "slime"
) -> dict[str, Any]:
    """A new parsed file: ``doc`` (not changed) with the entries of each SmartLimiter
    ``(name, namespace)`` in ``updates`` replaced by the given descriptors (none: removed).
    Other entries and keys are kept; entries are sorted by value."""
    replaced = {f"{name}.{namespace}" for name, namespace in updates}
    merged = [e for e in doc.get("descriptors") or [] if _owner(e) not in replaced]
    # Copies: the result may be kept (the operator caches it) and must share nothing with the caller.
    merged += [copy.deepcopy(dict(d)) for descriptors in updates.values() for d in descriptors]
    merged.sort(
        key=lambda e: (str(e.get("value", "")), str(e.get("key", ""))) if isinstance(e, dict) else ("", "")
    )
    out: dict[str, Any] = {"domain": domain}
    out.update({k: v for k, v in doc.items() if k not in ("domain", "descriptors")})
    out["descriptors"] = merged
    return out


def dump_rls_config(doc: Mapping[str, Any]) -> str:
    return str(yaml.dump(dict(doc), Dumper=_Dumper, sort_keys=False, default_flow_style=False))


def merge_rls_updates(
    text: str | None, updates: Mapping[tuple[str, str], Sequence[dict[str, Any]]], domain: str = "slime"
) -> str:
    """``config.yaml`` with the entries of each SmartLimiter ``(name, namespace)`` in ``updates``
    replaced by the given descriptors (none: removed). Other entries and keys are kept.
    Raises yaml.YAMLError or ValueError if the existing text is not a ratelimit config."""
    return dump_rls_config(merge_rls_doc(parse_rls_config(text), updates, domain))


def merge_rls_config(
    text: str | None, name: str, namespace: str, descriptors: Sequence[dict[str, Any]], domain: str = "slime"
) -> str:
    """``config.yaml`` with one SmartLimiter's entries replaced by ``descriptors`` (none: removed)."""
    return merge_rls_updates(text, {(name, namespace): descriptors}, domain)
