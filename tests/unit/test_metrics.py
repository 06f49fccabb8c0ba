"""Pure parts of slime.framework.metrics: config models, pod counting, query building, conversion."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from slime.framework.metrics import (
    Backoff,
    Handler,
    MetricConfig,
    MetricsUnavailableError,
    Query,
    build_queries,
    convert_group,
    convert_value,
    count_ready_pods,
    format_value,
    label_string,
    pod_metrics,
    pods_by_set,
)


def pod(name: str, labels: dict[str, str], phase: str = "Running", deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase}}


PODS = [
    pod("r-v1-a", {"app": "r", "version": "v1"}),
    pod("r-v1-b", {"app": "r", "version": "v1", "zone": "z1"}),
    pod("r-v2-a", {"app": "r", "version": "v2"}),
    pod("r-v2-pending", {"app": "r", "version": "v2"}, phase="Pending"),
    pod("r-v1-gone", {"app": "r", "version": "v1"}, deleting=True),
    pod("other", {"app": "other", "version": "v1"}),
    {"metadata": {"name": "no-labels"}, "status": {"phase": "Running"}},
]


# --- config models -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"query": "q"}, "Value"),
        ({"query": "q", "type": "Group"}, "Group"),
        ({"query": "q", "type": 1}, "Group"),  # upstream's proto enum number (lazyload samples)
        ({"query": "q", "type": 0}, "Value"),
    ],
)
def test_handler_type(raw: dict[str, Any], expected: str) -> None:
    assert Handler.model_validate(raw).type == expected


@pytest.mark.parametrize(
    "raw",
    [
        {"query": "q", "type": "group"},  # enum names are case-sensitive upstream
        {"query": "q", "type": 2},
        {"query": "q", "typ": "Value"},  # typo is an error, not dropped
    ],
)
def test_handler_rejects(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Handler.model_validate(raw)


def test_metric_config_upstream_sample() -> None:
    # Shape of the upstream limiter e2e SlimeBoot `metric` section.
    cfg = MetricConfig.model_validate(
        {
            "k8s": {"handlers": ["pod"]},
            "prometheus": {
                "address": "http://prometheus.istio-system:9090",
                "handlers": {
                    "cpu.max": {"query": 'max(x{namespace="$namespace",pod=~"$pod_name"})\n'},
                    "destination": {"query": "sum(y) by (d)", "type": 1},
                },
            },
        }
    )
    assert cfg.prometheus is not None and cfg.k8s is not None
    assert cfg.prometheus.handlers["destination"].type == "Group"
    assert cfg.k8s.handlers == ["pod"]
    assert MetricConfig.model_validate({}).prometheus is None
    with pytest.raises(ValidationError):
        MetricConfig.model_validate({"prometheus": {"address": ""}})


# --- pods ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "selector, expected",
    [
        ({"app": "r"}, 3),  # pending and deleting pods do not count
        ({"app": "r", "version": "v2"}, 1),
        ({"app": "r", "zone": "z1"}, 1),
        ({"app": "nope"}, 0),
        ({}, 5),  # empty selector matches every ready pod, as upstream
    ],
)
def test_count_ready_pods(selector: dict[str, str], expected: int) -> None:
    assert count_ready_pods(PODS, selector) == expected


@pytest.mark.parametrize(
    "subsets, expected",
    [
        (None, {"_base.pod": "3"}),
        (
            {"v1": {"version": "v1"}, "v2": {"version": "v2"}},
            {"_base.pod": "3", "v1.pod": "2", "v2.pod": "1"},
        ),
        # subset labels are ANDed with the service selector: `other` (app=other, v1) is not in v1
        (
            {"v1": {"version": "v1"}, "v3": {"version": "v3"}},
            {"_base.pod": "3", "v1.pod": "2", "v3.pod": "0"},
        ),
        ({"all": {}}, {"_base.pod": "3", "all.pod": "3"}),
        ({"_base": {"version": "v2"}}, {"_base.pod": "3"}),  # `_base` is reserved
    ],
)
def test_pod_metrics(subsets: dict[str, dict[str, str]] | None, expected: dict[str, str]) -> None:
    assert pod_metrics(PODS, {"app": "r"}, subsets) == expected


def test_pods_by_set_names_sorted() -> None:
    got = pods_by_set(list(reversed(PODS)), {"app": "r"}, {"v1": {"version": "v1"}})
    assert got == {"_base": ["r-v1-a", "r-v1-b", "r-v2-a"], "v1": ["r-v1-a", "r-v1-b"]}


# --- query building --------------------------------------------------------------------------------

CPU = 'sum(cpu{namespace="$namespace",pod=~"$pod_name",image=""})'


@pytest.mark.parametrize(
    "handlers, pods, expected",
    [
        (  # Value with $pod_name: one query per set that has pods, `_base` first
            {"cpu.sum": Handler(query=CPU)},
            {"_base": ["a-1", "b-2"], "v1": ["a-1"], "v2": []},
            {
                "_base.cpu.sum": Query('sum(cpu{namespace="ns",pod=~"a-1|b-2",image=""})'),
                "v1.cpu.sum": Query('sum(cpu{namespace="ns",pod=~"a-1",image=""})'),
            },
        ),
        (  # no pods at all: no query, rather than pod=~"" which would match pod-less series
            {"cpu.sum": Handler(query=CPU)},
            {"_base": []},
            {},
        ),
        (  # Value without $pod_name: one query under the handler name
            {"rps": Handler(query='sum(rate(req{ns="$namespace",app="$source_app"}[5s]))')},
            None,
            {"rps": Query('sum(rate(req{ns="ns",app="svc"}[5s]))')},
        ),
        (  # Group: one query, flagged, $source_app substituted (lazyload's handler)
            {"destination": Handler(query='sum(r{source_app="$source_app"})by(d)\n', type="Group")},
            None,
            {"destination": Query('sum(r{source_app="svc"})by(d)', group=True)},
        ),
        (  # Group with $pod_name uses the `_base` pods
            {"by_pod": Handler(query='sum(cpu{pod=~"$pod_name"}) by (pod)', type="Group")},
            {"_base": ["a-1"], "v1": ["a-1"]},
            {"by_pod": Query('sum(cpu{pod=~"a-1"}) by (pod)', group=True)},
        ),
        (  # several handlers: ALL are queried (upstream kept one at random); empty query skipped
            {
                "cpu.max": Handler(query=CPU.replace("sum", "max")),
                "cpu.sum": Handler(query=CPU),
                "empty": Handler(query="  "),
                "rt99": Handler(query='histogram_quantile(0.99, sum(rate(b{pod=~"$pod_name"}[5s])) by (le))'),
            },
            {"_base": ["a-1"]},
            {
                "_base.cpu.max": Query('max(cpu{namespace="ns",pod=~"a-1",image=""})'),
                "_base.cpu.sum": Query('sum(cpu{namespace="ns",pod=~"a-1",image=""})'),
                "_base.rt99": Query('histogram_quantile(0.99, sum(rate(b{pod=~"a-1"}[5s])) by (le))'),
            },
        ),
        (  # dots in pod names are escaped for the regex matcher, without backslashes
            {"c": Handler(query='x{pod=~"$pod_name"}')},
            {"_base": ["web.1", "web-2"]},
            {"_base.c": Query('x{pod=~"web[.]1|web-2"}')},
        ),
        (  # upstream's plain substitution: $namespace also inside a longer word; repeated placeholders
            {"c": Handler(query='x{a="$namespace",b="$namespaced",c="$namespace"}')},
            None,
            {"c": Query('x{a="ns",b="nsd",c="ns"}')},
        ),
    ],
)
def test_build_queries(
    handlers: dict[str, Handler], pods: dict[str, list[str]] | None, expected: dict[str, Query]
) -> None:
    got = build_queries(handlers, namespace="ns", name="svc", pods=pods)
    assert got == expected
    assert list(got) == list(expected)  # deterministic order


def test_source_app_takes_dotted_object_names() -> None:
    # Lazyload's workload fences are named like `app-web.workload.identity`.
    handlers = {"d": Handler(query='s{source_app="$source_app"}', type="Group")}
    got = build_queries(handlers, namespace="ns", name="app-web.workload.identity")
    assert got == {"d": Query('s{source_app="app-web.workload.identity"}', group=True)}


@pytest.mark.parametrize(
    "namespace, name, pods",
    [
        ('ns"}or vector(1)', "svc", None),  # injection through the namespace
        ("ns", "svc|.*", None),
        ("NS", "svc", None),
        ("ns", "svc", {"_base": ['a"}']}),  # injection through a pod name
        ("ns", "svc", {"_base": ["a|.*"]}),
        ("ns", "svc", {"_base": ["a" * 254]}),
        ("n" * 64, "svc", None),
    ],
)
def test_build_queries_rejects_bad_names(
    namespace: str, name: str, pods: dict[str, list[str]] | None
) -> None:
    handlers = {"c": Handler(query='x{ns="$namespace",app="$source_app",pod=~"$pod_name"}')}
    with pytest.raises(ValueError):
        build_queries(handlers, namespace=namespace, name=name, pods=pods)


# --- result conversion -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("563.3837582", "563.3837582"),
        ("2", "2"),
        ("2.0", "2"),  # Go prints 'f', -1: no trailing .0
        ("1e-05", "0.00001"),  # no exponent
        ("1e+22", "10000000000000000000000"),
        ("-3.5", "-3.5"),
        ("NaN", None),
        ("+Inf", None),
        ("-Inf", None),
    ],
)
def test_format_value(raw: str, expected: str | None) -> None:
    assert format_value(raw) == expected


@pytest.mark.parametrize(
    "metric, expected",
    [
        ({}, "{}"),
        ({"__name__": "up"}, "up"),
        ({"destination_service": "d.default.svc"}, '{destination_service="d.default.svc"}'),
        ({"b": "2", "a": "1", "__name__": "m"}, 'm{a="1", b="2"}'),
        ({"a": 'q"\\'}, '{a="q\\"\\\\"}'),
    ],
)
def test_label_string(metric: dict[str, str], expected: str) -> None:
    assert label_string(metric) == expected


def vec(*samples: tuple[dict[str, str], str]) -> list[dict[str, Any]]:
    return [{"metric": m, "value": [1700000000.5, v]} for m, v in samples]


@pytest.mark.parametrize(
    "result, expected",
    [
        (vec(({}, "12.5")), "12.5"),
        (vec(({"pod": "a"}, "3")), "3"),  # one series, labels or not
        ([], None),  # no data yet: absent, as upstream
        (vec(({}, "NaN")), None),
        ([1700000000.5, "7"], "7"),  # scalar: its value (upstream stored the timestamp by mistake)
    ],
)
def test_convert_value(result: Any, expected: str | None) -> None:
    assert convert_value("k", result) == expected


@pytest.mark.parametrize(
    "result, reason",
    [
        (vec(({"pod": "a"}, "1"), ({"pod": "b"}, "2")), "AmbiguousResult"),
        ([{"metric": {}, "values": [[1, "1"], [2, "2"]]}], "BadResult"),  # range vector
        ([1700000000.5, "not a number"], "BadResult"),
        ({"weird": True}, "BadResult"),
        ([{"metric": {}, "value": [1]}], "BadResult"),
    ],
)
def test_convert_value_errors(result: Any, reason: str) -> None:
    with pytest.raises(MetricsUnavailableError) as e:
        convert_value("_base.cpu.sum", result)
    assert e.value.reason == reason
    assert "_base.cpu.sum" in e.value.message


@pytest.mark.parametrize(
    "result, expected",
    [
        (
            vec(({"destination_service": "a.default.svc"}, "3"), ({"destination_service": "b.x"}, "1")),
            {'{destination_service="a.default.svc"}': "3", '{destination_service="b.x"}': "1"},
        ),
        (vec(({"pod": "a"}, "NaN"), ({"pod": "b"}, "2.0")), {'{pod="b"}': "2"}),
        ([], {}),
        ([1700000000.5, "4"], {"{}": "4"}),
    ],
)
def test_convert_group(result: Any, expected: dict[str, str]) -> None:
    assert convert_group("g", result) == expected


# --- backoff ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backoff, expected",
    [
        (Backoff(initial=1, factor=2, cap=10), [1, 2, 4, 8, 10, 10]),
        (Backoff(initial=0.5, factor=3, cap=100), [0.5, 1.5, 4.5, 13.5, 40.5, 100]),
        (Backoff(initial=2, factor=1, cap=5), [2, 2, 2, 2, 2, 2]),
    ],
)
def test_backoff_sequence(backoff: Backoff, expected: list[float]) -> None:
    assert [backoff.next_delay() for _ in expected] == expected


def test_backoff_reset_and_no_overflow() -> None:
    b = Backoff(initial=1, factor=2, cap=30)
    for _ in range(5000):
        b.next_delay()
    assert b.next_delay() == 30
    b.reset()
    assert b.attempts == 0 and b.next_delay() == 1


def test_prometheus_source_reads_the_proxy_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from slime.framework.prometheus import PrometheusSource

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.local:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxied = PrometheusSource("http://prometheus.monitoring:9090")
    assert proxied._client._session.proxies.get("http") == "http://proxy.local:3128"
    monkeypatch.setenv("NO_PROXY", "prometheus.monitoring")
    direct = PrometheusSource("http://prometheus.monitoring:9090")
    assert not direct._client._session.proxies
