"""``make demo`` on the mesh bed (``slime.demobed``), run on the shared bed: the limiter, plugin and
lazyload samples applied, app Pods with sidecars for their Services, a client sending requests; every
sample goes Ready and real requests are limited (429) where a sample says so, and only there."""

from __future__ import annotations

import re

from slime.demobed import ALWAYS_LIMITED, BedDemo, run_once
from slime.meshbed import MeshBed


def test_the_demo_limits_real_requests_on_the_bed(mesh_bed: MeshBed) -> None:
    lines: list[str] = []
    demo = BedDemo(mesh_bed, say=lines.append)
    try:
        code = run_once(demo, timeout=120)
        out = "\n".join(lines)
        assert code == 0, out
        for kind in ("SmartLimiter", "PluginManager", "EnvoyPlugin", "ServiceFence"):
            assert re.search(rf"^{kind}\s+slime-samples/\S+\s+True", out, re.M), (kind, out)
        assert re.search(r"^EnvoyFilter\s+slime-samples/productpage\.slime-samples\.ratelimit\s+"
                         r"SmartLimiter slime-samples/productpage\s*$", out, re.M), out
        assert re.search(rf"^{ALWAYS_LIMITED}\s+.*\d+x429", out, re.M), out  # the live view's row
        counts = {svc: c.total for svc, c in demo.counts.items()}
        for svc in ("reviews", "productpage"):  # limited: some pass, the rest get 429
            assert counts[svc].get(200, 0) > 0 and counts[svc].get(429, 0) > 0, counts
        for svc in ("httpbin", "frontend"):  # no limit that matches the client's requests
            assert set(counts[svc]) == {200}, counts
    finally:
        demo.cleanup()
    assert "slime-samples" not in mesh_bed.kubectl("get", "namespaces", "-o", "name")
