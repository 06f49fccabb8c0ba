"""`python -m slime.demo --once --dev-cluster` (what `make demo` runs without root or the mesh bed's
tools): the whole product on its own local control plane, the adaptive limit in force, and nothing
left running afterwards. The demo on the mesh bed: tests/e2e/test_demo.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from slime.devcluster import DevCluster

DEMO_TIMEOUT = 240.0


def processes_with_env(marker: str) -> list[str]:
    """Command lines of the processes whose environment holds ``marker`` (inherited by every child)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes().split(b"\0"):
                found.append(environ.with_name("cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


@pytest.mark.timeout(DEMO_TIMEOUT + 60)
def test_demo_once_shows_the_adaptive_envoyfilter_and_leaves_nothing_running(
    dev_cluster: DevCluster, prometheus_binary: str, tmp_path: Path
) -> None:
    # dev_cluster: only to know the control plane is built (the demo starts its own cluster).
    run_id = uuid.uuid4().hex
    marker = f"SLIME_DEMO_TEST_RUN={run_id}"
    env = {**os.environ, "SLIME_CONTROLPLANE_BIN": str(dev_cluster.bin_dir), "SLIME_DEMO_TEST_RUN": run_id}
    kubeconfig = tmp_path / "demo.kubeconfig"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "slime.demo", "--once", "--dev-cluster", "--kubeconfig-out", str(kubeconfig)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=DEMO_TIMEOUT,
        )
    finally:
        leftovers = processes_with_env(marker)
    output = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, output
    assert "Running the demo on the plain dev cluster (fake Pods, no traffic): the mesh bed is off (--dev-cluster)" \
        in proc.stdout, output
    # Every sample is Ready (the demo exits 1 otherwise); the adaptive one's EnvoyFilter is in force,
    # written for it, with the metric it follows.
    assert re.search(r"^SmartLimiter\s+slime-samples/productpage\s+True \(Rendered\)", proc.stdout, re.M), output
    assert re.search(r"^EnvoyFilter\s+slime-samples/productpage\.slime-samples\.ratelimit\s+"
                     r"SmartLimiter slime-samples/productpage\s*$", proc.stdout, re.M), output
    assert "_base.cpu.sum=160" in proc.stdout, output
    for module in ("limiter", "plugin", "lazyload"):
        kinds = {"limiter": "SmartLimiter", "plugin": "PluginManager", "lazyload": "ServiceFence"}
        assert re.search(rf"^{kinds[module]}\s+slime-samples/\S+\s+True", proc.stdout, re.M), (module, output)
    assert not leftovers, f"processes left running: {leftovers}"
    assert not kubeconfig.exists()
