"""Golden cases of every module, through exactly the path of ``slime render`` (and so of the
operator: the same context, render and checks).

``tests/golden/<module>/<case>.in.yaml`` is ``slime render`` input (Slime CRs plus cluster
objects); ``<case>.config.yaml`` (module config, upstream's shape) and ``<case>.metrics.yaml``
(``--metrics``) are optional. ``<case>.out.yaml`` is what it renders: the objects, then each
CR with the status the operator would write. A case must be valid input: what a CR does wrong
shows in its status.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from slime import registry
from slime.framework.config import load_module_configs
from slime.render import render_paths

HERE = Path(__file__).parent


def module_dirs() -> list[Path]:
    return [HERE / name for name in registry.names() if (HERE / name).is_dir()]


def cases() -> list[tuple[str, Path]]:
    return [(f"{d.name}/{p.name.removesuffix('.in.yaml')}", p) for d in module_dirs()
            for p in sorted(d.glob("*.in.yaml"))]


def render_case(path: Path) -> list[Any]:
    """What ``slime render --status`` prints for a case (objects, then each CR with its status)."""
    base = path.with_name(path.name.removesuffix(".in.yaml"))
    config = base.with_suffix(".config.yaml")
    metrics = base.with_suffix(".metrics.yaml")
    configs = load_module_configs(config.read_text()) if config.exists() else []
    output = render_paths([path], configs, metrics if metrics.exists() else None)
    input_errors = [e for e in output.errors if not output.statuses]
    assert not input_errors, input_errors
    return [*output.objects, *output.statuses]


@pytest.mark.parametrize("path", [p for _, p in cases()], ids=[c for c, _ in cases()])
def test_golden(path: Path, golden: Callable[[Path, list[Any]], None]) -> None:
    golden(path.with_name(path.name.replace(".in.yaml", ".out.yaml")), render_case(path))


def test_every_output_has_an_input() -> None:
    outputs = {p.name.removesuffix(".out.yaml") for d in module_dirs() for p in d.glob("*.out.yaml")}
    inputs = {p.name.removesuffix(".in.yaml") for d in module_dirs() for p in d.glob("*.in.yaml")}
    assert not outputs - inputs, f"outputs without an input (delete them): {sorted(outputs - inputs)}"
    sides = {p.name.split(".")[0] for d in module_dirs() for p in d.glob("*.yaml")
             if p.name.endswith((".config.yaml", ".metrics.yaml"))}
    assert not sides - inputs, f"config/metrics files without an input: {sorted(sides - inputs)}"


def test_every_golden_dir_is_a_module() -> None:
    dirs = {p.name for p in HERE.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    assert dirs <= set(registry.names()), f"not a module: {sorted(dirs - set(registry.names()))}"


def test_limiter_has_its_cases() -> None:
    assert len([c for c, _ in cases() if c.startswith("limiter/")]) >= 30
