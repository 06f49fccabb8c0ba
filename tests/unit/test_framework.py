"""Shared machinery: schema generation, conditions, ownership and diffing, error paths."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import AliasChoices, Field

from slime.framework.api import SlimeModel
from slime.framework.conditions import ConditionUpdate, same_conditions, set_conditions
from slime.framework.schema import model_schema
from slime.framework.sync import MANAGED_BY, OWNER_UID, contains, owned
from slime.framework.validation import parse_spec


class Interval(SlimeModel):
    seconds: int = Field(ge=1, description="refill period")


class Action(SlimeModel):
    """What to do."""

    quota: str
    fill_interval: Interval = Field(validation_alias=AliasChoices("fill_interval", "fillInterval"))
    strategy: Literal["single", "average", "global"] | None = None
    source: Literal["HeadMatch", "QueryMatch"] | int = "HeadMatch"
    labels: dict[str, str] = Field(default_factory=dict)
    opaque: Any = Field(default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    items: list[Interval] = Field(default_factory=list)


def test_schema_is_structural_with_both_spellings_and_rules() -> None:
    schema = model_schema(Action)
    props = schema["properties"]
    assert schema["type"] == "object" and schema["description"] == "What to do."
    assert props["fill_interval"] == props["fillInterval"]
    assert props["fillInterval"]["properties"]["seconds"] == {
        "type": "integer", "minimum": 1, "description": "refill period"}
    assert props["strategy"] == {"type": "string", "enum": ["single", "average", "global"]}
    assert props["source"] == {"x-kubernetes-int-or-string": True}
    assert props["labels"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert props["opaque"] == {"x-kubernetes-preserve-unknown-fields": True}
    assert props["items"]["type"] == "array" and props["items"]["items"]["type"] == "object"
    assert schema["required"] == ["quota"]
    rules = {r["rule"] for r in schema["x-kubernetes-validations"]}
    assert "!(has(self.fill_interval) && has(self.fillInterval))" in rules
    assert "has(self.fill_interval) || has(self.fillInterval)" in rules


def test_parse_spec_names_the_field_of_a_typo() -> None:
    model, problems = parse_spec(Action, {"quota": "1", "fillInterval": {"seconds": 1}, "stragety": "x"})
    assert model is None
    assert problems == ["spec.stragety: unknown field"]
    model, problems = parse_spec(Action, {"quota": "1", "fill_interval": {"seconds": 0}})
    assert model is None and problems[0].startswith("spec.fill_interval.seconds:")
    model, problems = parse_spec(Action, {"quota": "1", "fillInterval": {"seconds": 2}})
    assert problems == [] and model is not None and model.fill_interval.seconds == 2


def test_conditions_keep_transition_time_unless_status_flips() -> None:
    first = set_conditions(None, [ConditionUpdate("Ready", True, "Rendered")], generation=1, now="t1")
    assert first == [{"type": "Ready", "status": "True", "reason": "Rendered", "message": "",
                      "lastTransitionTime": "t1", "observedGeneration": 1}]
    same = set_conditions(first, [ConditionUpdate("Ready", True, "Rendered", "again")], generation=2, now="t2")
    assert same[0]["lastTransitionTime"] == "t1" and same[0]["observedGeneration"] == 2
    flipped = set_conditions(same, [ConditionUpdate("Ready", False, "MetricsUnavailable")], generation=2, now="t3")
    assert flipped[0]["lastTransitionTime"] == "t3" and flipped[0]["status"] == "False"
    both = set_conditions(flipped, [ConditionUpdate("MetricsAvailable", False, "PrometheusUnreachable")], 2, "t4")
    assert [c["type"] for c in both] == ["Ready", "MetricsAvailable"]
    assert same_conditions(both, list(reversed(both)))
    assert not same_conditions(both, flipped)


OWNER = {"apiVersion": "microservice.slime.io/v1alpha2", "kind": "SmartLimiter",
         "metadata": {"name": "reviews", "namespace": "default", "uid": "u-1"}}


def test_owned_children_carry_label_and_controller_reference() -> None:
    child = owned({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}, OWNER)
    meta = child["metadata"]
    assert meta["namespace"] == "default"
    assert meta["labels"][MANAGED_BY] == "slime" and meta["labels"][OWNER_UID] == "u-1"
    assert meta["ownerReferences"][0]["controller"] is True and meta["ownerReferences"][0]["uid"] == "u-1"
    elsewhere = owned({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "x"}}, OWNER)
    assert "ownerReferences" not in elsewhere["metadata"]  # references cannot cross namespaces


@pytest.mark.parametrize(
    ("have", "want", "expected"),
    [
        ({"a": 1, "b": 2, "managedFields": []}, {"a": 1}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": [1, 2]}, {"a": [1, 2]}, True),
        ({"a": [1, 2, 3]}, {"a": [1, 2]}, False),
        ({"a": [{"x": 1, "y": 2}]}, {"a": [{"x": 1}]}, True),
        ({"a": {}}, {"a": {"b": None}}, False),
    ],
)
def test_contains_ignores_server_added_fields_only(have: Any, want: Any, expected: bool) -> None:
    assert contains(have, want) is expected


def test_acceptance_reports_model_errors_once() -> None:
    from slime.framework.acceptance import accepted_status
    from slime.modules.plugin.api import PLUGIN_MANAGER

    body = {"metadata": {"name": "x", "generation": 3},
            "spec": {"plugin": [{"name": "p", "inline": {"settings": {}}, "wasm": {"url": "oci://x/y"}}]}}
    patch = accepted_status(PLUGIN_MANAGER, body)
    cond = patch["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Accepted", "False", "InvalidSpec")
    assert "wasm" in cond["message"] and patch["observedGeneration"] == 3
    body["status"] = patch
    assert accepted_status(PLUGIN_MANAGER, body) == {}  # nothing changed: nothing to write
    body["spec"] = {"plugin": [{"name": "p", "inline": {"settings": {}}}]}
    fixed = accepted_status(PLUGIN_MANAGER, body)["conditions"][0]
    assert (fixed["status"], fixed["reason"], fixed["message"]) == ("True", "Valid", "")
