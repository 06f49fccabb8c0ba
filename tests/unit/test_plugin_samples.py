"""samples/plugin/ renders through the module with every CR Ready (with and without its config)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.golden.test_plugin_golden import render_stream, settings_for

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "plugin"
FILES = sorted(p for p in SAMPLES.glob("*.yaml") if not p.name.startswith("00-"))  # 00-namespace.yaml: no CR
CONFIGS = [None, *sorted((SAMPLES / "config").glob("*.yaml"))]


def sample_output(path: Path, config: Path | None = None) -> list[dict[str, Any]]:
    objects = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return render_stream(objects, settings_for(config.read_text() if config else None))


def test_the_samples_issue_10_asks_for() -> None:
    kinds = {(d["kind"], p.name) for p in FILES for d in yaml.safe_load_all(p.read_text()) if d}
    assert {"lua-and-rbac.yaml", "per-route.yaml", "wasm.yaml"} <= {name for _, name in kinds}


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name if c else "no-config" for c in CONFIGS])
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_sample_renders_ready(path: Path, config: Path | None) -> None:
    out = sample_output(path, config)
    statuses = [d for d in out if "status" in d]
    assert statuses, "no Slime object in the sample"
    for doc in statuses:
        ready = next(c for c in doc["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True", (path.name, ready)
    assert len([d for d in out if d["kind"] == "EnvoyFilter"]) == len(statuses)
