"""ServiceFence (``microservice.slime.io/v1alpha1``), after upstream's ``service_fence.proto``.

All proto field names are already lowerCamel (``RecentlyCalled`` really is upper-case), so each
field has one spelling. Both of upstream's encodings are read: enums by name (jsonpb) or number
(the chart's CRD), int64 ``seconds`` as a number or as the quoted string jsonpb wrote. What we
write is upstream's jsonpb shape: enum names, ACTIVE left out.

Added to upstream's status (ours, optional): ``lastSeen`` (when the global-sidecar last reported a
learned dependency, for the TTL), ``Destinations.expireAt`` (end of an EXPIREWAIT grace period),
``observedGeneration`` and ``conditions``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from slime.framework.api import SlimeModel, StatusBase
from slime.framework.crdinfo import AGE_COLUMN, READY_COLUMN, CrdInfo

DomainStatus = Literal["ACTIVE", "EXPIRE", "EXPIREWAIT"]
ACTIVE, EXPIRE, EXPIREWAIT = "ACTIVE", "EXPIRE", "EXPIREWAIT"
_STATUS_NUMBERS = {0: ACTIVE, 1: EXPIRE, 2: EXPIREWAIT}
INT64_MAX = 2**63 - 1


def int64(value: Any, what: str = "value") -> int:
    """An int64 from a number or jsonpb's decimal string."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer")
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("-").isascii() or not text.lstrip("-").isdigit():
            raise ValueError(f"{what} must be an integer, got {value!r}")
        value = int(text)
    if not isinstance(value, int):
        raise ValueError(f"{what} must be an integer")
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise ValueError(f"{what} is out of the int64 range")
    return value


class Timestamp(SlimeModel):
    """Upstream's own ``{seconds, nanos}`` (not google.protobuf.Timestamp)."""

    seconds: int | str = Field(
        default=0, description="Unix seconds (a duration's seconds under auto); a number or a decimal string"
    )
    nanos: int = Field(default=0, ge=0, le=999_999_999, description="Fraction of a second, in nanoseconds")

    @field_validator("seconds", mode="before")
    @classmethod
    def _int64(cls, v: Any) -> int:
        return int64(v, "seconds")

    @property
    def secs(self) -> int:
        return int64(self.seconds)


class Deadline(SlimeModel):
    expire: Timestamp | None = Field(default=None, description="The dependency expires after this time")


class Auto(SlimeModel):
    duration: Timestamp | None = Field(default=None, description="Deprecated (never fires, as upstream)")


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
    namespaceSelector: list[str] = Field(
        default_factory=list,
        description="Namespaces whose services are all static dependencies: a namespace name, or a label "
        "selector over Namespaces such as team=shop,env!=dev",
    )
    labelSelector: list[Selector] = Field(
        default_factory=list, description="Services whose labels match any selector are static dependencies"
    )
    workloadSelector: WorkloadSelector | None = Field(
        default=None, description="Selects the Sidecar's workloads"
    )


class Destinations(SlimeModel):
    RecentlyCalled: Timestamp | None = Field(default=None, description="Deprecated")
    hosts: list[str] = Field(default_factory=list, description="The full host names the domain stands for")
    status: DomainStatus | Literal[0, 1, 2] = Field(default="ACTIVE", description="ACTIVE, EXPIRE or EXPIREWAIT")
    expireAt: int | None = Field(
        default=None, description="EXPIREWAIT: Unix seconds when the grace period ends and the domain goes"
    )

    @property
    def state(self) -> str:
        """The status by name, whichever encoding was read."""
        return _STATUS_NUMBERS[self.status] if isinstance(self.status, int) else self.status


class ServiceFenceStatus(StatusBase):
    domains: dict[str, Destinations] = Field(default_factory=dict, description="Computed dependencies")
    metricStatus: dict[str, str] = Field(
        default_factory=dict, description="Learned dependencies: label set -> value"
    )
    lastSeen: dict[str, int] = Field(
        default_factory=dict, description="metricStatus key -> Unix seconds it was last reported (the TTL's clock)"
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
