"""Golden-file helpers: ``golden(path, data)`` compares ``data`` with the YAML in ``path``.

Run ``pytest tests/golden --update-goldens`` to rewrite the files, then review the diff
by hand before accepting it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from slime.render import YamlDumper


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens", action="store_true", default=False, help="rewrite golden output files"
    )




@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[Path, Any], None]:
    update = bool(request.config.getoption("--update-goldens", default=False))

    def check(path: Path, actual: Any) -> None:
        text = yaml.dump(
            actual,
            Dumper=YamlDumper,
            sort_keys=False,
            default_flow_style=False,
            allow_unicode=True,
            width=120,
        )
        if update:
            path.write_text(text)
            return
        if not path.exists():
            pytest.fail(
                f"{path} does not exist: run pytest with --update-goldens and review it", pytrace=False
            )
        expected_text = path.read_text()
        if yaml.safe_load(expected_text) == yaml.safe_load(text):
            return
        diff = difflib.unified_diff(
            expected_text.splitlines(),
            text.splitlines(),
            f"{path.name} (expected)",
            f"{path.name} (actual)",
            lineterm="",
        )
        pytest.fail("golden mismatch:\n" + "\n".join(diff), pytrace=False)

    return check
