"""Upstream Slime's four limiter controller fixtures come out identical through ``slime render``'s
path (labels, annotations and spec, as upstream's own test compares them)."""

from __future__ import annotations

import pytest
import yaml

from slime.framework.config import load_module_configs
from slime.render import Source, render_sources
from tests.compat import COMPAT, require_compat

UPSTREAM_DATA = COMPAT / "limiter" / "controllers" / "testdata"
CASES = ["limit_by_method", "limit_by_query", "limit_by_sourceIP", "limit_outbound_with_mismatch_selector"]
# upstream suite_test.go: the slime env and the limiter config of its test
CONFIG = {"name": "limiter", "kind": "limiter", "enable": True,
          "global": {"istioRev": "default", "istioNamespace": "istio-system"},
          "general": {"disableAdaptive": True, "disableInsertLocalRateLimit": True,
                      "disableInsertGlobalRateLimit": True, "rlsConfigMap": {}}}


@pytest.mark.parametrize("name", CASES)
def test_upstream_fixture(name: str) -> None:
    require_compat()
    objects = [o for o in yaml.safe_load_all((UPSTREAM_DATA / "base_objs.local.yaml").read_text()) if o]
    for o in objects:
        if o["kind"] == "Pod":  # upstream's test sets the phase after creating it
            o["status"] = {"phase": "Running"}
    cr = yaml.safe_load((UPSTREAM_DATA / f"{name}.local.yaml").read_text())
    expected = yaml.safe_load((UPSTREAM_DATA / f"{name}.local.ef.expect.yaml").read_text())
    output = render_sources([Source(o, "fixture") for o in [cr, *objects]], load_module_configs(CONFIG), {})
    assert output.errors == []
    [ef] = output.objects
    assert ef["apiVersion"] == expected["apiVersion"] and ef["kind"] == expected["kind"]
    assert ef["metadata"].get("labels") == expected["metadata"].get("labels")
    assert ef["metadata"].get("annotations") == expected["metadata"].get("annotations")
    assert ef["spec"] == expected["spec"]
    assert ef["metadata"]["name"] == f"{cr['metadata']['name']}.{cr['metadata']['namespace']}.ratelimit"
