"""Golden tests of the pure limiter render.

* Upstream's four controller fixtures, read from the compat tree, must come out
  identical (labels and spec, as upstream's own test compares them).
* Our cases: ``limiter/<case>.in.yaml`` -> ``limiter/<case>.out.yaml``. An input holds
  the SmartLimiter, cluster objects (Service, Pods, DestinationRules), metrics, the
  module ``general`` config and the global config. Pod counts (``<set>.pod``) are
  derived from the Pods with the render's own selector helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from slime.framework.config import load_module_configs
from slime.framework.metrics import Handler
from slime.modules.limiter.api import LimiterConfig
from slime.modules.limiter.context import counted_pods, limiter_context, prometheus_queries
from slime.modules.limiter.render import (
    LimiterContext,
    LimiterResult,
    pod_namespace,
    pod_selector,
    render_smartlimiter,
    subsets,
)
from slime.modules.limiter.rls import merge_rls_config
from tests.compat import COMPAT

HERE = Path(__file__).parent / "limiter"
UPSTREAM = COMPAT / "limiter"
UPSTREAM_DATA = UPSTREAM / "controllers" / "testdata"
UPSTREAM_CASES = [
    "limit_by_method",
    "limit_by_query",
    "limit_by_sourceIP",
    "limit_outbound_with_mismatch_selector",
]


def _running(pod: Mapping[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    return (pod.get("status") or {}).get("phase") == "Running" and not meta.get("deletionTimestamp")


def _matches(pod: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    have = (pod.get("metadata") or {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


def pod_counts(
    cr: Mapping[str, Any],
    objects: list[dict[str, Any]],
    service: Mapping[str, Any] | None,
    drs: list[dict[str, Any]],
    host_selector: Mapping[str, str] | None,
    istio_namespace: str,
) -> dict[str, str]:
    """``<set>.pod`` as the metric source computes it: Running, not deleting, selected."""
    selector = pod_selector(cr, service, host_selector)
    if selector is None:
        return {}
    ns = pod_namespace(cr, istio_namespace)
    pods = [
        o
        for o in objects
        if o.get("kind") == "Pod" and (ns is None or o["metadata"].get("namespace") == ns) and _running(o)
    ]
    out = {}
    for set_name, labels in [("_base", {}), *subsets(cr, drs).items()]:
        n = sum(_matches(p, {**selector, **labels}) for p in pods)
        if n:  # as upstream, a count of 0 is absent
            out[f"{set_name}.pod"] = str(n)
    return out


def build_context(case: Mapping[str, Any]) -> LimiterContext:
    cr = case["smartlimiter"]
    meta = cr["metadata"]
    objects = case.get("objects") or []
    glob = case.get("global") or {}
    istio_ns = glob.get("istioNamespace", "istio-system")
    service = next(
        (
            o
            for o in objects
            if o["kind"] == "Service"
            and o["metadata"]["name"] == meta["name"]
            and o["metadata"].get("namespace") == meta.get("namespace")
        ),
        None,
    )
    drs = [
        o
        for o in objects
        if o["kind"] == "DestinationRule" and o["metadata"].get("namespace") == meta.get("namespace")
    ]
    host_selector = case.get("hostSelector")
    metrics = pod_counts(cr, objects, service, drs, host_selector, istio_ns)
    metrics.update({k: str(v) for k, v in (case.get("metrics") or {}).items()})
    return LimiterContext(
        service=service,
        destination_rules=drs,
        metrics=metrics,
        config=LimiterConfig.model_validate(case.get("config") or {}),
        istio_namespace=istio_ns,
        istio_rev=glob.get("istioRev", ""),
        strict_rev=bool(glob.get("strictRev", False)),
        host_selector=host_selector,
    )


def result_document(result: LimiterResult, case: Mapping[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "valid": result.valid,
        "inScope": result.in_scope,
        "sets": result.sets,
        "incompleteSets": sorted(result.incomplete_sets),
        "missingMetrics": sorted(result.missing_metrics),
        "problems": [p._asdict() for p in result.problems],
        "envoyfilters": result.envoyfilters,
        "rlsDescriptors": result.rls_descriptors,
        "status": result.status,
    }
    if "rlsConfig" in case:
        meta = case["smartlimiter"]["metadata"]
        cfg = LimiterConfig.model_validate(case.get("config") or {})
        doc["rlsConfig"] = merge_rls_config(
            case["rlsConfig"], meta["name"], meta["namespace"], result.rls_descriptors, cfg.rls_domain
        )
    return doc


CASES = sorted(p.name.removesuffix(".in.yaml") for p in HERE.glob("*.in.yaml"))


def load_case(name: str) -> dict[str, Any]:
    return yaml.safe_load((HERE / f"{name}.in.yaml").read_text())


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str, golden: Callable[[Path, Any], None]) -> None:
    case = load_case(name)
    result = render_smartlimiter(case["smartlimiter"], build_context(case))
    golden(HERE / f"{name}.out.yaml", result_document(result, case))


def test_cases_exist() -> None:
    assert len(CASES) >= 20, CASES


def _upstream_objects() -> list[dict[str, Any]]:
    objects = [o for o in yaml.safe_load_all((UPSTREAM_DATA / "base_objs.local.yaml").read_text()) if o]
    for o in objects:
        if o["kind"] == "Pod":  # upstream's test sets the phase after creating it
            o["status"] = {"phase": "Running"}
    return objects


@pytest.mark.parametrize("name", UPSTREAM_CASES)
def test_upstream_fixture(name: str) -> None:
    cr = yaml.safe_load((UPSTREAM_DATA / f"{name}.local.yaml").read_text())
    expected = yaml.safe_load((UPSTREAM_DATA / f"{name}.local.ef.expect.yaml").read_text())
    case = {
        "smartlimiter": cr,
        "objects": _upstream_objects(),
        # upstream suite_test.go: slime env and limiter config
        "global": {"istioRev": "default", "istioNamespace": "istio-system"},
        "config": {
            "disableAdaptive": True,
            "disableInsertLocalRateLimit": True,
            "disableInsertGlobalRateLimit": True,
            "rlsConfigMap": {},
        },
    }
    result = render_smartlimiter(cr, build_context(case))
    assert result.problems == []
    assert len(result.envoyfilters) == 1
    ef = result.envoyfilters[0]
    assert ef["apiVersion"] == expected["apiVersion"] and ef["kind"] == expected["kind"]
    # upstream's test compares labels, annotations and spec (not the name)
    assert ef["metadata"].get("labels") == expected["metadata"].get("labels")
    assert ef["metadata"].get("annotations") == expected["metadata"].get("annotations")
    assert ef["spec"] == expected["spec"]
    assert ef["metadata"]["name"] == f"{cr['metadata']['name']}.{cr['metadata']['namespace']}.ratelimit"


def test_upstream_e2e_sample_typo_is_rejected() -> None:
    """The e2e sample writes `stragety`; upstream drops it silently, we refuse it."""
    path = UPSTREAM / "test/e2e/testdata/install/samples/limiter/productpage_smartlimiter.yaml"
    cr = yaml.safe_load(path.read_text())
    result = render_smartlimiter(cr, LimiterContext(metrics={"_base.pod": "6"}))
    assert not result.valid and result.envoyfilters == []
    [problem] = result.problems
    assert problem.reason == "InvalidSpec" and "stragety" in problem.message


@pytest.mark.parametrize("name", CASES)
def test_counted_pods_give_the_same_context_and_queries(name: str) -> None:
    """The operator narrows a namespace's pods to ``counted_pods`` once per evaluation; the
    context and the Prometheus queries from them must equal those from every pod."""
    case = load_case(name)
    cr, objects = case["smartlimiter"], case.get("objects") or []
    by_kind = {k: [o for o in objects if o["kind"] == k] for k in ("Service", "Pod", "DestinationRule")}
    globals_ = load_module_configs({"name": "limiter", "global": case.get("global") or {}})[0].globals
    config = LimiterConfig.model_validate(case.get("config") or {})
    handlers = {"cpu.sum": Handler(query='sum(cpu{namespace="$namespace",pod=~"$pod_name"})')}
    narrowed = counted_pods(cr, by_kind["Service"], by_kind["Pod"], globals_)
    assert len(narrowed) <= len(by_kind["Pod"])

    def both(pods: list[dict[str, Any]]) -> tuple[Any, Any]:
        args = (cr, by_kind["Service"], pods, by_kind["DestinationRule"])
        ctx = limiter_context(*args, case.get("metrics") or {}, config, globals_)
        return ctx, prometheus_queries(*args, config, globals_, handlers)

    assert both(narrowed) == both(by_kind["Pod"])
