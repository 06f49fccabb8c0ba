"""SlimeBoot (``config.netease.com/v1alpha1``): deploys slime modules.

Upstream's spec is the values of a Helm chart (``slimeboot_types`` / ``slime_boot.proto``).
Fields upstream's install CRDs declare are accepted; Kubernetes-typed values (resources,
affinity, tolerations, volumes, ...) are kept opaque and passed through. Kept for
compatibility although nothing reads them: the legacy per-module ``fence``/``limiter``/
``plugin`` sections (now ``general``), ``component.pilot``, ``globalSidecar.type``/
``namespace``, and ``podAnnotations``, ``autoscaling``. Strings that become part of an object
name (module names, namespaces) are constrained here; the render checks them again.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from slime.framework.api import SlimeModel, StatusBase
from slime.framework.config import ModuleConfig
from slime.framework.crdinfo import AGE_COLUMN, READY_COLUMN, CrdInfo

OPAQUE: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}
# A Service name (DNS-1035 label): module names name the Deployment, Service, ConfigMap, ...
MODULE_NAME = r"^([a-z]([-a-z0-9]*[a-z0-9])?)?$"
NAMESPACE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _opaque(description: str) -> Any:
    return Field(default=None, description=description, json_schema_extra=OPAQUE)


def _port(default: int, description: str) -> Any:
    return Field(default=default, ge=1, le=65535, description=description)


class SlimeBootModule(ModuleConfig):
    """A module entry: upstream's module config plus legacy sections the install CRD still declares."""

    name: str = Field(default="", max_length=63, pattern=MODULE_NAME,
                      description="Instance name; names its Deployment, Service, ConfigMap and RBAC (a DNS-1035 "
                                  "label); empty: the kind")
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

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(default="ClusterIP", description="Service type")
    port: int = _port(80, "Service port of the module's metrics (port name http)")
    auxiliaryPort: int = _port(8081, "Health endpoint (/healthz) of the module process")
    logSourcePort: int = _port(8082, "Access-log gRPC port (lazyload)")
    mcpOverXdsPort: int = _port(16010, "MCP-over-xDS port (meshregistry; unused here)")


class ServiceAccount(SlimeModel):
    """The modules' ServiceAccount."""

    create: bool = Field(default=True, description="Create it (else it must exist, named like the module)")


class SidecarInject(SlimeModel):
    """Istio sidecar injection of the global-sidecar."""

    enable: bool = Field(default=False, description="Inject a sidecar")
    mode: Literal["pod", "namespace"] | None = Field(default=None, description="pod: inject by labels")
    labels: dict[str, str] = Field(default_factory=dict, description="Pod labels that ask for injection")
    annotations: dict[str, str] = Field(default_factory=dict, description="Pod annotations that ask for injection")


class GlobalSidecar(SlimeModel):
    """lazyload's global-sidecar, the fallback route for calls outside a fence: passed into the lazyload
    module's config (``general.globalSidecar``), which deploys it."""

    enable: bool = Field(default=False, description="Deploy the global-sidecar")
    port: int = Field(default=0, ge=0, le=65535,
                      description="Port the global-sidecar serves on (0: the lazyload module's default)")
    probePort: int = Field(default=0, ge=0, le=65535,
                           description="Port of its health check (0: the lazyload module's default)")
    replicas: int = Field(default=0, ge=0, description="Replicas of the global-sidecar (0: the module's default)")
    image: Image | None = Field(default=None, description="Its image (a plain Envoy; default: the boot config's)")
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
    namespace: str = Field(default="mesh-operator", max_length=63, pattern=NAMESPACE,
                           description="Namespace of everything deployed (not the SlimeBoot's own)")
    istioNamespace: str = Field(default="istio-system", max_length=63, pattern=NAMESPACE,
                                description="Istio's namespace (the modules' default global.istioNamespace)")
    image: Image | None = Field(default=None, description="The modules' image (default: the boot module's)")
    replicaCount: int = Field(default=1, ge=0, description="Replicas of each module Deployment")
    service: Service | None = Field(default=None, description="The modules' Service")
    resources: dict[str, Any] | None = _opaque("Container resources")
    imagePullSecrets: list[dict[str, Any]] | None = _opaque("Pod imagePullSecrets")
    nodeSelector: dict[str, str] = Field(default_factory=dict, description="Pod nodeSelector")
    podSecurityContext: dict[str, Any] | None = _opaque("Pod securityContext (default: non-root, RuntimeDefault)")
    containerSecurityContext: dict[str, Any] | None = _opaque(
        "Container securityContext (default: read-only root, no privilege escalation, no capabilities)")
    tolerations: list[dict[str, Any]] | None = _opaque("Pod tolerations")
    affinity: dict[str, Any] | None = _opaque("Pod affinity")
    volumes: list[dict[str, Any]] | None = _opaque("Pod volumes")
    volumeMounts: list[dict[str, Any]] | None = _opaque("Container volumeMounts")
    serviceAccount: ServiceAccount | None = Field(default=None, description="The modules' ServiceAccount")
    args: list[str] = Field(default_factory=list, description="Extra `slime run` arguments")
    env: list[dict[str, Any]] | None = _opaque("Container env")
    podAnnotations: dict[str, str] = Field(default_factory=dict, description="Annotations of the module Pods")
    autoscaling: dict[str, Any] | None = _opaque("Declared upstream; unused")
    containers: dict[str, Any] | None = _opaque("Per container: containers.slime.volumeMounts are added")
    auxiliaryPort: int | None = Field(default=None, description="Deprecated: use service.auxiliaryPort")
    logSourcePort: int | None = Field(default=None, description="Deprecated: use service.logSourcePort")


class DeployedModule(SlimeModel):
    """One module Deployment of the SlimeBoot."""

    name: str = Field(description="The module instance (Deployment, Service, ConfigMap name)")
    kinds: list[str] = Field(default_factory=list, description="The modules it runs")
    image: str = Field(default="", description="The image it runs")
    configHash: str = Field(default="", description="Hash of its config; a change rolls its Pods")


class SlimeBootStatus(StatusBase):
    """SlimeBoot status (upstream's is empty): what was deployed."""

    modules: list[DeployedModule] = Field(default_factory=list, description="The module Deployments")
    objects: list[str] = Field(default_factory=list, description="Every object written, as 'Kind namespace/name'")
    notes: list[str] = Field(default_factory=list, description="What was done differently from the spec, and why")


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
