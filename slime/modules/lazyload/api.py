"""ServiceFence (``microservice.slime.io/v1alpha1``), after upstream's ``service_fence.proto``.

All proto field names are already lowerCamel (``RecentlyCalled`` really is upper-case), so
each field has one spelling. Enums accept the name or the number, and ``seconds`` accepts
the quoted form upstream's jsonpb wrote into existing statuses.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from slime.framework.api import SlimeModel, StatusBase
from slime.framework.crdinfo import AGE_COLUMN, READY_COLUMN, CrdInfo

DomainStatus = Literal["ACTIVE", "EXPIRE", "EXPIREWAIT"]


class Timestamp(SlimeModel):
    seconds: int = Field(default=0, description="Unix seconds (a duration's seconds under auto)")
    nanos: int = Field(default=0, description="Nanoseconds added to seconds")


class Deadline(SlimeModel):
    expire: Timestamp | None = Field(default=None, description="The dependency expires after this time")


class Auto(SlimeModel):
    duration: Timestamp | None = Field(default=None, description="The dependency expires this long after its last use")


class Stable(SlimeModel):
    """Never expires."""


class RecyclingStrategy(SlimeModel):
    """How long a static dependency lives; the first of stable, deadline, auto that is set applies."""

    stable: Stable | None = Field(default=None, description="Never expires")
    deadline: Deadline | None = Field(default=None, description="Expires at a fixed time")
    auto: Auto | None = Field(default=None, description="Deprecated")
    RecentlyCalled: Timestamp | None = Field(default=None, description="Deprecated")


class Selector(SlimeModel):
    selector: dict[str, str] = Field(default_factory=dict, description="Labels that must all match (AND)")


class WorkloadSelector(SlimeModel):
    fromService: bool = Field(
        default=False,
        description="When labels is empty: use the selector of the Service with the fence's name",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Sidecar workload labels (highest priority)"
    )


class ServiceFenceSpec(SlimeModel):
    """Which services the workload may call; rendered into an Istio Sidecar."""

    host: dict[str, RecyclingStrategy | None] = Field(
        default_factory=dict, description='Static dependencies: a full host name or "<namespace>/*"'
    )
    enable: bool = Field(default=False, description="Render the fence into a Sidecar")
    namespaceSelector: list[str] = Field(default_factory=list, description="Not implemented, as upstream")
    labelSelector: list[Selector] = Field(
        default_factory=list, description="Services whose labels match any selector are static dependencies"
    )
    workloadSelector: WorkloadSelector | None = Field(
        default=None, description="Selects the Sidecar's workloads"
    )


class Destinations(SlimeModel):
    RecentlyCalled: Timestamp | None = Field(default=None, description="Deprecated")
    hosts: list[str] = Field(default_factory=list, description="The full host names the domain stands for")
    status: DomainStatus | int = Field(default="ACTIVE", description="ACTIVE, EXPIRE or EXPIREWAIT")


class ServiceFenceStatus(StatusBase):
    domains: dict[str, Destinations] = Field(default_factory=dict, description="Computed dependencies")
    metricStatus: dict[str, str] = Field(
        default_factory=dict, description="Learned dependencies: label set -> value"
    )
    visitor: dict[str, bool] = Field(default_factory=dict, description="Deprecated")


SERVICE_FENCE = CrdInfo(
    group="microservice.slime.io",
    version="v1alpha1",
    kind="ServiceFence",
    plural="servicefences",
    singular="servicefence",
    short_names=("svf",),
    spec=ServiceFenceSpec,
    status=ServiceFenceStatus,
    printer_columns=(
        {"name": "Enabled", "type": "boolean", "jsonPath": ".spec.enable"},
        READY_COLUMN,
        AGE_COLUMN,
    ),
)
KINDS = (SERVICE_FENCE,)
