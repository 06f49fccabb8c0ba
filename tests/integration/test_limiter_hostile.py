"""Hostile and edge-case SmartLimiters that the schema lets through: whatever the render reports
Ready=True must be accepted by a real Envoy (configured as Istio's bootstrap configures it);
what Envoy would reject must be reported, never written."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from slime.framework.config import load_module_configs
from slime.render import Source, render_sources
from tests.integration.test_limiter_envoy import envoy_binary, envoy_config, free_port

pytestmark = pytest.mark.envoy

SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "h"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
BASE: dict[str, Any] = {"action": {"fill_interval": {"seconds": 1}, "quota": "10"}, "condition": "true",
                        "target": {"port": 80}}


def limiter(**descriptor: Any) -> dict[str, Any]:
    d = {**copy.deepcopy(BASE), **descriptor}
    return {"apiVersion": "microservice.slime.io/v1alpha2", "kind": "SmartLimiter",
            "metadata": {"name": "web", "namespace": "h", "uid": "00000000-0000-0000-0000-00000000beef"},
            "spec": {"sets": {"_base": {"descriptor": [d]}}}}


def header(**kw: Any) -> dict[str, Any]:
    return {"match": [{"name": "x-a", **kw}]}


def action(**kw: Any) -> dict[str, Any]:
    return {"action": {**BASE["action"], **kw}}


CORPUS: dict[str, dict[str, Any]] = {
    # regexes: Envoy's RE2, with Istio's program-size limit
    "regex-unbalanced": header(regex_match="("),
    "regex-lookahead": header(regex_match="a(?=b)"),
    "regex-backreference": header(regex_match=r"(a)\1"),
    "regex-nested-repeat": header(regex_match="(a{30}){40}"),
    "regex-over-program-size": header(regex_match="[a-z]{1000}" * 40),
    "regex-ok-big": header(regex_match="[a-z]{1000}" * 20),
    "regex-ok": header(regex_match="^/api/v[0-9]+/.*$"),
    # values Envoy takes as they are
    "exact-nul": header(exact_match="a\x00b"),
    "exact-crlf": header(exact_match="a\r\nb"),
    "pseudo-header-match": {"match": [{"name": ":path", "prefix_match": "/a"}]},
    "unicode-header-value": action(headers_to_add=[{"key": "x-a", "value": "héllo ✓"}]),
    "long-header-value": action(headers_to_add=[{"key": "x-a", "value": "v" * 4096}]),
    "long-header-name": {"match": [{"name": "x" * 256, "present_match": True}]},
    "quota-uint32-max": action(quota="4294967295"),
    "quota-over-uint32": action(quota="4294967296"),
    "quota-zero": action(quota="0"),
    "fill-50ms": {"action": {"fill_interval": {"nanos": 50_000_000}, "quota": "1"}},
    "fill-max": {"action": {"fill_interval": {"seconds": 2**31 - 1}, "quota": "1"}},
    "unicode-digits": action(quota="١٠٠"),
}
CONFIG = load_module_configs({"name": "limiter", "enable": True, "general": {"disableAdaptive": True}})


def envoy_accepts(envoyfilters: list[dict[str, Any]], tmp_path: Path) -> tuple[bool, str]:
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(envoy_config(envoyfilters, free_port(), free_port(), free_port()), sort_keys=False))
    proc = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "error"],
                          capture_output=True, text=True, timeout=60, check=False)
    return proc.returncode == 0, (proc.stdout + proc.stderr)[-600:]


@pytest.mark.parametrize("case", CORPUS, ids=list(CORPUS))
def test_ready_renders_are_accepted_by_envoy_and_rejections_are_reported(case: str, tmp_path: Path) -> None:
    output = render_sources([Source(limiter(**CORPUS[case]), "corpus"), Source(SERVICE, "corpus")], CONFIG, {})
    [status] = output.statuses
    ready = status["status"]["conditions"][0]
    envoyfilters = [o for o in output.objects if o["kind"] == "EnvoyFilter"]
    if ready["status"] == "True":
        assert envoyfilters
        accepted, log = envoy_accepts(envoyfilters, tmp_path)
        assert accepted, f"{case}: Ready=True but Envoy rejects it:\n{log}"
    else:
        assert envoyfilters == [], f"{case}: not Ready, yet written"
        assert ready["message"], case


def test_the_corpus_holds_both_verdicts(tmp_path: Path) -> None:
    """Honesty check: some cases are refused (so the test above covers rejections) and the refused
    regexes are really ones Envoy rejects (so refusing them is right, not overcautious)."""
    refused = []
    for case, descriptor in CORPUS.items():
        output = render_sources([Source(limiter(**descriptor), "corpus"), Source(SERVICE, "corpus")], CONFIG, {})
        if output.statuses[0]["status"]["conditions"][0]["status"] != "True":
            refused.append(case)
    assert {"regex-unbalanced", "regex-over-program-size", "quota-over-uint32", "unicode-digits"} <= set(refused)
    assert "regex-ok-big" not in refused and "fill-50ms" not in refused
    # The refused program size is one Envoy refuses too, when written anyway.
    ef = {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter", "metadata": {"name": "x"},
          "spec": {"configPatches": [{"applyTo": "HTTP_ROUTE", "match": {"context": "SIDECAR_INBOUND",
                   "routeConfiguration": {"vhost": {"name": "v", "route": {"name": "r"}}}},
                   "patch": {"operation": "MERGE", "value": {"match": {"headers": [{"name": "x-a",
                   "string_match": {"safe_regex": {"regex": "[a-z]{1000}" * 40}}}]}}}}]}}
    accepted, log = envoy_accepts([ef], tmp_path)
    assert not accepted and "program size" in log
