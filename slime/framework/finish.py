"""The checks every render's result goes through, in ``slime render`` and in the operator alike.

A module's render decides its objects and conditions; this makes sure that what reaches the API
is well-formed whatever the module did: every child of a kind the module declares, with a name
and namespace that are valid Kubernetes names (a name built from user input never reaches a
request path), one condition per type, and a ``Ready`` condition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from slime.framework.conditions import ConditionUpdate, with_ready
from slime.framework.module import Module, Rendered
from slime.framework.names import name_problem, namespace_problem


def child_problem(module: Module, obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata") or {}
    kind = next((k for k in module.writes if k.kind == obj.get("kind") and k.api_version == obj.get("apiVersion")),
                None)
    label = f"{obj.get('kind')} {meta.get('name')!r}"
    if kind is None:
        return f"{label}: the {module.name} module does not declare writing {obj.get('apiVersion')} {obj.get('kind')}"
    problem = name_problem(meta.get("name"), f"{obj.get('kind')} name")
    if problem:
        return problem
    if kind.namespaced and meta.get("namespace") is not None:
        problem = namespace_problem(meta.get("namespace"))
        if problem:
            return f"{label}: {problem}"
    return None


def finish(module: Module, cr: Mapping[str, Any], rendered: Rendered) -> Rendered:
    """``rendered`` with invalid children left out (each reported, ``Ready`` False) and the
    conditions merged by type, ``Ready`` included."""
    if not rendered.in_scope:
        return rendered
    conditions = list(rendered.conditions)
    objects = rendered.objects
    if objects is not None:
        kept = []
        for obj in objects:
            problem = child_problem(module, obj)
            if problem is None:
                kept.append(obj)
            else:
                conditions.insert(0, ConditionUpdate("Ready", False, "InvalidName", problem))
        objects = kept
    count = len(objects or [])
    conditions = with_ready(conditions, "Rendered", f"{count} object(s) in force")
    return dataclasses.replace(rendered, objects=objects, conditions=conditions)
