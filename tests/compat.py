"""Upstream Slime's data files (../shared/compat/slime): the compatibility contract."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

# Next to the repository, as ../shared/compat/slime; SLIME_COMPAT_DIR points elsewhere (a clone in another place).
COMPAT = Path(os.environ.get("SLIME_COMPAT_DIR") or Path(__file__).resolve().parents[2] / "shared" / "compat" / "slime")
MISSING = (f"upstream Slime's data files not found at {COMPAT}: tests that compare with upstream are skipped "
           "(put slime-io/slime's CRDs, samples and fixtures there, or set SLIME_COMPAT_DIR)")


def require_compat() -> None:
    """Skip the calling test when upstream's data is missing (CI never gets here: it fails at start)."""
    import pytest

    if not COMPAT.is_dir():
        pytest.skip(MISSING)


OUR_KINDS = {"SmartLimiter", "ServiceFence", "PluginManager", "EnvoyPlugin", "SlimeBoot"}
# Placeholders upstream's e2e samples carry; the e2e runner fills them in the same way.
PLACEHOLDERS = {"strictRev": "true", "istioRevKey": "istio.io/rev", "istioRevValue": "1-10-2"}


def documents(path: Path) -> list[Any]:
    text = re.sub(r"\{\{(\w+)\}\}", lambda m: PLACEHOLDERS.get(m[1], f"x-{m[1]}"), path.read_text())
    return [d for d in yaml.safe_load_all(text) if d]


def compat_objects(kinds: set[str] = OUR_KINDS) -> Iterator[tuple[str, dict[str, Any]]]:
    """(case id, object) for every object of ``kinds`` in the compat files."""
    for path in sorted(COMPAT.rglob("*.yaml")):
        for doc in documents(path):
            if isinstance(doc, dict) and doc.get("kind") in kinds:
                yield f"{path.relative_to(COMPAT)}:{doc['metadata']['name']}", doc


# Samples holding a field upstream silently dropped (its CRD pruned it): we reject those,
# naming the field (README, migration notes).
REJECTED = {
    "slimeboot_namespace_prometheus.yaml:lazyload": "spec.module[0].globalSidecarMode",
    "limiter/productpage_smartlimiter.yaml:productpage": "spec.sets._base.descriptor[0].action.stragety",
}
