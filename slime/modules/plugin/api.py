"""PluginManager and EnvoyPlugin (``microservice.slime.io/v1alpha1``).

Field names follow upstream's protos (``plugin_manager.proto``, ``envoy_plugin.proto``);
a field whose proto name differs from its JSON name accepts both, like upstream's
jsonpb decoder. Enums accept the name or the number.

Kept for compatibility although upstream ignores them: ``gateways``/``gateway``,
``service``, ``user``, ``isGroupSetting``, plugin-level ``settings``, ``Listener.outbound``
and the rider ``image_pull_secret`` object that upstream's install CRD declares.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, ConfigDict, Field, model_validator

from slime.framework.api import SlimeModel, StatusBase
from slime.framework.crdinfo import AGE_COLUMN, READY_COLUMN, CrdInfo

GROUP = "microservice.slime.io"
VERSION = "v1alpha1"

OPAQUE: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}

ListenerType = Literal["Outbound", "Inbound", "Gateway"]
Protocol = Literal["HTTP", "Dubbo", "Generic"]
# Enums are accepted by name or number (upstream's jsonpb); numbers map in this order.
LISTENER_TYPES: tuple[ListenerType, ...] = ("Outbound", "Inbound", "Gateway")
PROTOCOLS: tuple[Protocol, ...] = ("HTTP", "Dubbo", "Generic")
EnumNumber = Literal[0, 1, 2]
INT32 = 2**31 - 1


def _oneof_rule(*groups: tuple[str, ...]) -> dict[str, Any]:
    """CEL: at most one group has a key set (a group lists the spellings of one field)."""
    terms = " + ".join("(" + " || ".join(f"has(self.{k})" for k in g) + " ? 1 : 0)" for g in groups)
    names = ", ".join(g[0] for g in groups)
    return {"rule": f"{terms} <= 1", "message": f"set at most one of {names}"}


_PULL_SECRET = (
    ("image_pull_secret_name", "imagePullSecretName"),
    ("image_pull_secret_content", "imagePullSecretContent"),
)


class _RemotePlugin(SlimeModel):
    """Fields shared by wasm and rider plugins."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [_oneof_rule(*_PULL_SECRET)]})

    settings: dict[str, Any] | None = Field(
        default=None,
        description='Plugin configuration; {"_string": "..."} passes a raw string',
        json_schema_extra=OPAQUE,
    )
    plugin_name: str = Field(
        default="",
        validation_alias=AliasChoices("plugin_name", "pluginName"),
        description="Plugin name inside the module",
    )
    url: str = Field(default="", description="oci://, http(s)://, file:// URL; no scheme means oci://")
    sha256: str = Field(default="", description="SHA-256 of the module, checked by Envoy (empty: not checked)")
    image_pull_secret_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices("image_pull_secret_name", "imagePullSecretName"),
        description="Secret (in the CR's namespace) holding the image pull credentials",
    )
    image_pull_secret_content: str | None = Field(
        default=None,
        validation_alias=AliasChoices("image_pull_secret_content", "imagePullSecretContent"),
        description="Image pull credentials given inline",
    )

    @model_validator(mode="after")
    def _one_secret(self) -> _RemotePlugin:
        if self.image_pull_secret_name is not None and self.image_pull_secret_content is not None:
            raise ValueError("set at most one of imagePullSecretName, imagePullSecretContent")
        return self


class Wasm(_RemotePlugin):
    """A WebAssembly plugin delivered through ECDS."""


class ImagePullSecret(SlimeModel):
    """Declared by upstream's install CRD under rider; upstream ignores it."""

    imagePullSecretName: str | None = Field(default=None, description="Ignored")
    imagePullSecretContent: str | None = Field(default=None, description="Ignored")


class Rider(_RemotePlugin):
    """A Lua (rider) plugin delivered through ECDS."""

    image_pull_secret: ImagePullSecret | None = Field(
        default=None, description="Deprecated: ignored, as upstream does; use imagePullSecretName"
    )


class Inline(SlimeModel):
    settings: dict[str, Any] | None = Field(
        default=None, description="Filter configuration, placed in a TypedStruct", json_schema_extra=OPAQUE
    )
    directPatch: bool = Field(default=False, description="Use settings as the patch value as is")
    fieldPatchTo: str = Field(default="", description="With directPatch on a route: the field to patch")


class Plugin(SlimeModel):
    """One HTTP filter (PluginManager) or one per-filter config (EnvoyPlugin)."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [_oneof_rule(("wasm",), ("inline",), ("rider",))]}
    )

    enable: bool = Field(default=False, description="A plugin that is not enabled is left out")
    name: str = Field(default="", description="Filter name")
    settings: dict[str, Any] | None = Field(
        default=None, description="Deprecated: ignored", json_schema_extra=OPAQUE
    )
    listenerType: ListenerType | EnumNumber = Field(
        default="Outbound", description="Outbound, Inbound or Gateway (or 0, 1, 2)"
    )
    type_url: str = Field(
        default="", validation_alias=AliasChoices("type_url", "typeUrl"), description="TypedStruct type_url"
    )
    wasm: Wasm | None = None
    inline: Inline | None = Field(default=None, description="Filter settings given in the CR")
    rider: Rider | None = None
    port: int = Field(default=0, ge=0, le=65535, description="PluginManager: match this listener port (0: any)")
    rawPatch: dict[str, Any] | None = Field(
        default=None,
        description="JSON merge patch applied to each generated config patch",
        json_schema_extra=OPAQUE,
    )
    protocol: Protocol | EnumNumber = Field(
        default="HTTP", description="HTTP, Dubbo or Generic (or 0, 1, 2); only HTTP reaches stock Istio"
    )
    generic_app_protocol: str = Field(
        default="",
        validation_alias=AliasChoices("generic_app_protocol", "genericAppProtocol"),
        description="With protocol Generic: the application protocol, e.g. thrift",
    )
    disable_on_filter_level: bool = Field(
        default=False,
        validation_alias=AliasChoices("disable_on_filter_level", "disableOnFilterLevel"),
        description="Insert the filter disabled; routes may enable it",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Plugin:
        if sum(x is not None for x in (self.wasm, self.inline, self.rider)) > 1:
            raise ValueError("set at most one of wasm, inline, rider")
        return self

    @property
    def listener_type(self) -> ListenerType:
        lt = self.listenerType
        return LISTENER_TYPES[lt] if isinstance(lt, int) else lt

    @property
    def protocol_name(self) -> Protocol:
        p = self.protocol
        return PROTOCOLS[p] if isinstance(p, int) else p


class PluginManagerSpec(SlimeModel):
    """HTTP filters inserted before the router, in list order."""

    workload_labels: dict[str, str] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("workload_labels", "workloadLabels"),
        description="Pods whose proxies get the filters; empty selects all in the namespace",
    )
    plugin: list[Plugin] = Field(default_factory=list, description="Filters, in execution order")
    gateways: list[str] = Field(
        default_factory=list,
        validation_alias=AliasChoices("gateways", "gateway"),
        description="Unused, as upstream",
    )
    priority: int = Field(default=0, ge=-INT32 - 1, le=INT32, description="EnvoyFilter priority")


class PluginManagerStatus(StatusBase):
    """PluginManager status (upstream has none)."""


class WorkloadSelector(SlimeModel):
    labels: dict[str, str] = Field(default_factory=dict, description="Labels of the workloads to configure")


class Listener(SlimeModel):
    """Names route configurations: bind (UDS), host:port or port (sidecar), http.port or generic.app.port."""

    port: int = Field(default=0, ge=0, le=65535, description="Listener port; 0 means bind is a UDS path")
    outbound: bool = Field(default=False, description="Unused, as upstream")
    portName: str = Field(default="", description='Gateway: "http[-x]" or "generic-<app>[-x]"')
    bind: str = Field(default="", description="Bind address, or the UDS path when port is 0")
    hosts: list[str] = Field(default_factory=list, description="Sidecar: service hosts")
    sidecar: bool = Field(default=False, description="The listener is a sidecar's, not a gateway's")


class EnvoyPluginSpec(SlimeModel):
    """Per-filter config on routes, virtual hosts or route configurations."""

    route: list[str] = Field(default_factory=list, description='Routes as "<vhost>/<route name>"')
    host: list[str] = Field(default_factory=list, description="Virtual host names")
    service: list[str] = Field(default_factory=list, description="Not implemented, as upstream")
    plugins: list[Plugin] = Field(default_factory=list, description="Applied to every target")
    gateway: list[str] = Field(default_factory=list, description="Not implemented, as upstream")
    user: list[str] = Field(default_factory=list, description="Not implemented, as upstream")
    isGroupSetting: bool = Field(default=False, description="Deprecated: ignored")
    listener: list[Listener] = Field(default_factory=list, description="Route configurations to patch")
    workload_selector: WorkloadSelector | None = Field(
        default=None,
        validation_alias=AliasChoices("workload_selector", "workloadSelector"),
        description="Proxies to patch; unset means all in the namespace",
    )
    priority: int = Field(default=0, ge=-INT32 - 1, le=INT32, description="EnvoyFilter priority")


class EnvoyPluginStatus(StatusBase):
    """EnvoyPlugin status (upstream has none)."""


_PRIORITY = {"name": "Priority", "type": "integer", "jsonPath": ".spec.priority"}

PLUGIN_MANAGER = CrdInfo(
    group=GROUP,
    version=VERSION,
    kind="PluginManager",
    plural="pluginmanagers",
    singular="pluginmanager",
    short_names=("plm",),
    spec=PluginManagerSpec,
    status=PluginManagerStatus,
    printer_columns=(READY_COLUMN, _PRIORITY, AGE_COLUMN),
)

ENVOY_PLUGIN = CrdInfo(
    group=GROUP,
    version=VERSION,
    kind="EnvoyPlugin",
    plural="envoyplugins",
    singular="envoyplugin",
    short_names=("evp",),
    spec=EnvoyPluginSpec,
    status=EnvoyPluginStatus,
    printer_columns=(READY_COLUMN, _PRIORITY, AGE_COLUMN),
)
KINDS = (PLUGIN_MANAGER, ENVOY_PLUGIN)
