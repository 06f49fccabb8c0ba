"""Turn pydantic validation errors into messages that name the manifest field.

``describe`` is the one formatter: CR status conditions, ``slime render`` and config loading all
print ``<path>: <message>`` the same way (``spec.sets._base.descriptor[0].stragety: unknown field``).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def field_path(loc: tuple[int | str, ...], root: str = "spec") -> str:
    path = root
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def describe(error: ValidationError, root: str = "spec") -> list[str]:
    """One line per problem: ``spec.sets._base.descriptor[0].action: Field required``."""
    lines = []
    for e in error.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        path = field_path(loc, root).lstrip(".")
        lines.append(f"{path}: {msg}" if path else msg)
    return lines


def parse_spec(model: type[M], spec: Any, root: str = "spec") -> tuple[M | None, list[str]]:
    """Validate a CR's spec; return the model or the list of problems."""
    try:
        return model.model_validate(spec or {}), []
    except ValidationError as e:
        return None, describe(e, root)
