"""The lazyload module's ``general`` config: upstream's ``Fence`` (``api/config/fence_module.proto``).

Every upstream field is accepted with its meaning; a few of ours follow them (``learnInterval``,
``dependencyTTL``, ``expireWait``, ``globalSidecar``). Unlike upstream, a config that cannot work is
refused when it is loaded, naming the field: a domain-alias pattern that does not compile (upstream
silently disabled every alias), a ``stableHost`` Istio would refuse, a wormhole port that is not a
port, both namespace lists set.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from slime.framework.api import SlimeModel
from slime.modules.lazyload.names import check_dns_label, check_sidecar_host, parse_duration

_DURATION_DOC = 'a duration such as "500ms", "10s", "5m", "24h"'


class Dispatch(SlimeModel):
    """A catch-all route of the wormhole ports (``to-global-sidecar``)."""

    name: str = Field(default="", description="Virtual host name")
    domains: list[str] = Field(default_factory=list, description="Domains of the virtual host")
    cluster: str = Field(
        default="", description="_GLOBAL_SIDECAR, PassthroughCluster or an Istio cluster name"
    )
    domainRegex: str = Field(default="", description="RE2 regex on :authority (a route of allow_all)")

    @field_validator("domainRegex")
    @classmethod
    def _regex(cls, v: str) -> str:
        if v:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regex: {e}") from None
        return v

    @model_validator(mode="after")
    def _usable(self) -> Dispatch:
        if not self.cluster:
            raise ValueError("cluster is required")
        if not self.domainRegex and not self.name:
            raise ValueError("a dispatch without domainRegex is a virtual host: name is required")
        if not self.domainRegex and not self.domains:
            raise ValueError("a dispatch without domainRegex needs domains")
        if "*" in self.domains:
            raise ValueError("domains: '*' is the catch-all's own; use passthroughByDefault or a domainRegex")
        return self


class DomainAlias(SlimeModel):
    pattern: str = Field(description="Regex with named groups, matched against a host")
    templates: list[str] = Field(description="Alias templates using $group or ${group}")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regex: {e}") from None
        return v

    @field_validator("templates")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one template is required")
        return v


class LabelSelectorRequirement(SlimeModel):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class LabelSelector(SlimeModel):
    matchLabels: dict[str, str] = Field(default_factory=dict)
    matchExpressions: list[LabelSelectorRequirement] = Field(default_factory=list)


class SidecarInject(SlimeModel):
    enable: bool = False
    mode: Literal["pod", "namespace"] | None = Field(default=None, description="pod: inject by labels")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class GlobalSidecarComponent(SlimeModel):
    """The global-sidecar Deployment (upstream: SlimeBoot ``component.globalSidecar``)."""

    enable: bool = Field(default=True, description="Render the global-sidecar and the catch-all EnvoyFilters")
    image: str = Field(default="envoyproxy/envoy:v1.40.0", description="A plain Envoy image")
    port: int = Field(default=80, ge=1, le=65535, description="Port the catch-all routes target (gsPort)")
    probePort: int = Field(default=18181, ge=1, le=65535, description="Health port of the forwarder")
    adminPort: int = Field(default=15900, ge=1, le=65535, description="Envoy admin port (localhost only)")
    replicas: int = Field(default=1, ge=0)
    resources: dict[str, Any] | None = Field(default=None, description="Container resources")
    sidecarInject: SidecarInject | None = None


class Fence(SlimeModel):
    """The lazyload module's ``general`` config."""

    wormholePort: list[str] = Field(
        default_factory=list, description="HTTP ports whose catch-all goes to the global-sidecar"
    )
    autoFence: bool = Field(default=False, description="Create fences for Services (slime.io/serviceFenced)")
    namespace: list[str] = Field(default_factory=list, description="Namespaces with a global-sidecar (namespace mode)")
    dispatches: list[Dispatch] = Field(default_factory=list)
    domainAliases: list[DomainAlias] = Field(default_factory=list)
    defaultFence: bool = Field(default=False, description="Fence Services whose labels say nothing")
    autoPort: bool = Field(default=False, description="Add the HTTP ports of Services to the wormhole ports")
    clusterGsNamespace: str = Field(default="", description="Cluster mode: the global-sidecar's namespace")
    fenceLabelKeyAlias: str = Field(default="", description='"<labelKey>[:<alias>]": fences per pod label')
    enableShortDomain: bool = Field(
        default=False, description="Also learn the short authority as called (Istio refuses short Sidecar hosts: "
        "kept for compatibility, it adds nothing)")
    disableIpv4Passthrough: bool = Field(default=False, description="Deprecated, unused (upstream too)")
    passthroughByDefault: bool = Field(default=False, description="Unknown hosts go to PassthroughCluster")
    supportH2: bool = Field(default=False, description="Count grpc/http2 ports; keep the client's protocol")
    addEnvHeaderViaLua: bool = Field(default=False, description="Set Slime-Source-Ns with a Lua filter")
    globalSidecarMode: Literal["cluster", "namespace", ""] = Field(default="cluster")
    render: str = Field(default="", description="Internal (upstream's chart)")
    metricSourceType: Literal["accesslog", "prometheus", ""] = Field(
        default="accesslog", description="Where learned dependencies come from (empty: accesslog)"
    )
    cleanupWormholePort: bool = Field(default=False, description="autoPort: let the port list shrink")
    managementSelectors: list[LabelSelector] = Field(
        default_factory=list, description="Namespaces in scope of auto-fence (ORed)"
    )
    blackNamespaceList: str = Field(default="", description="Comma-separated namespaces out of scope")
    whiteNamespaceList: str = Field(default="", description="Comma-separated namespaces in scope")
    proxyVersion: str = Field(default="", description="RE2 regex for match.proxy.proxyVersion")
    stableHost: list[str] = Field(default_factory=list, description="Hosts added to every Sidecar")
    # ours
    learnInterval: str = Field(
        default="1s", description=f"At most one status write per fence per interval ({_DURATION_DOC})"
    )
    dependencyTTL: str = Field(
        default="", description=f"Learned dependencies not reported for this long expire ({_DURATION_DOC}); "
        "empty: never, as upstream"
    )
    expireWait: str = Field(
        default="30s", description=f"How long a dependency that went away stays in the Sidecar ({_DURATION_DOC})"
    )
    globalSidecar: GlobalSidecarComponent = Field(default_factory=GlobalSidecarComponent)

    @field_validator("wormholePort", mode="before")
    @classmethod
    def _ports(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        out: list[str] = []
        for item in v:
            parts = str(item).split(";") if isinstance(item, str | int) and not isinstance(item, bool) else [item]
            for p in parts:
                text = str(p).strip()
                if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
                    raise ValueError(f"{p!r} is not a port")
                out.append(str(int(text)))
        return out

    @field_validator("namespace", "clusterGsNamespace")
    @classmethod
    def _namespaces(cls, v: Any) -> Any:
        for ns in [v] if isinstance(v, str) else v:
            if ns:
                check_dns_label(ns, "namespace")
        return v

    @field_validator("stableHost")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for h in v:
            check_sidecar_host(h if h.endswith("/*") else f"*/{h}")
        return v

    @field_validator("learnInterval", "dependencyTTL", "expireWait")
    @classmethod
    def _durations(cls, v: str) -> str:
        if v:
            parse_duration(v)
        return v

    @field_validator("dispatches")
    @classmethod
    def _unique(cls, v: list[Dispatch]) -> list[Dispatch]:
        # Envoy refuses a route configuration whose virtual hosts repeat a name or a domain.
        names = [d.name for d in v if not d.domainRegex]
        domains = [x for d in v if not d.domainRegex for x in d.domains]
        for what, items in (("name", [*names, "allow_all"]), ("domain", domains)):
            dup = next((x for x in items if items.count(x) > 1), None)
            if dup is not None:
                raise ValueError(f"virtual host {what} {dup!r} is used twice")
        return v

    @model_validator(mode="after")
    def _one_list(self) -> Fence:
        if self.blackNamespaceList and self.whiteNamespaceList:
            raise ValueError("set only one of blackNamespaceList, whiteNamespaceList")
        if self.learnInterval and parse_duration(self.learnInterval) <= 0:
            raise ValueError("learnInterval must be positive")
        return self

    # derived values
    @property
    def learn_interval(self) -> float:
        return parse_duration(self.learnInterval or "1s")

    @property
    def ttl(self) -> float:
        """Seconds a learned dependency lives without a report; 0: forever."""
        return parse_duration(self.dependencyTTL) if self.dependencyTTL else 0.0

    @property
    def expire_wait(self) -> float:
        return parse_duration(self.expireWait) if self.expireWait else 0.0

    @property
    def mode(self) -> str:
        return self.globalSidecarMode or "cluster"

    @property
    def source(self) -> str:
        return self.metricSourceType or "accesslog"
