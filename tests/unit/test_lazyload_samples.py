"""samples/lazyload: every sample renders through the module's contract, every config loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from slime.framework.config import load_module_configs
from slime.framework.module import ObjectsView, Settings
from slime.modules.lazyload import MODULE
from slime.modules.lazyload.autofence import plan
from slime.modules.lazyload.config import Fence
from slime.modules.lazyload.globalsidecar import render_fallback
from slime.modules.lazyload.names import sidecar_host_problem

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "lazyload"
CONFIGS = sorted((SAMPLES / "config").glob("*.yaml"))
FILES = sorted(p for p in SAMPLES.glob("*.yaml") if not p.name.startswith("00-"))
CONTEXT = [d for p in sorted((SAMPLES / "context").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def settings(path: Path) -> Settings:
    cfg = load_module_configs(path.read_text())[0]
    return Settings(name=cfg.name, general=Fence.model_validate(cfg.general), globals=cfg.globals, metric=cfg.metric)


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("config", CONFIGS, ids=[p.name for p in CONFIGS])
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_samples_render_ready(path: Path, config: Path) -> None:
    objects = docs(path)
    view = ObjectsView([*objects, *CONTEXT])
    s = settings(config)
    for cr in (o for o in objects if o["kind"] == "ServiceFence"):
        result = MODULE.render(cr, MODULE.context(cr, view, s))
        assert result.ready is not None and result.ready.status is True, result.ready
        [sidecar] = result.objects or []
        hosts = sidecar["spec"]["egress"][0]["hosts"]
        assert all(sidecar_host_problem(h) is None for h in hosts)
        assert len(hosts) > 2


@pytest.mark.parametrize("config", CONFIGS, ids=[p.name for p in CONFIGS])
def test_configs_render_a_fallback_route(config: Path) -> None:
    objects = render_fallback(settings(config))
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == ["ConfigMap", "Deployment", "EnvoyFilter", "Service"]


def test_auto_fence_sample_makes_one_fence() -> None:
    s = settings(SAMPLES / "config" / "lazyload.yaml")
    todo = plan(docs(SAMPLES / "context" / "auto-fence.yaml"), [], [], s.general, s.globals)
    [fence] = todo.create
    assert (fence["metadata"]["namespace"], fence["metadata"]["name"]) == ("slime-samples", "productpage")
    [sample] = docs(SAMPLES / "auto-fence.yaml")
    assert sample["spec"] == fence["spec"]


GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "lazyload"


def test_every_rendered_sidecar_is_one_istiod_accepts() -> None:
    from slime.modules.lazyload.names import label_problem

    sidecars = [d for p in sorted(GOLDEN.glob("*.out.yaml")) for d in yaml.safe_load_all(p.read_text())
                if d and d["kind"] == "Sidecar"]
    assert len(sidecars) >= 20
    for sc in sidecars:
        hosts = sc["spec"]["egress"][0]["hosts"]
        assert hosts == sorted(set(hosts), key=str.encode), sc["metadata"]
        assert all(sidecar_host_problem(h) is None for h in hosts), hosts
        labels = sc["spec"]["workloadSelector"]["labels"]
        assert labels and all(label_problem(k, v) is None for k, v in labels.items())


def test_upstream_module_configs_validate() -> None:
    """The `general` of every upstream lazyload SlimeBoot sample is a valid Fence (from ../shared)."""
    import os

    from tests.compat import COMPAT

    root = COMPAT / "lazyload" / "install" / "samples" / "lazyload"
    if not root.is_dir():
        msg = f"upstream compat data not found at {root}: set SLIME_COMPAT_DIR to a copy of ../shared/compat/slime"
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    seen = 0
    for path in sorted(root.glob("slimeboot_*.yaml")):
        for doc in docs(path):
            for module in doc["spec"].get("module", []):
                fence = Fence.model_validate(module.get("general") or {})
                assert fence.wormholePort, path.name
                seen += 1
    assert seen >= 4
