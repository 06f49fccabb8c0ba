"""Merging a SmartLimiter's global descriptors into the RLS config.yaml."""

from __future__ import annotations

import copy

import pytest
import yaml

from slime.modules.limiter.rls import dump_rls_config, merge_rls_config, merge_rls_doc, parse_rls_config, rls_owners

EXISTING = """\
domain: slime
descriptors:
- key: generic_key
  value: Service[b.default]-Id[2]
  rate_limit: {requests_per_unit: 1, unit: SECOND}
  shadow_mode: true
- key: generic_key
  value: Service[a.default]-Id[9]
  rate_limit: {requests_per_unit: 5, unit: MINUTE}
- key: generic_key
  value: Service[xa.default]-Id[3]
  rate_limit: {requests_per_unit: 3, unit: HOUR}
"""

NEW = [
    {
        "key": "generic_key",
        "value": "Service[a.default]-Id[1]",
        "rate_limit": {"requests_per_unit": 7, "unit": "DAY"},
    },
]


def values(text: str) -> list[str]:
    return [d["value"] for d in yaml.safe_load(text)["descriptors"]]


def test_replaces_own_entries_keeps_others_sorted() -> None:
    text = merge_rls_config(EXISTING, "a", "default", NEW)
    assert text.startswith("domain: slime\ndescriptors:\n")
    assert values(text) == [
        "Service[a.default]-Id[1]",
        "Service[b.default]-Id[2]",
        "Service[xa.default]-Id[3]",
    ]
    doc = yaml.safe_load(text)
    assert doc["descriptors"][1]["shadow_mode"] is True  # upstream loses unknown keys
    assert list(doc["descriptors"][0]) == ["key", "value", "rate_limit"]


def test_delete_removes_only_own_entries_and_is_idempotent() -> None:
    once = merge_rls_config(EXISTING, "a", "default", [])
    assert values(once) == ["Service[b.default]-Id[2]", "Service[xa.default]-Id[3]"]
    assert merge_rls_config(once, "a", "default", []) == once


def test_empty_or_missing_file() -> None:
    assert values(merge_rls_config("", "a", "default", NEW, domain="edge")) == ["Service[a.default]-Id[1]"]
    assert yaml.safe_load(merge_rls_config(None, "a", "default", [], domain="edge")) == {
        "domain": "edge",
        "descriptors": [],
    }


def test_not_a_ratelimit_config() -> None:
    with pytest.raises(ValueError):
        merge_rls_config("- a\n- b\n", "a", "default", NEW)
    with pytest.raises(yaml.YAMLError):
        merge_rls_config("a: [", "a", "default", NEW)


def test_doc_merge_leaves_its_input_alone_and_names_owners() -> None:
    doc = parse_rls_config(EXISTING)
    before = copy.deepcopy(doc)
    merged = merge_rls_doc(doc, {("a", "default"): NEW, ("b", "default"): []})
    assert doc == before
    assert rls_owners(doc) == {"a.default", "b.default", "xa.default"}
    assert rls_owners(merged) == {"a.default", "xa.default"}
    assert dump_rls_config(merged) == merge_rls_config(merge_rls_config(EXISTING, "b", "default", []),
                                                       "a", "default", NEW)
    NEW[0]["rate_limit"]["requests_per_unit"] = 8  # the caller's descriptors change later...
    try:
        assert merged["descriptors"][0]["rate_limit"]["requests_per_unit"] == 7  # ...not the merged file
    finally:
        NEW[0]["rate_limit"]["requests_per_unit"] = 7
