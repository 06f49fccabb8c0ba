"""PrometheusSource against a real Prometheus scraping a test exporter."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from slime.framework.metrics import (
    Handler,
    MetricsUnavailableError,
    Query,
    build_queries,
    pods_by_set,
)
from slime.framework.prometheus import PrometheusSource
from tests.integration.prom import run_prometheus

pytestmark = pytest.mark.prometheus

CPU = "container_cpu_usage_seconds_total"
HANDLERS = {
    "cpu.sum": Handler(query=f'sum({CPU}{{namespace="$namespace",pod=~"$pod_name",image=""}})'),
    "cpu.max": Handler(query=f'max({CPU}{{namespace="$namespace",pod=~"$pod_name"}})'),
    "ns.total": Handler(query=f'sum({CPU}{{namespace="$namespace"}})'),
    "by_pod": Handler(query=f'sum({CPU}{{namespace="$namespace"}}) by (pod)', type="Group"),
}


def running(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"app": "web", **labels}}, "status": {"phase": "Running"}}


def settle(
    fetch: Callable[[], dict[str, str]], want: Mapping[str, str], timeout: float = 10.0
) -> dict[str, str]:
    """Query until Prometheus has scraped what the exporter now says (scrapes are every 0.5 s)."""
    deadline = time.monotonic() + timeout
    got = fetch()
    while got != want and time.monotonic() < deadline:
        time.sleep(0.25)
        got = fetch()
    return got


def test_value_and_group_handlers(prometheus_stack: Any) -> None:
    ex = prometheus_stack.exporter
    ns = "metrics-a"
    for pod, value in {
        "web-1": 1.25,
        "web-2": 2.5,
        "web.3": 4,
        "webx3": 100,  # would match "web.3" if the dot were not escaped
        "web-10": 1000,  # would match "web-1" if the regex were not anchored
    }.items():
        ex.set_cpu(ns, pod, value)
    ex.set_cpu("metrics-other", "web-1", 10000)  # another namespace must not leak in

    pods = [running("web-1", v="1"), running("web-2", v="1"), running("web.3", v="2")]
    sets = pods_by_set(pods, {"app": "web"}, {"v1": {"v": "1"}, "v2": {"v": "2"}})
    queries = build_queries(HANDLERS, namespace=ns, name="web", pods=sets)

    want = {
        "_base.cpu.sum": "7.75",
        "v1.cpu.sum": "3.75",
        "v2.cpu.sum": "4",
        "_base.cpu.max": "4",
        "v1.cpu.max": "2.5",
        "v2.cpu.max": "4",
        "ns.total": "1107.75",
        '{pod="web-1"}': "1.25",
        '{pod="web-2"}': "2.5",
        '{pod="web.3"}': "4",
        '{pod="webx3"}': "100",
        '{pod="web-10"}': "1000",
    }
    src = PrometheusSource(prometheus_stack.url, timeout=2)
    try:
        assert settle(lambda: src.query(queries), want) == want
    finally:
        src.close()


def test_value_follows_the_exporter(prometheus_stack: Any) -> None:
    ex = prometheus_stack.exporter
    ns = "metrics-b"
    queries = build_queries(HANDLERS, namespace=ns, name="web", pods={"_base": ["api-0"]})
    src = PrometheusSource(prometheus_stack.url, timeout=2)
    try:
        for value, text in [(50, "50"), (150.5, "150.5"), (0, "0")]:
            ex.set_cpu(ns, "api-0", value)
            want = {"_base.cpu.sum": text, "_base.cpu.max": text, "ns.total": text, '{pod="api-0"}': text}
            assert settle(lambda: src.query(queries), want) == want
        # The series disappears: no data, so the key is absent (not a stale or zero value). It goes
        # stale at the next scrape that lacks it.
        ex.remove_cpu(ns, "api-0")
        assert settle(lambda: src.query(queries), {}) == {}
    finally:
        src.close()


@pytest.mark.parametrize(
    "promql, reason, fragment",
    [
        ("sum(", "QueryFailed", "parse error"),
        (f'{CPU}{{namespace="metrics-c"}}', "AmbiguousResult", "2 series"),
        (f'{CPU}{{namespace="metrics-c"}}[5s]', "BadResult", "range vector"),
    ],
)
def test_query_errors(prometheus_stack: Any, promql: str, reason: str, fragment: str) -> None:
    ex = prometheus_stack.exporter
    ex.set_cpu("metrics-c", "p-1", 1)
    ex.set_cpu("metrics-c", "p-2", 2)
    src = PrometheusSource(prometheus_stack.url, timeout=2)
    try:
        settle(lambda: src.query({"n": f'count({CPU}{{namespace="metrics-c"}})'}), {"n": "2"})
        with pytest.raises(MetricsUnavailableError) as e:
            src.query({"ok": "vector(1)", "bad": Query(promql)})
        assert e.value.reason == reason
        assert fragment in e.value.message and "bad" in e.value.message
    finally:
        src.close()


def test_no_data_is_absent(prometheus_stack: Any) -> None:
    src = PrometheusSource(prometheus_stack.url, timeout=2)
    try:
        missing = f'sum({CPU}{{namespace="nowhere"}})'
        got = src.query({"missing": missing, "one": "vector(1)", "s": "scalar(vector(2))"})
        assert got == {"one": "1", "s": "2"}
    finally:
        src.close()


def test_stopped_prometheus_is_unreachable(prometheus_binary: str) -> None:
    with run_prometheus([], wait_for_samples=False) as url:
        src = PrometheusSource(url, timeout=2)
        assert src.query({"one": "vector(1)"}) == {"one": "1"}
    start = time.monotonic()
    with pytest.raises(MetricsUnavailableError) as e:
        src.query({"one": "vector(1)"})
    assert e.value.reason == "PrometheusUnreachable"
    assert time.monotonic() - start < 1.5  # refused at once: no client-side retries
    src.close()


def test_silent_server_times_out() -> None:
    # A socket that accepts connections (kernel backlog) but never answers.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        src = PrometheusSource(f"127.0.0.1:{server.getsockname()[1]}", timeout=0.5)
        start = time.monotonic()
        with pytest.raises(MetricsUnavailableError) as e:
            src.query({"one": "vector(1)"})
        assert e.value.reason == "PrometheusTimeout"
        assert time.monotonic() - start < 2
        src.close()


def test_not_a_prometheus(prometheus_stack: Any) -> None:
    # The exporter answers any path with metrics text, not Prometheus' JSON API.
    src = PrometheusSource(f"http://{prometheus_stack.exporter.target}", timeout=2)
    with pytest.raises(MetricsUnavailableError) as e:
        src.query({"one": "vector(1)"})
    assert e.value.reason == "BadResult"
    src.close()
