"""SmartLimiter models, module config, and the pure helpers around the limiter render."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from slime.framework.revision import rev_in_scope
from slime.framework.schema import model_schema
from slime.modules.limiter.api import (
    ActiveDescriptor,
    LimiterConfig,
    Matcher,
    SmartLimitDescriptor,
    SmartLimiterSpec,
    SmartLimiterStatus,
)
from slime.modules.limiter.descriptors import _quote, activate, descriptor_text
from slime.modules.limiter.selectors import (
    envoyfilter_name,
    pod_namespace,
    pod_selector,
    required_metrics,
    subsets,
)


def desc(**kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "condition": "true",
        "action": {"quota": "10", "fill_interval": {"seconds": 1}, "strategy": "single"},
        "target": {},
    }
    d.update(kw)
    return d


def spec(*descriptors: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"sets": {"_base": {"descriptor": list(descriptors)}}, **kw}


def test_both_spellings_are_the_same_model() -> None:
    proto = SmartLimitDescriptor.model_validate(
        desc(
            action={
                "quota": "1",
                "fill_interval": {"seconds": 2},
                "headers_to_add": [{"key": "k", "value": "v"}],
            },
            match=[{"name": "a", "exact_match": "x", "invert_match": True}],
            custom_key="k",
        )
    )
    camel = SmartLimitDescriptor.model_validate(
        desc(
            action={
                "quota": "1",
                "fillInterval": {"seconds": 2},
                "headersToAdd": [{"key": "k", "value": "v"}],
            },
            match=[{"name": "a", "exactMatch": "x", "invertMatch": True}],
            customKey="k",
        )
    )
    assert proto == camel


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (desc(action={"quota": "1", "fill_interval": {"seconds": 1}, "stragety": "average"}), "stragety"),
        (desc(condition=""), "condition"),
        (desc(action=None), "action"),
        (desc(action={"quota": "1"}), "fill_interval"),
        (desc(action={"quota": "1", "fill_interval": {}}), "fill interval must be at least 50ms"),
        (desc(action={"quota": "1", "fill_interval": {"seconds": 30}, "strategy": "global"}), "3600"),
        (
            desc(action={"quota": "1", "fill_interval": {"seconds": 1, "nanos": 5}, "strategy": "global"}),
            "nanos",
        ),
        (desc(match=[{"matchSource": "SourceIpMatch", "exact_match": "10.0.0.1, 10.0.0.2"}]), "no spaces"),
        (desc(match=[{"matchSource": "JsonBodyMatch", "name": "a", "exact_match": "b"}]), "JsonBodyMatch"),
        (desc(match=[{"name": "x-a"}]), "sets no match"),
        (desc(match=[{"exact_match": "GET"}]), "needs a name"),
        (desc(match=[{"name": "q", "present_match": True, "matchSource": "QueryMatch"}]), "query"),
        (desc(match=[{"name": "a", "regex_match": "(?=x)"}]), "RE2"),
        (desc(match=[{"name": "a", "regex_match": "("}]), "not a valid RE2 regex"),
        (desc(match=[{"name": "a", "regex_match": "a(?=b)"}]), "not a valid RE2 regex"),
        (desc(match=[{"name": "a", "regex_match": "(a{30}){40}"}]), "not a valid RE2 regex"),
        (desc(match=[{"name": "a", "regex_match": "([a-z]{1000}){30}" * 1}]), "regex_match"),
        (desc(match=[{"name": "a", "present_match_separate": True}]), "only with strategy global"),
        (desc(match=[{"name": "a", "exact_match": "b", "matchSource": 7}]), "matchSource"),
        (desc(target={"direction": "outbound", "route": ["no-slash"]}), "route"),
        (desc(target={"route": ["a/b"]}), "direction: outbound"),
        (desc(target={"direction": "Outbound"}), "direction"),
        (desc(target={"port": 70000}), "port"),
    ],
)
def test_descriptor_rejects(bad: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as e:
        SmartLimitDescriptor.model_validate(bad)
    assert needle in str(e.value)


def test_spec_rules() -> None:
    no_target = desc()
    del no_target["target"]
    with pytest.raises(ValidationError, match="no target"):
        SmartLimiterSpec.model_validate(spec(no_target))
    SmartLimiterSpec.model_validate(spec(no_target, target={"port": 80}))  # spec.target is the default
    with pytest.raises(ValidationError, match="condition"):
        SmartLimiterSpec.model_validate(spec(desc(condition="{{._base.pod}}>1"), gateway=True))
    outbound = desc(condition="1>0", target={"direction": "outbound", "host": ["a"]})
    with pytest.raises(ValidationError, match="condition"):
        SmartLimiterSpec.model_validate(spec(outbound))
    with pytest.raises(ValidationError, match="sets"):
        SmartLimiterSpec.model_validate({})


def test_match_source_name_or_number() -> None:
    assert (
        Matcher.model_validate({"name": "q", "exact_match": "1", "matchSource": 1}).matchSource
        == "QueryMatch"
    )
    assert Matcher.model_validate({"exactMatch": "10.0.0.1", "matchSource": 3}).source == "SourceIpMatch"
    assert (
        Matcher.model_validate({"name": "q", "exact_match": "1", "useQueryMatch": True}).source
        == "QueryMatch"
    )
    with pytest.raises(ValidationError):
        Matcher.model_validate({"name": "q", "exact_match": "1", "matchSource": True})


def test_status_is_written_in_lower_camel() -> None:
    d = SmartLimitDescriptor.model_validate(
        desc(
            action={
                "quota": "4",
                "fill_interval": {"seconds": 1},
                "headers_to_add": [{"key": "k", "value": "v"}],
            },
            match=[{"matchSource": "SourceIpMatch", "exact_match": "10.0.0.1,10.0.0.2"}],
        )
    )
    active = activate(d, 4)
    assert [a.match[0].exact_match for a in active] == ["10.0.0.1", "10.0.0.2"]
    status = SmartLimiterStatus(
        ratelimitStatus={"_base": {"descriptor": active}},
        metricStatus={"_base.pod": "1"},
        observedGeneration=3,
    ).model_dump(by_alias=True, exclude_defaults=True)
    assert status["ratelimitStatus"]["_base"]["descriptor"][0] == {
        "action": {
            "quota": "4",
            "fillInterval": {"seconds": 1},
            "headersToAdd": [{"key": "k", "value": "v"}],
        },
        "match": [{"exactMatch": "10.0.0.1", "matchSource": "SourceIpMatch"}],
        "target": {},
    }
    # and it reads back
    ActiveDescriptor.model_validate(status["ratelimitStatus"]["_base"]["descriptor"][1])


def test_limiter_config_defaults_and_refresh() -> None:
    cfg = LimiterConfig()
    assert (cfg.disableAdaptive, cfg.disableGlobalRateLimit, cfg.rls_domain, cfg.refresh_seconds) == (
        False,
        False,
        "slime",
        5.0,
    )
    assert LimiterConfig(refresh="500ms").refresh_seconds == 0.5
    assert LimiterConfig(refresh="1m").refresh_seconds == 60
    assert LimiterConfig(domain="").rls_domain == "slime"
    assert LimiterConfig.model_validate({"rls": {"service": "rls.x", "port": 18081}}).rls.cluster == (  # type: ignore[union-attr]
        "outbound|18081||rls.x"
    )
    for bad in ({"refresh": "5"}, {"refresh": "0s"}, {"disableAdaptiv": True}):
        with pytest.raises(ValidationError):
            LimiterConfig.model_validate(bad)


def test_models_make_crd_schemas() -> None:
    schema = model_schema(SmartLimiterSpec)
    action = schema["properties"]["sets"]["additionalProperties"]["properties"]["descriptor"]["items"][
        "properties"
    ]["action"]
    assert {"fill_interval", "fillInterval", "headers_to_add", "headersToAdd"} <= set(action["properties"])
    matcher = schema["properties"]["sets"]["additionalProperties"]["properties"]["descriptor"]["items"][
        "properties"
    ]["match"]["items"]
    assert matcher["properties"]["matchSource"] == {
        "x-kubernetes-int-or-string": True,
        "description": matcher["properties"]["matchSource"]["description"],
    }
    assert any("outbound" in r["rule"] for r in schema["x-kubernetes-validations"])
    model_schema(SmartLimiterStatus)
    model_schema(LimiterConfig)


def test_text_format_quoting() -> None:
    assert _quote('a"b\\c\n\t\x01\x7fé\u0085') == '"a\\"b\\\\c\\n\\t\\x01\\x7fé\\u0085"'
    d = SmartLimitDescriptor.model_validate(
        desc(match=[{"name": "x", "present_match": True, "invert_match": True}])
    )
    assert descriptor_text(activate(d, 10)[0]) == (
        'action:{quota:"10"  fill_interval:{seconds:1}  strategy:"single"}  '
        'match:{name:"x"  present_match:true  invert_match:true}  target:{}'
    )


@pytest.mark.parametrize(
    ("rev", "istio_rev", "strict", "want"),
    [
        ("", "", False, True),
        ("x", "", True, True),
        ("", "default", False, True),
        ("", "default", True, False),
        ("canary", "default,stable", False, False),
        ("stable", "default,stable", True, True),
    ],
)
def test_rev_scope(rev: str, istio_rev: str, strict: bool, want: bool) -> None:
    assert rev_in_scope(rev, istio_rev, strict) is want


def test_helpers_for_the_controller() -> None:
    cr = {
        "metadata": {"name": "r", "namespace": "ns"},
        "spec": spec(
            desc(
                condition="{{._base.cpu.sum}}>1",
                action={"quota": "{{.v1.pod}}/2", "fill_interval": {"seconds": 1}},
            ),
            desc(condition="{{ bad"),
        ),
    }
    assert required_metrics(cr) == {"_base.cpu.sum", "v1.pod"}
    svc = {"spec": {"selector": {"app": "r"}}}
    assert pod_selector(cr, svc) == {"app": "r"}
    assert pod_selector(cr, None) is None
    assert pod_selector({**cr, "spec": {**cr["spec"], "workloadSelector": {"a": "b"}}}, svc) == {"a": "b"}
    assert pod_selector({**cr, "spec": {**cr["spec"], "host": "h.example"}}, svc, {"app": ""}) == {
        "app": "default"
    }
    assert pod_namespace(cr) == "ns"
    root = {"metadata": {"name": "r", "namespace": "istio-system"}, "spec": {"workloadSelector": {"a": "b"}}}
    assert pod_namespace(root, "istio-system") is None
    drs = [
        {
            "metadata": {"name": "b", "namespace": "ns"},
            "spec": {
                "host": "r.ns.svc.cluster.local",
                "subsets": [{"name": "v2", "labels": {"v": "2"}}, {"name": "v1", "labels": {"v": "other"}}],
            },
        },
        {
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"host": "r", "subsets": [{"name": "v1", "labels": {"v": "1"}}]},
        },
        {
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {"host": "other", "subsets": [{"name": "v3"}]},
        },
    ]
    assert subsets(cr, drs) == {"v1": {"v": "1"}, "v2": {"v": "2"}}
    outbound = {**cr, "spec": spec(desc(target={"direction": "outbound", "host": ["a"]}))}
    assert subsets(outbound, drs) == {}
    assert envoyfilter_name("r", "ns") == "r.ns.ratelimit"
    assert envoyfilter_name("r", "ns", "v1") == "r.ns.v1.ratelimit"
