"""The plugin module's ``general`` config (upstream's ``PluginModule``), plus two of our own.

Upstream's fields: ``proxyVersion`` and ``configDiscoveryDefaultConfig``. Ours:

* ``proxyTypeUrls``: filter config types the mesh's proxies know beyond stock Envoy 1.40
  (e.g. the rider type of NetEase's proxy build). A plugin whose type is neither is reported
  ``UnknownTypeUrl`` and not written: stock proxies would reject the whole listener update.
* ``legacyFilterNames`` and ``passLabelRegex``: upstream's environment variables
  ``ENVOY_FILTER_NAME_LEGACY`` and ``SLIME_PASS_LBL_REG``, as config (a render reads no environment).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from slime.framework.api import SlimeModel

TYPED_STRUCTS = frozenset({"udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct"})
OPAQUE: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}


class PluginModule(SlimeModel):
    """``general`` of the plugin module."""

    proxyVersion: str = Field(
        default="",
        description="RE2 regex matched against the proxy version; set on every generated patch with a match",
    )
    configDiscoveryDefaultConfig: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Filter type URL -> default_config of the ECDS config_discovery (used until the plugin loads)",
        json_schema_extra=OPAQUE,
    )
    proxyTypeUrls: list[str] = Field(
        default_factory=list,
        description="Filter config types the proxies know beyond stock Envoy 1.40 (ours)",
    )
    legacyFilterNames: bool = Field(
        default=False, description="Upstream's ENVOY_FILTER_NAME_LEGACY: envoy.http_connection_manager etc."
    )
    passLabelRegex: str = Field(
        default="", description="Upstream's SLIME_PASS_LBL_REG: CR labels matching it go onto the EnvoyFilter"
    )

    @field_validator("proxyVersion", "passLabelRegex")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        return value

    @field_validator("configDiscoveryDefaultConfig")
    @classmethod
    def _typed(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for type_url, config in value.items():
            at_type = config.get("@type")
            if not isinstance(at_type, str) or not at_type:
                raise ValueError(f"{type_url}: a default config is an Any: it needs an '@type'")
            inner = config.get("type_url") if at_type.rpartition("/")[2] in TYPED_STRUCTS else at_type
            if str(inner).rpartition("/")[2] != type_url.rpartition("/")[2]:
                raise ValueError(f"{type_url}: the default config is a {inner or 'TypedStruct without type_url'}, "
                                 "not this type (Envoy rejects a default_config of another type)")
        return value

    @property
    def extra_types(self) -> frozenset[str]:
        return frozenset(t.rpartition("/")[2] for t in self.proxyTypeUrls)
