"""Golden-file helpers: ``golden(path, documents)`` compares a YAML stream with the one in ``path``.

Run ``pytest tests/golden --update-goldens`` (from the repository root) to rewrite the files,
then review the diff by hand before accepting it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from slime.render import dump_yaml


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[Path, list[Any]], None]:
    update = bool(request.config.getoption("--update-goldens", default=False))

    def check(path: Path, actual: list[Any]) -> None:
        text = dump_yaml(actual)
        if update:
            path.write_text(text)
            return
        if not path.exists():
            pytest.fail(f"{path} does not exist: run pytest with --update-goldens and review it", pytrace=False)
        expected_text = path.read_text()
        if [d for d in yaml.safe_load_all(expected_text) if d is not None] == actual:
            return
        diff = difflib.unified_diff(expected_text.splitlines(), text.splitlines(), f"{path.name} (expected)",
                                    f"{path.name} (actual)", lineterm="")
        pytest.fail("golden mismatch:\n" + "\n".join(diff), pytrace=False)

    return check
