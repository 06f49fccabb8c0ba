"""The envoyproxy/ratelimit config file (ConfigMap key ``config.yaml``), pure.

Each SmartLimiter owns the top-level descriptors whose value is one of its
``Service[<name>.<ns>]-Id[...]`` values; everything else in the file is kept.
"""

from __future__ import annotations

import copy
import functools
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


# --------------------------------------------------------------------------- the shared output


def rls_ref(settings: Any) -> tuple[Any, str, str] | None:
    """(kind, namespace, name) of the RLS ConfigMap, or None when global limits write none.
    A ``rlsConfigMap`` without a namespace means the module's ``istioNamespace`` (on every path)."""
    from slime.framework.kinds import CONFIG_MAP

    config = settings.general
    ref = config.rlsConfigMap
    if config.disableGlobalRateLimit or ref is None or not ref.name:
        return None
    return CONFIG_MAP, ref.namespace or settings.globals.istioNamespace, ref.name


def build_configmap(existing: Mapping[str, Any] | None, parts: Mapping[tuple[str, str], Any],
                    settings: Any) -> dict[str, Any] | None:
    """The RLS ConfigMap with each SmartLimiter's entries replaced by its part (``(namespace, name)``
    -> descriptors; empty removes them; None leaves them as they are), or None when nothing
    changes. The one function ``slime render`` and the operator both use. Raises yaml.YAMLError or
    ValueError when the existing ``config.yaml`` is not a ratelimit config."""
    ref = rls_ref(settings)
    if ref is None:
        return None
    _, namespace, name = ref
    updates = {(n, ns): list(p) for (ns, n), p in parts.items() if p is not None}
    data = dict((existing or {}).get("data") or {})
    text = data.get(CONFIG_KEY) or ""
    doc = _parse_cached(text)
    if not any(updates.values()) and not _owners_cached(text) & {f"{n}.{ns}" for n, ns in updates}:
        return None  # only removals, of entries that are not there
    merged = merge_rls_doc(doc, updates, domain=settings.general.rls_domain)
    if existing is not None and merged == doc:
        return None
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    labels = ((existing or {}).get("metadata") or {}).get("labels")
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
            "data": {**data, CONFIG_KEY: dump_rls_config(merged)}}


@functools.lru_cache(maxsize=4)
def _owners_cached(text: str) -> frozenset[str]:
    return frozenset(rls_owners(_parse_cached(text)))


@functools.lru_cache(maxsize=4)
def _parse_cached(text: str) -> dict[str, Any]:
    # A file with many global limiters takes tens of ms to parse (holding the GIL); the operator
    # rebuilds from the same text until the ConfigMap changes. Callers never mutate the result.
    return parse_rls_config(text)
