"""samples/boot/ renders through `slime render` with every SlimeBoot Ready: the limiter alone, a
bundle, lazyload with its global-sidecar."""

from __future__ import annotations

import json
from pathlib import Path

from slime.render import render_paths

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "boot"


def test_every_sample_renders_ready() -> None:
    out = render_paths([SAMPLES], [], None)
    assert out.errors == []
    names = {s["metadata"]["name"] for s in out.statuses}
    assert names == {"limiter", "bundle", "lazyload"}
    for status in out.statuses:
        ready = next(c for c in status["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True", ready
    deployments = {o["metadata"]["name"] for o in out.objects if o["kind"] == "Deployment"}
    assert deployments == {"limiter", "bundle", "lazyload"}  # the lazyload module deploys its global-sidecar
    [cm] = [o for o in out.objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "lazyload"]
    assert json.loads(cm["data"]["cfg"])["general"]["globalSidecar"]["enable"] is True
    assert {o["metadata"]["namespace"] for o in out.objects if "namespace" in o["metadata"]} == {"slime-samples"}
