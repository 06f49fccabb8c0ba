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


def test_conditions_merge_one_per_type_listing_every_problem() -> None:
    from slime.framework.conditions import bounded, merge, with_ready

    updates = [ConditionUpdate("Ready", False, "UnknownSet", f"set s{i} unknown") for i in range(15)]
    [ready] = merge(updates)
    assert ready.reason == "UnknownSet" and "set s0 unknown" in ready.message and "set s14 unknown" in ready.message
    many = bounded([f"problem number {i} " + "x" * 80 for i in range(40)], limit=400)
    assert len(many) <= 400 and many.endswith("more") and "problem number 0" in many
    conds = with_ready([ConditionUpdate("MetricsAvailable", False, "NoData", "no data")], "Rendered", "ok")
    assert [(c.type, c.status_text, c.reason) for c in conds] == [
        ("Ready", "False", "NoData"), ("MetricsAvailable", "False", "NoData")]
    conds = with_ready([ConditionUpdate("MetricsAvailable", True, "Read", "")], "Rendered", "2 in force")
    assert (conds[0].type, conds[0].status_text, conds[0].message) == ("Ready", "True", "2 in force")


def test_finish_drops_children_with_invalid_names_and_undeclared_kinds() -> None:
    from slime.framework.finish import finish
    from slime.framework.kinds import ENVOY_FILTER
    from slime.framework.module import Module, Rendered

    module = Module(name="t", kinds=(), config=SlimeModel, context=lambda *a: None, render=lambda *a: Rendered(),
                    writes=(ENVOY_FILTER,))
    ef = {"apiVersion": ENVOY_FILTER.api_version, "kind": "EnvoyFilter", "metadata": {"name": "ok", "namespace": "a"}}
    traversal = {**ef, "metadata": {"name": "/../../other/envoyfilters/victim", "namespace": "a"}}
    other = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "a"}}
    out = finish(module, {}, Rendered(objects=[ef, traversal, other],
                                      conditions=[ConditionUpdate("Ready", True, "Rendered", "fine")]))
    assert out.objects == [ef]
    ready = out.conditions[0]
    assert (ready.type, ready.status_text, ready.reason) == ("Ready", "False", "InvalidName")
    assert "victim" in ready.message and "does not declare writing v1 Secret" in ready.message


def test_set_conditions_replace_drops_types_no_longer_reported() -> None:
    old = set_conditions([], [ConditionUpdate("Ready", True, "A"), ConditionUpdate("MetricsAvailable", True, "B")], 1)
    new = set_conditions(old, [ConditionUpdate("Ready", True, "A")], 2, replace=True)
    assert [c["type"] for c in new] == ["Ready"]
    assert new[0]["lastTransitionTime"] == old[0]["lastTransitionTime"]
