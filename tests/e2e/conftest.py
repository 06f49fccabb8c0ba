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
    """A namespace of the bed for one test, deleted afterwards.

    Its Services go first, and synchronously: a Service change makes istiod push new route
    configurations to every sidecar with a listener on that port, and Envoy starts a fresh local
    rate-limit bucket with each (observed: a limit of 4 let 5 requests through). Without this,
    the namespace's slow deletion would push in the middle of a later test's requests."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    mesh_bed.ensure_namespace(name)
    yield name
    with contextlib.suppress(DevClusterError):
        mesh_bed.kubectl("delete", "services", "--all", "-n", name, "--wait=true")
        mesh_bed.kubectl("delete", "namespace", name, "--wait=false")


def smart_limiter(name: str, namespace: str, descriptors: list[dict[str, Any]],
                  **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "microservice.slime.io/v1alpha2", "kind": "SmartLimiter",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {**spec, "sets": {"_base": {"descriptor": descriptors}}}}
