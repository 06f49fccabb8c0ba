"""Our generated CRDs on the real apiserver: upstream's samples are accepted, bad objects
are rejected at `kubectl apply` time with a message that names the field."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.compat import REJECTED, compat_objects

INVALID = Path(__file__).parent / "invalid"
EXPECTED = "test.slime.io/expected-error"
API_VERSIONS = {"SmartLimiter": "microservice.slime.io/v1alpha2", "SlimeBoot": "config.netease.com/v1alpha1"}


def kubectl_apply(kubeconfig: Path, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "apply", "-f", "-"],
        input=yaml.safe_dump(obj), capture_output=True, text=True, timeout=60,
    )


def _cases() -> list[Any]:
    return [pytest.param(obj, id=case) for case, obj in compat_objects()]


@pytest.mark.parametrize("obj", _cases())
def test_upstream_sample_is_accepted(kubeconfig: Path, namespace: str, obj: dict[str, Any],
                                     request: pytest.FixtureRequest) -> None:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    # One upstream sample (limiter/install/limiter.yaml) lacks apiVersion; kubectl needs one.
    obj.setdefault("apiVersion", API_VERSIONS.get(obj["kind"]))
    result = kubectl_apply(kubeconfig, obj)
    rejected_field = next((f for case, f in REJECTED.items() if request.node.callspec.id.endswith(case)), None)
    if rejected_field is not None:
        assert result.returncode != 0 and rejected_field in result.stderr, result.stderr
    else:
        assert result.returncode == 0, result.stderr


def _invalid() -> list[Any]:
    out = []
    for path in sorted(INVALID.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            out.append(pytest.param(doc, id=f"{doc['kind']}:{doc['metadata']['name']}"))
    return out


@pytest.mark.parametrize("obj", _invalid())
def test_invalid_object_is_rejected_naming_the_field(kubeconfig: Path, namespace: str, obj: dict[str, Any]) -> None:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    result = kubectl_apply(kubeconfig, obj)
    assert result.returncode != 0, f"accepted: {obj['metadata']['name']}"
    assert obj["metadata"]["annotations"][EXPECTED] in result.stderr


def test_crds_are_established_with_short_names(kubeconfig: Path) -> None:
    out = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "api-resources", "--categories=slime",
                          "-o", "wide"], capture_output=True, text=True, check=True).stdout
    for short in ("sml", "svf", "slb"):
        assert f" {short} " in out, out
    for kind in ("SmartLimiter", "ServiceFence", "PluginManager", "EnvoyPlugin", "SlimeBoot"):
        assert kind in out
