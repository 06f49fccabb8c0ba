"""Identity of one custom resource kind: what the CRD generator and the controllers need."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from slime.framework.kinds import Kind

READY_COLUMN: Mapping[str, str] = {
    "name": "Ready",
    "type": "string",
    "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    "description": "Status of the Ready condition",
}
AGE_COLUMN: Mapping[str, str] = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


@dataclass(frozen=True)
class CrdInfo:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    short_names: Sequence[str]
    spec: type[BaseModel]
    status: type[BaseModel]
    # Each entry is {name, type, jsonPath[, description, priority]} as in additionalPrinterColumns.
    printer_columns: Sequence[Mapping[str, Any]] = (READY_COLUMN, AGE_COLUMN)
    scope: str = "Namespaced"
    categories: Sequence[str] = ("slime",)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def kind_ref(self) -> Kind:
        """The kind as the API client addresses it."""
        return Kind(self.api_version, self.kind, self.plural, namespaced=self.scope == "Namespaced")
