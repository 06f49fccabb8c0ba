"""Learning: access-log entries -> hosts, the per-fence buffer (one write per interval), TTL, Prometheus."""

from __future__ import annotations

from typing import Any

import pytest

from slime.framework.metrics import Handler, convert_group
from slime.modules.lazyload.config import Fence
from slime.modules.lazyload.context import FenceContext
from slime.modules.lazyload.learning import (
    AccessLogEntry,
    LearningBuffer,
    convert_batch,
    effective_metrics,
    full_host,
    ip_index,
    known_services,
    learned_hosts,
    merge_group_results,
    prometheus_queries,
    ttl_deadlines,
)

ENDPOINTS: list[dict[str, Any]] = [
    {"metadata": {"name": "productpage", "namespace": "default"},
     "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "notReadyAddresses": [{"ip": "10.0.0.2"}]}]},
    {"metadata": {"name": "pp-alias", "namespace": "default"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]},
    {"metadata": {"name": "reviews", "namespace": "other"}, "subsets": []},
]
SLICES: list[dict[str, Any]] = [
    {"metadata": {"name": "ratings-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "ratings"}},
     "endpoints": [{"addresses": ["10.0.1.5"], "conditions": {"ready": False}}]},
    {"metadata": {"name": "orphan", "namespace": "shop"}, "endpoints": [{"addresses": ["10.0.1.6"]}]},
]
IPS = ip_index(ENDPOINTS, SLICES)
KNOWN = known_services(ENDPOINTS, SLICES)


def test_ip_index_from_endpoints_and_slices() -> None:
    assert IPS == {"10.0.0.1": [("default", "pp-alias"), ("default", "productpage")],
                   "10.0.0.2": [("default", "productpage")], "10.0.1.5": [("shop", "ratings")]}
    assert KNOWN == {("default", "productpage"), ("default", "pp-alias"), ("other", "reviews"), ("shop", "ratings")}


@pytest.mark.parametrize(("authority", "host"), [
    ("details", "details.default.svc.cluster.local"),
    ("details:9080", "details.default.svc.cluster.local"),
    ("Details:9080", "details.default.svc.cluster.local"),
    ("reviews.other", "reviews.other.svc.cluster.local"),
    ("reviews.other.svc:80", "reviews.other.svc.cluster.local"),
    ("ext.other", "ext.other"),  # no Endpoints (an ExternalName service): kept as is, as upstream
    ("a.b.c", "a.b.c"),
    ("www.example.com:443", "www.example.com"),
    ("reviews.other.svc.cluster.local", "reviews.other.svc.cluster.local"),
    ("10.0.0.7:9080", None),
    ("[::1]:80", None),
    ("", None),
])
def test_full_host(authority: str, host: str | None) -> None:
    assert full_host(authority, "default", KNOWN) == host


def entry(ip: str = "10.0.0.1", cluster: str = "inbound|80||", authority: str = "details:9080") -> AccessLogEntry:
    return AccessLogEntry(source_ip=ip, upstream_cluster=cluster, authority=authority)


def test_only_inbound_entries_of_known_callers_count() -> None:
    assert learned_hosts(entry(cluster="outbound|9080||details.default.svc.cluster.local"), IPS, KNOWN) == ([], [])
    assert learned_hosts(entry(cluster="inbound|80|"), IPS, KNOWN) == ([], [])
    assert learned_hosts(entry(ip="10.9.9.9"), IPS, KNOWN) == ([], [])
    assert learned_hosts(entry(authority="unknown"), IPS, KNOWN) == ([], [])
    assert learned_hosts(entry(authority="global-sidecar.mesh-operator"), IPS, KNOWN) == ([], [])
    assert learned_hosts(entry(authority="bad_host.example"), IPS, KNOWN) == ([], [])
    assert learned_hosts(entry(ip="10.0.1.5"), IPS, KNOWN) == ([("shop", "ratings")],
                                                               ["details.shop.svc.cluster.local"])
    # enableShortDomain: upstream also recorded `details`, a Sidecar host istiod refuses (short name): not here
    assert learned_hosts(entry(), IPS, KNOWN, short_domain=True)[1] == ["details.default.svc.cluster.local"]


def test_the_forwarders_own_entries_count() -> None:
    """The global-sidecar's plain Envoy logs the calls it forwarded (cluster original_dst) itself."""
    assert learned_hosts(entry(cluster="original_dst"), IPS, KNOWN) == (
        [("default", "pp-alias"), ("default", "productpage")], ["details.default.svc.cluster.local"])
    assert learned_hosts(entry(cluster="original_dst", ip="127.0.0.6"), IPS, KNOWN) == ([], [])  # behind an istio-proxy
    assert learned_hosts(entry(cluster=""), IPS, KNOWN) == ([], [])  # answered by the forwarder itself (400)


def test_batch_counts_for_every_caller_service() -> None:
    batch = [entry(), entry(), entry(authority="reviews.other:9080"), entry(ip="10.0.0.2")]
    details, reviews = ('{destination_service="details.default.svc.cluster.local"}',
                        '{destination_service="reviews.other.svc.cluster.local"}')
    assert convert_batch(batch, IPS, KNOWN) == {
        ("default", "pp-alias"): {details: 2, reviews: 1},
        ("default", "productpage"): {details: 3, reviews: 1},
    }


KEY = ("default", "productpage")
D, R = '{destination_service="d.default.svc.cluster.local"}', '{destination_service="r.default.svc.cluster.local"}'


def test_buffer_makes_a_fence_due_at_most_once_per_interval() -> None:
    buf = LearningBuffer(interval=1.0)
    due_times = []
    for i in range(1000):  # 1,000 calls over 2 s, each a new host for this fence
        now = 100 + i * 0.002
        buf.observe(KEY, {f'{{destination_service="h{i}.default.svc.cluster.local"}}': 1}, now, {}, {})
        if buf.due(now):
            due_times.append(now)
    assert len(due_times) == 2 and due_times[1] - due_times[0] >= 1.0
    assert buf.next_due() == pytest.approx(due_times[1] + 1.0)
    # a render gets what the last due released; the calls after it wait for the next one
    assert len(buf.record(KEY)[0]) == round((due_times[1] - 100) / 0.002) + 1
    assert buf.due(due_times[1] + 1.0) == [KEY]
    assert len(buf.record(KEY)[0]) == 1000


def test_renders_between_dues_bring_nothing_new() -> None:
    """The evaluation a fence's own status write causes must not write what came after its due."""
    buf = LearningBuffer(interval=1.0)
    buf.observe(KEY, {D: 1}, 100, {}, {})
    assert buf.due(100) == [KEY]
    assert buf.record(KEY) == ({D: "1"}, {D: 100})
    assert buf.observe(KEY, {R: 1}, 100.1, {}, {})  # news, while the write of D is under way
    assert buf.record(KEY) == ({D: "1"}, {D: 100})
    buf.written(KEY, {D: "1"}, {D: 100})
    assert buf.record(KEY) == ({}, {})  # the re-render after the write: nothing to write
    assert buf.due(100.5) == [] and buf.due(101) == [KEY]
    assert buf.record(KEY) == ({R: "1"}, {R: 100})


def test_buffer_only_news_make_a_fence_due() -> None:
    buf = LearningBuffer(interval=1.0)
    assert not buf.observe(KEY, {D: 5}, 100, {D: "1"}, {})  # already in status
    assert buf.due(200) == []
    assert buf.observe(KEY, {R: 2}, 100, {D: "1"}, {})
    assert buf.due(100) == [KEY] and buf.due(100.5) == []
    assert buf.record(KEY) == ({R: "2"}, {D: 100, R: 100})
    buf.written(KEY, {D: "1", R: "2"}, {D: 100, R: 100})
    assert len(buf) == 0


def test_buffer_ttl_refresh_is_news_once_a_quarter_ttl() -> None:
    buf = LearningBuffer(interval=1.0, ttl=400)
    assert not buf.observe(KEY, {D: 1}, 1050, {D: "1"}, {D: 1000})
    assert buf.observe(KEY, {D: 1}, 1100, {D: "1"}, {D: 1000})
    assert not buf.observe(KEY, {D: 1}, 1101, {D: "1"}, {D: 1000})  # already pending
    assert buf.due(1101) == [KEY]
    buf.written(KEY, {D: "1"}, {D: 1101})
    assert not buf.observe(KEY, {D: 1}, 1150, {D: "1"}, {D: 1101})


def ctx(**kw: Any) -> FenceContext:
    return FenceContext(**kw)


def test_effective_metrics_merge_and_ttl() -> None:
    status = {D: "1", R: "9"}
    c = ctx(config=Fence(dependencyTTL="1h"), now=10_000.0, learned={R: "100", "new": "3"}, seen={R: 9_990})
    metrics, seen = effective_metrics(status, {D: 1_000}, c)
    assert metrics == {R: "9", "new": "3"}  # D outlived the TTL; R kept its count
    assert seen == {R: 9_990, "new": 10_000}
    assert ttl_deadlines(seen, 3600) == [9_990 + 3601, 10_000 + 3601]
    no_ttl = effective_metrics(status, {D: 1_000}, ctx(now=10_000.0))
    assert no_ttl == ({D: "1", R: "9"}, {D: 1_000})


def test_prometheus_mode_replaces_metric_status() -> None:
    prom = Fence(metricSourceType="prometheus")
    assert effective_metrics({D: "1"}, {}, ctx(config=prom, prometheus={R: "3"})) == ({R: "3"}, {})
    assert effective_metrics({D: "1"}, {}, ctx(config=prom)) == ({D: "1"}, {})  # no result yet: unchanged


def test_prometheus_queries_and_results() -> None:
    handlers = {"destination": Handler(
        query='sum(istio_requests_total{source_app="$source_app",reporter="destination",namespace="$namespace"})'
              'by(destination_service)', type="Group")}
    [(key, query)] = prometheus_queries("default", "ratings", handlers).items()
    assert key == "destination" and query.group
    assert query.promql == ('sum(istio_requests_total{source_app="ratings",reporter="destination",'
                            'namespace="default"})by(destination_service)')
    with pytest.raises(ValueError, match="DNS-1123"):
        prometheus_queries("default", 'x"}) or vector(1', handlers)
    result = [{"metric": {"destination_service": "details.default.svc.cluster.local"}, "value": [0, "3"]},
              {"metric": {"destination_service": "reviews.other.svc.cluster.local"}, "value": [0, "1"]}]
    converted = convert_group("destination", result)
    assert converted == {'{destination_service="details.default.svc.cluster.local"}': "3",
                         '{destination_service="reviews.other.svc.cluster.local"}': "1"}
    assert merge_group_results([converted, {'{destination_service="x"}': "1", **converted}]) == {
        **converted, '{destination_service="x"}': "1"}


def test_a_status_write_does_not_reset_the_pacing() -> None:
    buf = LearningBuffer(interval=1.0)
    buf.observe(KEY, {D: 1}, 100, {}, {})
    assert buf.due(100) == [KEY]
    buf.written(KEY, {D: "1"}, {D: 100})
    assert len(buf) == 0
    assert buf.observe(KEY, {R: 1}, 100.2, {D: "1"}, {D: 100})
    assert buf.due(100.2) == [] and buf.next_due() == 101
    assert buf.due(101) == [KEY]
    buf.forget(KEY)
    assert buf.record(KEY) == ({}, {})
