"""Fixtures of the end-to-end tier: a fresh namespace of the shared mesh bed per test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from slime.devcluster import DevClusterError
from slime.meshbed import MeshBed


@pytest.fixture
def bed_ns(mesh_bed: MeshBed) -> Iterator[str]:
    """A namespace of the bed for one test, deleted (without waiting) afterwards."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    mesh_bed.ensure_namespace(name)
    yield name
    with contextlib.suppress(DevClusterError):
        mesh_bed.kubectl("delete", "namespace", name, "--wait=false")


def smart_limiter(name: str, namespace: str, descriptors: list[dict[str, Any]],
                  **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "microservice.slime.io/v1alpha2", "kind": "SmartLimiter",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {**spec, "sets": {"_base": {"descriptor": descriptors}}}}
