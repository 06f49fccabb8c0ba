"""``slime render``: the CLI around the one render path (the golden cases cover what it renders).

Expected objects are never written here: they come from the golden files, from upstream's
fixtures, or from the render path called on the same inputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from slime import registry
from slime.cli import main
from slime.framework.config import load_module_configs
from slime.render import load_paths, render_sources
from tests.compat import COMPAT, require_compat
from tests.golden.test_golden import HERE as GOLDEN
from tests.golden.test_golden import render_case

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
TYPO_SAMPLE = COMPAT / "limiter" / "test/e2e/testdata/install/samples/limiter/productpage_smartlimiter.yaml"


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    rc = main(["render", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def order_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def sample_args(module: str) -> list[str]:
    """What `slime render` needs besides a module's sample files: context, config, metrics."""
    base = SAMPLES / module
    context = ["-f", str(base / "context")] if (base / "context").is_dir() else []
    return context + config_args(module)


def config_args(module: str) -> list[str]:
    base = SAMPLES / module
    args: list[str] = []
    if (base / "config" / f"{module}.yaml").exists():
        args += ["--config", str(base / "config" / f"{module}.yaml")]
    if (base / "config" / "metrics.yaml").exists():
        args += ["--metrics", str(base / "config" / "metrics.yaml")]
    return args


SAMPLE_MODULES = [m for m in registry.names() if (SAMPLES / m).is_dir()]
SAMPLE_FILES = [(m, p.name) for m in SAMPLE_MODULES for p in sorted((SAMPLES / m).glob("*.yaml"))]


# --------------------------------------------------------------------------- samples


def test_limiter_has_a_sample_per_mode() -> None:
    assert len([f for m, f in SAMPLE_FILES if m == "limiter"]) >= 9


@pytest.mark.parametrize("module", SAMPLE_MODULES)
def test_samples_of_a_module_render_together(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "-f", SAMPLES / module, *sample_args(module), "--status")
    assert rc == 0, err
    objects = docs(out)
    crs = [o for o in objects if o.get("status")]
    assert crs and all(c["status"]["conditions"][0] == {**c["status"]["conditions"][0], "status": "True"}
                       for c in crs)
    rendered = objects[: len(objects) - len(crs)]
    assert rendered and rendered == sorted(rendered, key=order_key)


@pytest.mark.parametrize(("module", "name"), SAMPLE_FILES)
def test_each_sample_renders_alone_as_part_of_all(module: str, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """One file (with its context) gives the same objects as it gives among all the samples."""
    context = SAMPLES / module / "context" / name
    extra = ["-f", str(context)] if context.exists() else []
    rc, out, err = run(capsys, "-f", SAMPLES / module / name, *extra, *config_args(module))
    assert rc == 0, err
    _, together, _ = run(capsys, "-f", SAMPLES / module, *sample_args(module))
    all_objects = docs(together)
    for obj in docs(out):
        if obj["kind"] != "ConfigMap":  # the RLS file sums up every limiter's entries
            assert obj in all_objects


def test_json_output_is_a_list_of_the_same_objects(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["-f", SAMPLES / "limiter", *sample_args("limiter")]
    _, out_yaml, _ = run(capsys, *args)
    rc, out_json, _ = run(capsys, *args, "-o", "json")
    assert rc == 0
    listing = json.loads(out_json)
    assert listing["kind"] == "List" and listing["apiVersion"] == "v1"
    assert listing["items"] == docs(out_yaml)


def test_console_script_and_stdin() -> None:
    text = (SAMPLES / "limiter" / "outbound-route.yaml").read_text()
    proc = subprocess.run([str(Path(sys.executable).parent / "slime"), "render", "-f", "-"], input=text,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    [ef] = docs(proc.stdout)
    assert ef["kind"] == "EnvoyFilter" and ef["metadata"]["namespace"] == "slime-samples"


def test_directories_recurse_only_with_r(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "-f", SAMPLES)
    assert rc == 1 and "no .yaml" in err and "-R" in err
    rc, out, err = run(capsys, "-f", SAMPLES / "limiter" / "context", "-R")
    assert rc == 0  # Pods and a ConfigMap only: nothing to render, but valid


def test_empty_input_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n---\n")
    rc, out, err = run(capsys, "-f", empty)
    assert rc == 1 and out == "" and "error: no objects in the input" in err


def test_unknown_kind_in_a_slime_group_suggests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump({"apiVersion": "microservice.slime.io/v1alpha2", "kind": "SmartLimter",
                                   "metadata": {"name": "x"}}))
    rc, _, err = run(capsys, "-f", bad)
    assert rc == 1
    assert f"error: {bad}: SmartLimter default/x: unknown kind SmartLimter in microservice.slime.io; " \
           "did you mean SmartLimiter?" in err


# --------------------------------------------------------------------------- the golden cases


def test_status_output_is_the_golden_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--status` prints exactly what the golden runner compares, for a case with config and metrics."""
    case = GOLDEN / "limiter" / "adaptive_condition_true.in.yaml"
    rc, out, err = run(capsys, "-f", case, "--config", case.with_name("adaptive_condition_true.config.yaml"),
                       "--metrics", case.with_name("adaptive_condition_true.metrics.yaml"), "--status")
    assert rc == 0, err
    assert docs(out) == render_case(case)


def test_upstream_fixture_through_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_compat()
    data = COMPAT / "limiter" / "controllers" / "testdata"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"name": "limiter", "kind": "limiter", "enable": True,
                                      "global": {"istioRev": "default"},
                                      "general": {"disableAdaptive": True, "disableInsertLocalRateLimit": True,
                                                  "disableInsertGlobalRateLimit": True}}))
    rc, out, err = run(capsys, "-f", data / "base_objs.local.yaml", "-f", data / "limit_by_method.local.yaml",
                       "--config", config)
    assert rc == 0, err
    expected = yaml.safe_load((data / "limit_by_method.local.ef.expect.yaml").read_text())
    [ef] = docs(out)
    assert ef["spec"] == expected["spec"]


# --------------------------------------------------------------------------- errors


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def test_unknown_field_names_file_object_and_field(capsys: pytest.CaptureFixture[str]) -> None:
    require_compat()
    rc, out, err = run(capsys, "-f", TYPO_SAMPLE)
    assert rc == 1 and out == ""
    [line] = _lines(err)
    assert line == (f"error: {TYPO_SAMPLE}: SmartLimiter temp/productpage: "
                    "spec.sets._base.descriptor[0].action.stragety: unknown field")


def test_bad_expression_names_the_field_and_the_position_in_the_template(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    sample = (SAMPLES / "limiter" / "inbound-average.yaml").read_text()
    bad.write_text(sample.replace('"100/{{._base.pod}}"', '"{{._base.pod}}/*2"'))
    rc, out, err = run(capsys, "-f", bad, "-f", SAMPLES / "limiter" / "context" / "inbound-average.yaml")
    assert rc == 1 and out == ""
    [line] = _lines(err)
    assert f"{bad}: SmartLimiter slime-samples/ratings: spec.sets._base.descriptor[0].action.quota:" in line
    assert "position 15 in '{{._base.pod}}/*2'" in line and "InvalidExpression" in line


def test_no_running_pod_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "-f", SAMPLES / "limiter" / "inbound-average.yaml")
    assert rc == 1 and out == ""
    [line] = _lines(err)
    assert "slime-samples/ratings" in line and "no Running pod in set _base" in line and "(NoRunningPod)" in line


def test_missing_handler_says_which(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "-f", SAMPLES / "limiter" / "adaptive-cpu.yaml",
                     "-f", SAMPLES / "limiter" / "context" / "adaptive-cpu.yaml")
    assert rc == 1
    [line] = _lines(err)
    assert "no Prometheus handler 'cpu.sum' in the module config" in line


def test_config_typo_names_module_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"name": "limiter", "enable": True, "general": {"refrsh": "5s"}}))
    rc = main(["render", "-f", str(SAMPLES / "limiter" / "outbound-route.yaml"), "--config", str(config)])
    _, err = capsys.readouterr()
    assert rc == 1
    assert err.strip() == f"error: --config {config}: module 'limiter': general.refrsh: unknown field"


def test_yaml_syntax_error_and_missing_file_all_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Service\nmetadata: {name: [x\n")
    missing = tmp_path / "nope.yaml"
    rc, out, err = run(capsys, "-f", broken, "-f", missing, "-f", SAMPLES / "limiter" / "outbound-route.yaml")
    assert rc == 1 and out == ""
    first, second = _lines(err)
    assert first.startswith(f"error: {broken}:3:") and "invalid YAML" in first
    assert second == f"error: {missing}: no such file or directory"


def test_every_render_problem_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "-f", SAMPLES / "limiter" / "adaptive-cpu.yaml",
                       "-f", SAMPLES / "limiter" / "inbound-average.yaml")
    assert rc == 1 and out == ""
    lines = _lines(err)
    assert len(lines) == 2
    assert any("slime-samples/productpage" in line for line in lines)
    assert any("slime-samples/ratings" in line for line in lines)


def test_duplicate_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same object twice is fine (a shared Namespace file); two different ones of one name are not."""
    sample = SAMPLES / "limiter" / "outbound-route.yaml"
    rc, _, err = run(capsys, "-f", sample, "-f", sample)
    assert rc == 0, err
    changed = tmp_path / "changed.yaml"
    changed.write_text(sample.read_text().replace("quota:", "quota: 7\n        # was:", 1))
    rc, _, err = run(capsys, "-f", sample, "-f", changed)
    assert rc == 1 and "defined twice, differently" in err


def test_invalid_spec_of_every_module_is_reported(tmp_path: Path) -> None:
    """Each module's kinds, with an unknown field, give Ready False InvalidSpec naming it."""
    for info in registry.crd_infos():
        obj = {"apiVersion": info.api_version, "kind": info.kind,
               "metadata": {"name": "x", "namespace": "default"}, "spec": {"nosuchfield": True}}
        sources, errors = load_paths([_write(tmp_path / f"{info.kind}.yaml", obj)])
        assert errors == []
        output = render_sources(sources, load_module_configs([]), {})
        [status] = output.statuses
        ready = status["status"]["conditions"][0]
        assert (ready["type"], ready["status"]) == ("Ready", "False"), info.kind
        assert "spec.nosuchfield: unknown field" in ready["message"], info.kind


def _write(path: Path, obj: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(obj))
    return path
