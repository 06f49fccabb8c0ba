"""lazyload goldens beyond the generic runner (tests/golden/test_golden.py renders every
``lazyload/<case>.in.yaml``: ServiceFences and cluster objects, optionally a ``LearnedDependencies``
record giving the time and what was learned, ``<case>.config.yaml``, ``<case>.metrics.yaml``).

* Upstream's own fixture (``controllers/testdata/autofence.base.*``): auto-fence creates the fence and
  its Sidecar comes out identical. Read from ``../shared`` (skipped with one line when absent, failing
  under CI=true).
* ``lazyload/globalsidecar/<case>.config.yaml`` -> ``.out.yaml``: the fallback route rendered from a
  module config (not per CR, so not a ``slime render`` case).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from slime.framework.config import default_module_config, load_module_configs
from slime.framework.module import ObjectsView, Settings
from slime.modules.lazyload import MODULE
from slime.modules.lazyload.autofence import desired_fences
from slime.modules.lazyload.globalsidecar import render_fallback
from slime.render import YamlDumper
from tests.compat import COMPAT

HERE = Path(__file__).parent / "lazyload"
UPSTREAM_DATA = COMPAT / "lazyload" / "controllers" / "testdata"
SLIME_KINDS = {k.kind for k in MODULE.kinds}


def require_compat(path: Path) -> None:
    if path.exists():
        return
    msg = f"upstream compat data not found at {path}: set SLIME_COMPAT_DIR to a copy of ../shared/compat/slime"
    if os.environ.get("CI") == "true":
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def settings_from(config: Mapping[str, Any] | None) -> Settings:
    cfg = load_module_configs(dict(config))[0] if config else default_module_config("lazyload")
    return Settings(name=cfg.name, general=MODULE.config.model_validate(cfg.general), globals=cfg.globals,
                    metric=cfg.metric)


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return str(obj.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name") or "")


def render_documents(objects: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    view = ObjectsView(objects)
    rendered: list[dict[str, Any]] = []
    statuses: list[dict[str, Any]] = []
    for cr in sorted((o for o in objects if o.get("kind") in SLIME_KINDS), key=_key):
        result = MODULE.render(cr, MODULE.context(cr, view, settings))
        rendered.extend(result.objects or [])
        meta = cr.get("metadata") or {}
        status: dict[str, Any] = {}
        if result.in_scope:
            status = {**result.status, "conditions": [
                {"type": c.type, "status": c.status_text, "reason": c.reason, "message": c.message}
                for c in result.conditions]}
        statuses.append({"apiVersion": cr.get("apiVersion"), "kind": cr.get("kind"),
                         "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
                         "status": status})
    return sorted(rendered, key=_key) + statuses


def load_case(name: str) -> tuple[list[dict[str, Any]], Settings]:
    objects = [d for d in yaml.safe_load_all((HERE / f"{name}.in.yaml").read_text()) if d]
    config_path = HERE / f"{name}.config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.exists() else None
    return objects, settings_from(config)


CASES = sorted(p.name.removesuffix(".in.yaml") for p in HERE.glob("*.in.yaml"))


def check_stream(path: Path, docs: list[dict[str, Any]], update: bool) -> None:
    """Compare a multi-document YAML stream with ``path`` (``--update-goldens`` rewrites it)."""
    text = yaml.dump_all(docs, Dumper=YamlDumper, sort_keys=False, default_flow_style=False,
                         allow_unicode=True, width=120, explicit_start=True)
    if update:
        path.write_text(text)
        return
    if not path.exists():
        pytest.fail(f"{path} does not exist: run pytest with --update-goldens and review it", pytrace=False)
    expected = path.read_text()
    if [d for d in yaml.safe_load_all(expected) if d is not None] == docs:
        return
    diff = difflib.unified_diff(expected.splitlines(), text.splitlines(), f"{path.name} (expected)",
                                f"{path.name} (actual)", lineterm="")
    pytest.fail("golden mismatch:\n" + "\n".join(diff), pytrace=False)


FALLBACK = HERE / "globalsidecar"
FALLBACK_CASES = sorted(p.name.removesuffix(".config.yaml") for p in FALLBACK.glob("*.config.yaml"))


@pytest.mark.parametrize("name", FALLBACK_CASES)
def test_fallback_golden(name: str, request: pytest.FixtureRequest) -> None:
    """``globalsidecar/<case>.config.yaml`` (a module config) -> the fallback route's objects."""
    settings = settings_from(yaml.safe_load((FALLBACK / f"{name}.config.yaml").read_text()))
    update = bool(request.config.getoption("--update-goldens", default=False))
    check_stream(FALLBACK / f"{name}.out.yaml", render_fallback(settings), update)


def test_every_output_has_an_input() -> None:
    """The per-fence cases run in the generic tests/golden/test_golden.py; here: there are enough, and
    every fallback output has its config."""
    assert len(CASES) >= 30, CASES
    fallback_outputs = {p.name.removesuffix(".out.yaml") for p in FALLBACK.glob("*.out.yaml")}
    assert fallback_outputs == set(FALLBACK_CASES), fallback_outputs ^ set(FALLBACK_CASES)


def test_upstream_autofence_fixture() -> None:
    """Upstream's only controller test: autofence creates the fence of lazyload/foo, whose Sidecar is
    ``{egress: [{hosts: [istio-system/*, mesh-operator/*]}], workloadSelector: {labels: {app: foo}}}`` with no
    labels and no annotations. Its environment: autoFence and defaultFence on, accesslog, clusterGsNamespace
    mesh-operator."""
    require_compat(UPSTREAM_DATA / "autofence.base.input.yaml")
    objects = [d for d in yaml.safe_load_all((UPSTREAM_DATA / "autofence.base.input.yaml").read_text()) if d]
    expected = yaml.safe_load((UPSTREAM_DATA / "autofence.base.expect.sidecar.yaml").read_text())
    settings = settings_from({"name": "lazyload", "kind": "lazyload", "enable": True,
                              "general": {"metricSourceType": "accesslog", "clusterGsNamespace": "mesh-operator",
                                          "autoFence": True, "defaultFence": True},
                              "global": {"istioNamespace": "istio-system", "slimeNamespace": "mesh-operator",
                                         "misc": {"logSourcePort": "20000"}}})
    fences = desired_fences(objects, objects, settings.general, settings.globals)
    assert [f["metadata"]["name"] for f in fences] == ["foo"]
    docs = render_documents(objects + fences, settings)
    [sidecar] = [d for d in docs if d["kind"] == "Sidecar"]
    assert sidecar["kind"] == expected["kind"]
    assert sidecar["apiVersion"].split("/")[0] == expected["apiVersion"].split("/")[0]
    assert (sidecar["metadata"]["name"], sidecar["metadata"]["namespace"]) == (
        expected["metadata"]["name"], expected["metadata"]["namespace"])
    assert sidecar["metadata"].get("labels") is None and sidecar["metadata"].get("annotations") is None
    assert sidecar["spec"] == expected["spec"]
