"""Validate-and-report for kinds whose module does not render yet.

The apiserver's schema catches most mistakes at ``kubectl apply``; what only the models
can check (cross-field rules) lands in the ``Accepted`` condition, so a user sees it with
``kubectl get`` instead of in the operator's log.
"""

from __future__ import annotations

from typing import Any

import kopf

from slime.framework.conditions import ConditionUpdate, same_conditions, set_conditions
from slime.framework.crdinfo import CrdInfo
from slime.framework.validation import parse_spec


def accepted_status(info: CrdInfo, body: Any) -> dict[str, Any]:
    """The status fields to patch (empty when nothing changes)."""
    spec, status, meta = body.get("spec"), body.get("status") or {}, body["metadata"]
    _, problems = parse_spec(info.spec, spec)
    update = ConditionUpdate("Accepted", not problems, "InvalidSpec" if problems else "Valid", "; ".join(problems))
    generation = meta.get("generation", 0)
    conditions = set_conditions(status.get("conditions"), [update], generation)
    patch: dict[str, Any] = {}
    if not same_conditions(status.get("conditions"), conditions):
        patch["conditions"] = conditions
    if status.get("observedGeneration") != generation:
        patch["observedGeneration"] = generation
    return patch


def register_acceptance(registry: kopf.OperatorRegistry, info: CrdInfo) -> None:
    @kopf.on.resume(info.group, info.version, info.plural, registry=registry)
    @kopf.on.create(info.group, info.version, info.plural, registry=registry)
    @kopf.on.update(info.group, info.version, info.plural, field="spec", registry=registry)
    def accept(body: kopf.Body, patch: kopf.Patch, logger: Any, **_: Any) -> None:
        changes = accepted_status(info, body)
        for key, value in changes.items():
            patch.status[key] = value
        for cond in changes.get("conditions", []):
            if cond["type"] == "Accepted" and cond["status"] == "False":
                logger.warning("Rejected %s: %s", info.kind, cond["message"])

