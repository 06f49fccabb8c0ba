"""SlimeBoot (``config.netease.com/v1alpha1``): deploys slime modules.

Upstream's spec is the values of a Helm chart (``slimeboot_types`` / ``slime_boot.proto``).
Fields upstream's install CRDs declare are accepted; Kubernetes-typed values (resources,
affinity, tolerations, volumes, ...) are kept opaque and passed through. Kept for
compatibility although the chart ignores them: the legacy per-module ``fence``/``limiter``/
``plugin`` sections (now ``general``), ``component.pilot``, ``globalSidecar.type``/
``namespace``, and ``podAnnotations``, ``autoscaling``, ``containers``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from slime.framework.api import SlimeModel, StatusBase
from slime.framework.config import ModuleConfig
from slime.framework.crdinfo import AGE_COLUMN, READY_COLUMN, CrdInfo

OPAQUE: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}


def _opaque(description: str) -> Any:
    return Field(default=None, description=description, json_schema_extra=OPAQUE)


class SlimeBootModule(ModuleConfig):
    """A module entry: upstream's module config plus legacy sections the install CRD still declares."""

    fence: dict[str, Any] | None = _opaque("Deprecated: ignored; lazyload settings belong in general")
    limiter: dict[str, Any] | None = _opaque("Deprecated: ignored; limiter settings belong in general")
    plugin: dict[str, Any] | None = _opaque("Deprecated: ignored; plugin settings belong in general")


class Image(SlimeModel):
    """The container image."""

    pullPolicy: Literal["Always", "IfNotPresent", "Never"] | None = Field(default=None, description="When to pull")
    repository: str = Field(default="", description="Image repository")
    tag: str = Field(default="", description="Image tag")


class Service(SlimeModel):
    """The modules' Service."""

    type: str = Field(default="ClusterIP", description="Service type")
    port: int = Field(default=80, description="Service port of the module's HTTP endpoints")
    auxiliaryPort: int = Field(default=8081, description="Health, log level and debug endpoints")
    logSourcePort: int = Field(default=8082, description="Access-log gRPC port (lazyload)")
    mcpOverXdsPort: int = Field(default=16010, description="MCP-over-xDS port (meshregistry)")


class ServiceAccount(SlimeModel):
    """The modules' ServiceAccount."""

    create: bool = Field(default=True, description="Create it (else it must exist)")


class SidecarInject(SlimeModel):
    """Istio sidecar injection of the global-sidecar."""

    enable: bool = Field(default=False, description="Inject a sidecar")
    mode: Literal["pod", "namespace"] | None = Field(default=None, description="pod: inject by labels")
    labels: dict[str, str] = Field(default_factory=dict, description="Pod labels that ask for injection")
    annotations: dict[str, str] = Field(default_factory=dict, description="Pod annotations that ask for injection")


class GlobalSidecar(SlimeModel):
    """lazyload's global-sidecar, the fallback route for calls outside a fence."""

    enable: bool = Field(default=False, description="Deploy the global-sidecar")
    port: int = Field(default=0, description="Port the global-sidecar serves on")
    probePort: int = Field(default=0, description="Port of its readiness probe")
    replicas: int = Field(default=0, description="Replicas of the global-sidecar")
    image: Image | None = Field(default=None, description="Its image")
    sidecarInject: SidecarInject | None = Field(default=None, description="Istio sidecar injection")
    resources: dict[str, Any] | None = _opaque("Container resources")
    legacyFilterName: bool = Field(default=False, description="Use upstream's old EnvoyFilter names")
    affinity: dict[str, Any] | None = _opaque("Pod affinity")
    tolerations: list[dict[str, Any]] | None = _opaque("Pod tolerations")
    type: str | None = Field(default=None, description="Deprecated: ignored; use general.globalSidecarMode")
    namespace: list[str] | None = Field(
        default=None, description="Deprecated: ignored; use general.namespace"
    )


class Component(SlimeModel):
    """Extra components deployed with the modules."""

    globalSidecar: GlobalSidecar | None = Field(default=None, description="Lazyload's global-sidecar")
    pilot: dict[str, Any] | None = _opaque("Deprecated: ignored")


class SlimeBootSpec(SlimeModel):
    """What to deploy: module configs plus the Deployment's settings."""

    module: list[SlimeBootModule] = Field(default_factory=list, description="Module configs; a bundle first")
    component: Component | None = Field(default=None, description="Extra components (the global-sidecar)")
    namespace: str = Field(default="mesh-operator", description="Namespace of everything deployed")
    istioNamespace: str = Field(default="istio-system", description="Istio's namespace")
    image: Image | None = Field(default=None, description="The modules' image")
    replicaCount: int = Field(default=1, description="Replicas of each module Deployment")
    service: Service | None = Field(default=None, description="The modules' Service")
    resources: dict[str, Any] | None = _opaque("Container resources")
    imagePullSecrets: list[dict[str, Any]] | None = _opaque("Pod imagePullSecrets")
    nodeSelector: dict[str, str] = Field(default_factory=dict, description="Pod nodeSelector")
    podSecurityContext: dict[str, Any] | None = _opaque("Pod securityContext")
    containerSecurityContext: dict[str, Any] | None = _opaque("Container securityContext")
    tolerations: list[dict[str, Any]] | None = _opaque("Pod tolerations")
    affinity: dict[str, Any] | None = _opaque("Pod affinity")
    volumes: list[dict[str, Any]] | None = _opaque("Pod volumes")
    volumeMounts: list[dict[str, Any]] | None = _opaque("Container volumeMounts")
    serviceAccount: ServiceAccount | None = Field(default=None, description="The modules' ServiceAccount")
    args: list[str] = Field(default_factory=list, description="Container args")
    env: list[dict[str, Any]] | None = _opaque("Container env")
    podAnnotations: dict[str, str] = Field(
        default_factory=dict, description="Declared upstream; unused by its chart"
    )
    autoscaling: dict[str, Any] | None = _opaque("Declared upstream; unused by its chart")
    containers: dict[str, Any] | None = _opaque("Declared upstream; unused by its chart")
    auxiliaryPort: int | None = Field(default=None, description="Deprecated: use service.auxiliaryPort")
    logSourcePort: int | None = Field(default=None, description="Deprecated: use service.logSourcePort")


class SlimeBootStatus(StatusBase):
    """SlimeBoot status (upstream's is empty)."""


SLIME_BOOT = CrdInfo(
    group="config.netease.com",
    version="v1alpha1",
    kind="SlimeBoot",
    plural="slimeboots",
    singular="slimeboot",
    short_names=("slb",),
    spec=SlimeBootSpec,
    status=SlimeBootStatus,
    printer_columns=(
        READY_COLUMN,
        {
            "name": "Namespace",
            "type": "string",
            "jsonPath": ".spec.namespace",
            "description": "Where modules run",
        },
        {"name": "Image", "type": "string", "jsonPath": ".spec.image.repository", "priority": 1},
        AGE_COLUMN,
    ),
)
