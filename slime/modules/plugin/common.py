"""Pieces both translations share: the EnvoyFilter around the patches, names, merge patch. Pure."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from slime.framework.revision import REV_LABEL
from slime.modules.plugin.api import GROUP, VERSION
from slime.modules.plugin.config import PluginModule

ENVOYFILTER_API = "networking.istio.io/v1alpha3"
TYPED_STRUCT = "type.googleapis.com/udpa.type.v1.TypedStruct"
CONTEXTS = {"Outbound": "SIDECAR_OUTBOUND", "Inbound": "SIDECAR_INBOUND", "Gateway": "GATEWAY"}
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Problem(NamedTuple):
    """Why a CR cannot be applied as it is: a CamelCase reason and a message naming the field."""

    reason: str
    message: str


@dataclass(frozen=True)
class PluginContext:
    """Everything a render needs besides the CR."""

    config: PluginModule = field(default_factory=PluginModule)
    istio_rev: str = ""  # comma list; "" = every revision
    strict_rev: bool = False
    secrets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name -> Secret (CR's namespace)


@dataclass
class Names:
    """Envoy's well-known names (upstream's framework/util/const.go), legacy or current."""

    hcm: str = "envoy.filters.network.http_connection_manager"
    router: str = "envoy.filters.http.router"
    direct: frozenset[str] = frozenset({"envoy.filters.http.ratelimit", "envoy.filters.http.cors", "envoy.ratelimit"})

    @classmethod
    def of(cls, config: PluginModule) -> Names:
        if config.legacyFilterNames:
            return cls("envoy.http_connection_manager", "envoy.router",
                       frozenset({"envoy.rate_limit", "envoy.cors", "envoy.ratelimit"}))
        return cls()


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def typed_struct(type_url: str, value: Any) -> dict[str, Any]:
    ts: dict[str, Any] = {"@type": TYPED_STRUCT, "type_url": type_url}
    if value is not None:
        ts["value"] = copy.deepcopy(value)
    return ts


def context_of(listener_type: str) -> str:
    return CONTEXTS[listener_type]


def envoyfilter(cr: Mapping[str, Any], spec: dict[str, Any], config: PluginModule) -> dict[str, Any]:
    """The EnvoyFilter of a CR: its name and namespace, owned by it, labels as upstream."""
    meta = cr.get("metadata") or {}
    labels_in: Mapping[str, str] = meta.get("labels") or {}
    labels = {k: v for k, v in labels_in.items() if config.passLabelRegex and re.search(config.passLabelRegex, k)}
    if labels_in.get(REV_LABEL):
        labels[REV_LABEL] = labels_in[REV_LABEL]
    metadata: dict[str, Any] = {"name": meta.get("name", ""), "namespace": meta.get("namespace") or "default"}
    if labels:
        metadata["labels"] = dict(sorted(labels.items()))
    if meta.get("uid"):
        metadata["ownerReferences"] = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": cr.get("kind", ""),
                "name": meta.get("name", ""),
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {"apiVersion": ENVOYFILTER_API, "kind": "EnvoyFilter", "metadata": metadata, "spec": spec}


def check_text(value: str, where: str, problems: list[Problem], what: str = "name") -> None:
    """A name that reaches Envoy or an EnvoyFilter match: no control characters."""
    if CONTROL.search(value):
        problems.append(Problem("InvalidName", f"{where}: the {what} {value!r} holds a control character"))


def check_resource_name(name: str, namespace: str, where: str, problems: list[Problem]) -> bool:
    """The name of a wasm/rider plugin becomes the ECDS resource ``<namespace>.<name>``: DNS-1123."""
    if not name:
        problems.append(Problem("InvalidName", f"{where}.name: required for a wasm or rider plugin"))
        return False
    full = f"{namespace}.{name}.rider"
    if not DNS1123_SUBDOMAIN.match(name) or len(full) > 253:
        problems.append(
            Problem(
                "InvalidName",
                f"{where}.name: {name!r} names the extension config '{namespace}.{name}': it must be a DNS-1123 "
                "subdomain (lowercase letters, digits, '-' and '.'; at most 253 characters with the namespace)",
            )
        )
        return False
    return True
