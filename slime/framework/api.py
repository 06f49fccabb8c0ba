"""Base classes shared by every CRD model.

The pydantic models are the single source of truth for the CRDs (see
``slime.framework.schema``). Conventions every model follows:

* ``SlimeModel`` forbids unknown fields, so a typo is an error, not silently dropped.
* Where upstream accepts two spellings of a field (proto name and lowerCamel JSON
  name), declare it once with ``validation_alias=AliasChoices("proto_name", "jsonName")``;
  the schema generator emits a property for every choice and a CEL rule that
  forbids setting both.
* ``Field(description=...)`` becomes the schema description.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SlimeModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Condition(SlimeModel):
    """A Kubernetes-style status condition (metav1.Condition)."""

    type: str = Field(description="Ready, or a module-specific type such as MetricsAvailable")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown")
    reason: str = Field(default="", description="CamelCase reason for the last transition")
    message: str = Field(default="", description="What is wrong, naming the field; or what is in force")
    lastTransitionTime: str = Field(default="", description="When status last changed (RFC 3339)")
    observedGeneration: int = Field(default=0, description="metadata.generation the condition is about")


class StatusBase(SlimeModel):
    """Fields every kind adds to its upstream status."""

    observedGeneration: int | None = Field(default=None, description="metadata.generation the status is for")
    conditions: list[Condition] = Field(default_factory=list, description="Ready and module-specific conditions")


class ObjectMeta(BaseModel):
    """Only what renders read from metadata; everything else is kept as is."""

    model_config = ConfigDict(extra="allow")
    name: str
    namespace: str = "default"
    generation: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str = ""


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
