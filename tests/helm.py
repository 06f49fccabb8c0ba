"""Real Helm (v3.22.0, built from its Go module by hack/build-istio.sh into ~/.cache/slime/istio/)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "slime-boot"


class HelmUnavailable(Exception):
    pass


def find_helm() -> Path:
    """$SLIME_HELM, else the helm hack/build-istio.sh built (it waits for a running build and builds
    only what is missing: ~15 min the first time on 2 cores)."""
    env = os.environ.get("SLIME_HELM")
    if env and os.access(env, os.X_OK):
        return Path(env)
    proc = subprocess.run(["bash", str(REPO / "hack" / "build-istio.sh")], stdout=subprocess.PIPE, text=True,
                          check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not os.access(Path(lines[-1]) / "helm", os.X_OK):
        raise HelmUnavailable(f"hack/build-istio.sh failed (exit {proc.returncode}); set SLIME_HELM to a helm binary")
    return Path(lines[-1]) / "helm"


def helm(binary: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=180, check=False,
                          env={**os.environ, "HELM_CACHE_HOME": "/tmp/slime-helm/cache",
                               "HELM_CONFIG_HOME": "/tmp/slime-helm/config", "HELM_DATA_HOME": "/tmp/slime-helm/data"})
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
