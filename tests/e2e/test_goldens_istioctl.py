"""Every EnvoyFilter and Sidecar in the golden outputs passes `istioctl validate` (istiod's own
validation, offline), whatever the layout of tests/golden: every `*.out.yaml` document is searched
recursively for Istio objects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from slime.devtools.istiod import istioctl_validate

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
KINDS = {"EnvoyFilter", "Sidecar"}


def istio_objects(node: Any) -> Iterator[dict[str, Any]]:
    """EnvoyFilter/Sidecar objects anywhere in a YAML document (lists, Lists, wrapper mappings)."""
    if isinstance(node, dict):
        if node.get("kind") in KINDS and str(node.get("apiVersion", "")).startswith("networking.istio.io/"):
            yield node
            return
        for value in node.values():
            yield from istio_objects(value)
    elif isinstance(node, list):
        for item in node:
            yield from istio_objects(item)


def golden_outputs() -> list[Path]:
    return sorted(GOLDEN.rglob("*.out.yaml"))


def test_there_are_goldens_with_istio_objects() -> None:
    found = [o for p in golden_outputs() for d in yaml.safe_load_all(p.read_text()) for o in istio_objects(d)]
    assert len(found) >= 10, "the golden outputs hold (almost) no EnvoyFilter/Sidecar: did the layout change?"


@pytest.mark.parametrize("path", golden_outputs(), ids=lambda p: str(p.relative_to(GOLDEN)))
def test_golden_output_passes_istioctl_validate(istio_bin: Path, path: Path) -> None:
    objects = [o for d in yaml.safe_load_all(path.read_text()) for o in istio_objects(d)]
    if not objects:
        return  # an output with no Istio object (e.g. a limiter whose condition is false)
    result = istioctl_validate(istio_bin / "istioctl", objects)
    assert result.ok, f"{path.relative_to(GOLDEN)}:\n{result.output}"


def test_istioctl_validate_refuses_an_invalid_filter(istio_bin: Path) -> None:
    bad = {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
           "metadata": {"name": "bad", "namespace": "default"},
           "spec": {"configPatches": [{"applyTo": "HTTP_FILTER", "match": {"context": "SIDECAR_INBOUND"},
                                       "patch": {"operation": "INSERT_BEFORE", "value": {
                                           "name": "x", "typed_config": {"@type": "type.googleapis.com/no.Such"}}}}]}}
    result = istioctl_validate(istio_bin / "istioctl", [bad])
    assert not result.ok and "referenced type unknown" in result.output, result.output
