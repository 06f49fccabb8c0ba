"""``slime render``: the CLI prints what the pure limiter render gives for the same inputs.

Expected outputs are never written here: they come from the limiter's golden files, from
upstream's fixtures, or from calling the pure render on the same objects.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from slime.cli import main
from slime.framework.config import load_module_configs
from slime.framework.metrics import Handler
from slime.modules.limiter.api import LimiterConfig
from slime.modules.limiter.context import limiter_context, prometheus_queries
from slime.modules.limiter.render import render_smartlimiter
from slime.modules.limiter.rls import merge_rls_config
from tests.compat import COMPAT

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "limiter"
GOLDEN = REPO / "tests" / "golden" / "limiter"
UPSTREAM = COMPAT / "limiter"
UPSTREAM_DATA = UPSTREAM / "controllers" / "testdata"
TYPO_SAMPLE = UPSTREAM / "test/e2e/testdata/install/samples/limiter/productpage_smartlimiter.yaml"

# Extra arguments a sample needs (its comments say the same).
SAMPLE_ARGS = {
    "adaptive-cpu.yaml": ["--metrics", str(SAMPLES / "metrics.yaml")],
    "global-rls.yaml": ["--config", str(SAMPLES / "config-global.yaml")],
}
SAMPLE_FILES = sorted(p.name for p in SAMPLES.glob("*.yaml") if p.name not in ("metrics.yaml", "config-global.yaml"))


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    rc = main(["render", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def order_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


# --------------------------------------------------------------------------- samples


def test_there_is_a_sample_per_mode() -> None:
    assert len(SAMPLE_FILES) >= 8, SAMPLE_FILES


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_sample_renders(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "-f", SAMPLES / name, *SAMPLE_ARGS.get(name, []))
    assert rc == 0, err
    assert "error" not in err
    objects = docs(out)
    assert objects and any(o["kind"] == "EnvoyFilter" for o in objects)
    assert objects == sorted(objects, key=order_key)


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_sample_output_is_the_pure_render(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The same objects given straight to the context helper and the render give the same EnvoyFilters."""
    rc, out, _ = run(capsys, "-f", SAMPLES / name, *SAMPLE_ARGS.get(name, []))
    assert rc == 0
    objects = [o for d in docs((SAMPLES / name).read_text()) for o in (d.get("items") or [d])]
    args = SAMPLE_ARGS.get(name, [])
    configs = load_module_configs((SAMPLES / "config-global.yaml").read_text()) if "--config" in args else []
    general = configs[0].general if configs else {}
    metrics = yaml.safe_load((SAMPLES / "metrics.yaml").read_text()) if "--metrics" in args else {}
    expected = []
    for cr in (o for o in objects if o["kind"] == "SmartLimiter"):
        meta = cr["metadata"]
        by_kind = {k: [o for o in objects if o["kind"] == k] for k in ("Service", "Pod", "DestinationRule")}
        ctx = limiter_context(
            cr,
            by_kind["Service"],
            by_kind["Pod"],
            by_kind["DestinationRule"],
            metrics.get(f"{meta['namespace']}/{meta['name']}", {}),
            LimiterConfig.model_validate(general),
            configs[0].globals if configs else load_module_configs({"name": "limiter"})[0].globals,
        )
        result = render_smartlimiter(cr, ctx)
        assert result.problems == []
        expected += result.envoyfilters
    assert [o for o in docs(out) if o["kind"] == "EnvoyFilter"] == sorted(expected, key=order_key)


def test_samples_together_in_any_order(capsys: pytest.CaptureFixture[str]) -> None:
    """Several files at once: one sorted output whatever the order of -f, same as one by one."""
    names = [n for n in SAMPLE_FILES if "--metrics" not in SAMPLE_ARGS.get(n, [])]
    config = ["--config", str(SAMPLES / "config-global.yaml")]
    forward = [a for n in names for a in ("-f", str(SAMPLES / n))]
    backward = [a for n in reversed(names) for a in ("-f", str(SAMPLES / n))]
    rc1, out1, err1 = run(capsys, *forward, *config)
    rc2, out2, _ = run(capsys, *backward, *config)
    assert rc1 == rc2 == 0, err1
    assert out1 == out2
    together = docs(out1)
    assert together == sorted(together, key=order_key)
    singles: list[dict[str, Any]] = []
    for n in names:
        rc, out, _ = run(capsys, "-f", SAMPLES / n, *config)
        assert rc == 0
        singles += docs(out)
    assert sorted(singles, key=order_key) == together


def test_json_output_is_a_list_of_the_same_objects(capsys: pytest.CaptureFixture[str]) -> None:
    args: list[str | Path] = ["-f", SAMPLES / "global-rls.yaml", *SAMPLE_ARGS["global-rls.yaml"]]
    _, out_yaml, _ = run(capsys, *args)
    rc, out_json, _ = run(capsys, *args, "-o", "json")
    assert rc == 0
    listing = json.loads(out_json)
    assert listing["kind"] == "List" and listing["apiVersion"] == "v1"
    assert listing["items"] == docs(out_yaml)
    assert [o["kind"] for o in listing["items"]] == ["ConfigMap", "EnvoyFilter"]


def test_console_script(tmp_path: Path) -> None:
    name = "inbound-average.yaml"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "slime"), "render", "-f", str(SAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    [ef] = docs(proc.stdout)
    assert ef["metadata"]["name"] == "ratings.default.ratelimit"


# --------------------------------------------------------------------------- upstream fixtures


def _upstream_config(tmp_path: Path) -> Path:
    # upstream's suite_test.go: slime env and limiter config
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "limiter",
                "kind": "limiter",
                "enable": True,
                "global": {"istioRev": "default", "istioNamespace": "istio-system"},
                "general": {
                    "disableAdaptive": True,
                    "disableInsertLocalRateLimit": True,
                    "disableInsertGlobalRateLimit": True,
                    "rlsConfigMap": {},
                },
            }
        )
    )
    return path


@pytest.mark.parametrize(
    "case",
    ["limit_by_method", "limit_by_query", "limit_by_sourceIP", "limit_outbound_with_mismatch_selector"],
)
def test_upstream_fixture(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(
        capsys,
        "-f",
        UPSTREAM_DATA / "base_objs.local.yaml",
        "-f",
        UPSTREAM_DATA / f"{case}.local.yaml",
        "--config",
        _upstream_config(tmp_path),
    )
    assert rc == 0, err
    expected = yaml.safe_load((UPSTREAM_DATA / f"{case}.local.ef.expect.yaml").read_text())
    cr = yaml.safe_load((UPSTREAM_DATA / f"{case}.local.yaml").read_text())
    [ef] = docs(out)
    # upstream's test compares labels and spec; the name is ours by upstream's rule
    assert ef["apiVersion"] == expected["apiVersion"] and ef["kind"] == expected["kind"]
    assert ef["metadata"].get("labels") == expected["metadata"].get("labels")
    assert ef["spec"] == expected["spec"]
    assert ef["metadata"]["name"] == f"{cr['metadata']['name']}.default.ratelimit"


# --------------------------------------------------------------------------- the limiter's golden cases


GOLDEN_CASES = sorted(p.name.removesuffix(".in.yaml") for p in GOLDEN.glob("*.in.yaml"))


def _golden_files(case: Mapping[str, Any], tmp_path: Path) -> list[str]:
    """The golden case as `slime render` arguments: objects, module config, metrics."""
    cr = case["smartlimiter"]
    meta = cr["metadata"]
    objects = [cr, *(case.get("objects") or [])]
    general = case.get("config") or {}
    if "hostSelector" in case:  # the mesh service the render looks up for spec.host
        objects.append(
            {
                "apiVersion": "networking.istio.io/v1beta1",
                "kind": "ServiceEntry",
                "metadata": {"name": "mesh-service", "namespace": meta["namespace"]},
                "spec": {"hosts": [cr["spec"]["host"]], "workloadSelector": {"labels": case["hostSelector"]}},
            }
        )
    if "rlsConfig" in case:
        ref = general["rlsConfigMap"]
        objects.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": dict(ref), "data": {"config.yaml": case["rlsConfig"]}}
        )
    (tmp_path / "in.yaml").write_text(yaml.safe_dump_all(objects))
    config = {
        "name": "limiter",
        "kind": "limiter",
        "enable": True,
        "general": general,
        "global": case.get("global") or {},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    args = ["-f", str(tmp_path / "in.yaml"), "--config", str(tmp_path / "config.yaml")]
    if case.get("metrics"):
        (tmp_path / "metrics.yaml").write_text(yaml.safe_dump({f"{meta['namespace']}/{meta['name']}": case["metrics"]}))
        args += ["--metrics", str(tmp_path / "metrics.yaml")]
    return args


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_golden_case_through_cli(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = yaml.safe_load((GOLDEN / f"{name}.in.yaml").read_text())
    want = yaml.safe_load((GOLDEN / f"{name}.out.yaml").read_text())
    rc, out, err = run(capsys, *_golden_files(case, tmp_path))
    meta = case["smartlimiter"]["metadata"]
    label = f"SmartLimiter {meta['namespace']}/{meta['name']}"
    if want["problems"]:
        assert rc == 1 and out == ""
        assert label in err
        for p in want["problems"]:
            if p["reason"] == "InvalidSpec":
                # validated before the render, which may write list indexes as [i]
                path = p["message"].split(":")[0]
                assert path in err or re.sub(r"\.(\d+)", r"[\1]", path) in err
            else:
                assert f"{p['message']} ({p['reason']})" in err
        return
    assert rc == 0, err
    objects = docs(out)
    if not want["inScope"]:
        assert objects == [] and f"{label}: istio.io/rev out of" in err
        return
    assert [o for o in objects if o["kind"] == "EnvoyFilter"] == want["envoyfilters"]
    configmaps = [o for o in objects if o["kind"] == "ConfigMap"]
    cfg = LimiterConfig.model_validate(case.get("config") or {})
    ref = cfg.rlsConfigMap
    if (
        ref
        and ref.name
        and ref.namespace
        and not cfg.disableGlobalRateLimit
        and (want["rlsDescriptors"] or "rlsConfig" in case)
    ):
        [cm] = configmaps
        assert (cm["metadata"]["namespace"], cm["metadata"]["name"]) == (ref.namespace, ref.name)
        expected = merge_rls_config(
            case.get("rlsConfig"), meta["name"], meta["namespace"], want["rlsDescriptors"], cfg.rls_domain
        )
        assert yaml.safe_load(cm["data"]["config.yaml"]) == yaml.safe_load(expected)
    else:
        assert configmaps == []


# --------------------------------------------------------------------------- errors


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def test_unknown_field_names_file_object_and_field(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "-f", TYPO_SAMPLE)
    assert rc == 1 and out == ""
    [line] = _lines(err)
    assert line == (
        f"error: {TYPO_SAMPLE}: SmartLimiter temp/productpage: "
        "spec.sets._base.descriptor[0].action.stragety: unknown field"
    )


def test_bad_expression_names_position(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((SAMPLES / "inbound-average.yaml").read_text().replace('"100/{{._base.pod}}"', '"100/*2"'))
    rc, out, err = run(capsys, "-f", bad)
    assert rc == 1 and out == ""
    [line] = _lines(err)
    assert f"{bad}: SmartLimiter default/ratings: spec.sets._base.descriptor" in line
    assert "position 4" in line and "InvalidExpression" in line


def test_missing_metric(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "-f", SAMPLES / "adaptive-cpu.yaml")
    assert rc == 1 and out == ""
    [line] = _lines(err)
    assert "SmartLimiter default/productpage" in line and "_base.cpu.sum" in line and "MissingMetric" in line


def test_yaml_syntax_error_and_missing_file_all_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Service\nmetadata: {name: [x\n")
    missing = tmp_path / "nope.yaml"
    rc, out, err = run(capsys, "-f", broken, "-f", missing, "-f", SAMPLES / "inbound-average.yaml")
    assert rc == 1 and out == ""
    first, second = _lines(err)
    assert first.startswith(f"error: {broken}:3:") and "invalid YAML" in first
    assert second == f"error: {missing}: no such file or directory"


def test_every_render_problem_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "-f", SAMPLES / "adaptive-cpu.yaml", "-f", TYPO_SAMPLE)
    assert rc == 1 and out == ""
    lines = _lines(err)
    assert len(lines) == 2
    assert any("default/productpage" in line for line in lines)
    assert any("temp/productpage" in line for line in lines)


def test_metrics_cannot_set_pod_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = tmp_path / "m.yaml"
    metrics.write_text(yaml.safe_dump({"default/ratings": {"_base.pod": 1}}))
    rc, _, err = run(capsys, "-f", SAMPLES / "inbound-average.yaml", "--metrics", metrics)
    assert rc == 1
    assert _lines(err) == [
        f"error: {metrics}: default/ratings: _base.pod: pod counts come from the Pod objects given, not from --metrics"
    ]


def test_duplicate_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "-f", SAMPLES / "inbound-average.yaml", "-f", SAMPLES / "inbound-average.yaml")
    assert rc == 1 and "SmartLimiter default/ratings: defined twice" in err


def test_other_kinds_are_validated_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fence = {
        "apiVersion": "microservice.slime.io/v1alpha1",
        "kind": "ServiceFence",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"enable": True},
    }
    good = tmp_path / "fence.yaml"
    good.write_text(yaml.safe_dump(fence))
    rc, out, err = run(capsys, "-f", good)
    assert rc == 0 and out == ""
    assert f"note: {good}: ServiceFence default/reviews: no render yet, validated only" in err
    bad = tmp_path / "bad-fence.yaml"
    bad.write_text(yaml.safe_dump({**fence, "spec": {"enabel": True}}))
    rc, out, err = run(capsys, "-f", bad)
    assert rc == 1 and f"error: {bad}: ServiceFence default/reviews: spec.enabel: unknown field" in err


# --------------------------------------------------------------------------- the context helpers


def test_prometheus_queries_use_the_counted_pods() -> None:
    """The operator's queries get the same pods per set as the counts the render sees."""
    objects = [o for d in docs((SAMPLES / "subset.yaml").read_text()) for o in (d.get("items") or [d])]
    cr = next(o for o in objects if o["kind"] == "SmartLimiter")
    kinds = {k: [o for o in objects if o["kind"] == k] for k in ("Service", "Pod", "DestinationRule")}
    globals_ = load_module_configs({"name": "limiter"})[0].globals
    handlers = {"cpu.sum": Handler(query='sum(cpu{namespace="$namespace", pod=~"$pod_name"})')}
    args = (cr, kinds["Service"], kinds["Pod"], kinds["DestinationRule"])
    assert prometheus_queries(*args, LimiterConfig(), globals_, handlers) == {}  # the sample uses no cpu.sum
    ctx = limiter_context(*args, {}, LimiterConfig(), globals_)
    counted = {k.removesuffix(".pod"): int(v) for k, v in ctx.metrics.items()}
    cr = copy.deepcopy(cr)  # now refer to every set's cpu.sum
    descriptor = next(iter(cr["spec"]["sets"].values()))["descriptor"][0]
    descriptor["condition"] = " && ".join(f"{{{{.{name}.cpu.sum}}}}>0" for name in counted)
    args = (cr, kinds["Service"], kinds["Pod"], kinds["DestinationRule"])
    queries = prometheus_queries(*args, LimiterConfig(), globals_, handlers)
    assert {k.removesuffix(".cpu.sum") for k in queries} == set(counted)
    for set_name, n in counted.items():
        promql = queries[f"{set_name}.cpu.sum"].promql
        assert promql.count("|") == n - 1 and 'namespace="default"' in promql
    assert prometheus_queries(*args, LimiterConfig(disableAdaptive=True), globals_, handlers) == {}
    # a kopf-style index (key -> objects) gives the same context as plain lists
    index = {(o["metadata"]["namespace"], o["metadata"]["name"]): [o] for o in kinds["Pod"]}
    assert limiter_context(cr, kinds["Service"], index, kinds["DestinationRule"], {}, LimiterConfig(), globals_) == ctx
