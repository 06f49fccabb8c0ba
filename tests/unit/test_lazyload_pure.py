"""lazyload's pure pieces: names as istiod checks them, config, domains, aliases, VirtualService expansion."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from slime.framework.schema import model_schema
from slime.modules.lazyload.api import Destinations, ServiceFenceSpec, ServiceFenceStatus, Timestamp
from slime.modules.lazyload.config import DomainAlias, Fence
from slime.modules.lazyload.domains import (
    Sources,
    aliases_of,
    compute_domains,
    destination_map,
    expand_template,
    metric_host,
    parse_namespace_selector,
    rendered_hosts,
    selected_namespaces,
    services_matching,
    strategy_status,
)
from slime.modules.lazyload.names import label_problem, parse_duration, sidecar_host_problem

PKG = Path(__file__).resolve().parents[2] / "slime" / "modules" / "lazyload"
PURE = ["api", "config", "names", "domains", "context", "render", "learning", "autofence", "globalsidecar",
        "forwarder"]


@pytest.mark.parametrize("name", PURE)
def test_pure_files_import_no_client(name: str) -> None:
    tree = ast.parse((PKG / f"{name}.py").read_text())
    imported = {n.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for n in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"kopf", "kubernetes", "prometheus_api_client", "grpc", "envoy", "requests", "urllib3"}


def test_files_stay_small() -> None:
    for path in PKG.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name


@pytest.mark.parametrize(("host", "problem"), [
    ("*/reviews.default.svc.cluster.local", None),
    ("*/reviews", "short names (non FQDN) are not allowed"),
    ("istio-system/*", None),
    ("*/*", None),
    ("./foo.com", None),
    ("~/*", None),
    ("*/*.example.com", None),
    ("*/istio.io.", None),
    ("reviews.default.svc.cluster.local", "must be of form namespace/dnsName"),
    ("/foo", "cannot be empty"),
    ("Bad_NS/*", "is not a DNS-1123 label"),
    ("*/a_b.com", "label 'a_b' invalid"),
    ("*/a.b_c.com", "label 'b_c' invalid"),
    ("*/10.0.0.1", "cannot be all-numeric"),
    ("*/foo.*.com", "label '*' invalid"),
    ("*/" + "a" * 64 + ".com", "invalid"),
    ("*/" + "a." * 130 + "com", "1 to 255"),
])
def test_sidecar_hosts_as_istiod_checks_them(host: str, problem: str | None) -> None:
    got = sidecar_host_problem(host)
    assert (got is None) if problem is None else (got is not None and problem in got), got


@pytest.mark.parametrize(("key", "value", "ok"), [
    ("app", "ratings", True), ("app.kubernetes.io/name", "x", True), ("a", "", True),
    ("bad key", "x", False), ("app", "has space", False), ("app", "x" * 64, False), ("Ex_ample.com/a", "b", False),
    ("app", "-x", False), ("x" * 64, "y", False),
])
def test_label_checks(key: str, value: str, ok: bool) -> None:
    assert (label_problem(key, value) is None) == ok


@pytest.mark.parametrize(("text", "seconds"), [("1s", 1), ("500ms", 0.5), ("1h30m", 5400), ("24h", 86400),
                                               ("1.5m", 90), ("0s", 0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "s", "1d", "1s2", " 1s", "-1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(("general", "field"), [
    ({"domainAliases": [{"pattern": "(?P<x", "templates": ["a"]}]}, "domainAliases.0.pattern"),
    ({"domainAliases": [{"pattern": "x", "templates": []}]}, "domainAliases.0.templates"),
    ({"stableHost": ["Bad_Host"]}, "stableHost"),
    ({"stableHost": ["ns/svc.ns"]}, "stableHost"),
    ({"wormholePort": ["http"]}, "wormholePort"),
    ({"wormholePort": ["70000"]}, "wormholePort"),
    ({"blackNamespaceList": "a", "whiteNamespaceList": "b"}, "set only one"),
    ({"namespace": ["Shop"]}, "namespace"),
    ({"learnInterval": "0s"}, "learnInterval must be positive"),
    ({"dependencyTTL": "1 day"}, "dependencyTTL"),
    ({"globalSidecarMode": "pod"}, "globalSidecarMode"),
    ({"metricSourceType": "otel"}, "metricSourceType"),
    ({"wormholePort": ["9080"], "autoFenc": True}, "autoFenc"),
])
def test_config_errors_name_the_field(general: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as e:
        Fence.model_validate(general)
    assert field in str(e.value)


def test_config_reads_upstream_shapes() -> None:
    fence = Fence.model_validate({"wormholePort": ["9080;80", 8080], "metricSourceType": ""})
    assert fence.wormholePort == ["9080", "80", "8080"] and fence.source == "accesslog"
    assert Fence().learn_interval == 1 and Fence().ttl == 0 and Fence(dependencyTTL="2h").ttl == 7200


def test_timestamps_and_enums_in_both_encodings() -> None:
    assert Timestamp.model_validate({"seconds": "1700000000"}).secs == 1700000000
    assert Timestamp.model_validate({"seconds": 1700000000, "nanos": 5}).secs == 1700000000
    for bad in ({"seconds": "soon"}, {"seconds": True}, {"seconds": str(2**63)}, {"nanos": 10**9}):
        with pytest.raises(ValidationError):
            Timestamp.model_validate(bad)
    assert [Destinations.model_validate({"status": s}).state for s in (0, 1, 2, "EXPIRE")] == [
        "ACTIVE", "EXPIRE", "EXPIREWAIT", "EXPIRE"]
    with pytest.raises(ValidationError):
        Destinations.model_validate({"status": 3})
    schema = model_schema(ServiceFenceSpec)
    seconds = schema["properties"]["host"]["additionalProperties"]["properties"]["deadline"]["properties"][
        "expire"]["properties"]["seconds"]
    assert seconds.get("x-kubernetes-int-or-string") is True
    status = model_schema(ServiceFenceStatus)["properties"]["domains"]["additionalProperties"]["properties"]
    assert status["status"].get("x-kubernetes-int-or-string") is True


def test_expand_template_is_gos() -> None:
    m = re.search(r"(?P<service>[^.]+)\.(?P<namespace>[^.]+)", "details.default")
    assert m is not None
    assert expand_template("$namespace.$service.x", m) == "default.details.x"
    assert expand_template("${service}_v1", m) == "details_v1"
    assert expand_template("$service_v1", m) == ""  # greedy name: `service_v1` is no group
    assert expand_template("$1-$2-$3-$$", m) == "details-default--$"


def test_aliases() -> None:
    rule = DomainAlias(pattern=r"(?P<s>[^.]+)\.(?P<n>[^.]+)\.svc\.cluster\.local", templates=["$n.$s.mail", "$none"])
    assert aliases_of("a.b.svc.cluster.local", [rule]) == ["a.b.svc.cluster.local", "b.a.mail"]
    assert aliases_of("a.b.svc.cluster.local.c.d.svc.cluster.local", [rule]) == [
        "a.b.svc.cluster.local.c.d.svc.cluster.local"]  # two matches: no alias
    assert aliases_of("www.example.com", [rule]) == ["www.example.com"]


@pytest.mark.parametrize(("key", "host"), [
    ('{destination_service="a.b.svc.cluster.local:8080"}', "a.b.svc.cluster.local"),
    ('{request_host="h.example"}', "h.example"),
    ('{destination_app="x"}', None),
    ('{destination_service="a", foo="b"}', None),
    ("destination_service", None),
])
def test_metric_keys(key: str, host: str | None) -> None:
    assert metric_host(key) == host


def _vs(name: str, ns: str, hosts: list[str], spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "VirtualService", "metadata": {"name": name, "namespace": ns}, "spec": {"hosts": hosts, **spec}}


def test_destination_map_follows_istio() -> None:
    vss = [
        _vs("a", "default", ["reviews"], {"http": [{"route": [{"destination": {"host": "reviews-v2"}}]}]}),
        _vs("b", "other", ["reviews.default.svc.cluster.local"],
            {"tls": [{"route": [{"destination": {"host": "x"}}]}], "http": [{"mirror": {"host": "m.ns"}}]}),
        _vs("c", "default", ["*.example.com", "self"], {"http": [{"route": [{"destination": {"host": "self"}}]}]}),
        _vs("d", "default", ["bad"], {"http": [{"route": [{"destination": {"host": "Bad_Host.x"}}]}]}),
    ]
    assert destination_map(vss) == {"reviews.default.svc.cluster.local": [
        "m.ns", "reviews-v2.default.svc.cluster.local", "x.other.svc.cluster.local"]}


def test_namespace_selector_entries() -> None:
    assert parse_namespace_selector("shop") == ("shop", [])
    assert parse_namespace_selector("team=pay, env!=dev,!legacy,injected") == (None, [
        ("team", "=", "pay"), ("env", "!=", "dev"), ("legacy", "!", ""), ("injected", "exists", "")])
    with pytest.raises(ValueError, match="neither"):
        parse_namespace_selector("team in (a)")
    nss = [{"metadata": {"name": n, "labels": labels}} for n, labels in
           [("a", {"team": "pay"}), ("b", {"team": "pay", "legacy": "1"}), ("c", {})]]
    assert selected_namespaces(["team=pay,!legacy", "z"], nss) == ["a", "z"]


def test_label_selector_and_or() -> None:
    svcs = [{"metadata": {"name": n, "namespace": "d", "labels": labels}} for n, labels in
            [("a", {"x": "1", "y": "2"}), ("b", {"x": "1"}), ("c", {"z": "3"})]]
    assert services_matching([{"x": "1", "y": "2"}, {"z": "3"}, {}], svcs) == [
        "a.d.svc.cluster.local", "c.d.svc.cluster.local"]
    assert services_matching([{}], svcs) == []


def test_strategy_status() -> None:
    spec = ServiceFenceSpec.model_validate({"host": {
        "a": {"deadline": {"expire": {"seconds": 100}}},
        "b": {"auto": {"duration": {"seconds": 10}}, "RecentlyCalled": {"seconds": 50}},
        "c": {"auto": {"duration": {"seconds": 10}}},
        "d": {"stable": {}, "deadline": {"expire": {"seconds": 1}}},
    }})
    assert {k: strategy_status(v, 101) for k, v in spec.host.items()} == {
        "a": "EXPIRE", "b": "EXPIRE", "c": "ACTIVE", "d": "ACTIVE"}
    assert strategy_status(spec.host["a"], 100) == "ACTIVE"


def test_domain_state_machine() -> None:
    prev = ServiceFenceStatus.model_validate({"domains": {
        "active.x": {"hosts": ["active.x"]},
        "wait.x": {"hosts": ["wait.x"], "status": "EXPIREWAIT", "expireAt": 200},
        "expired.x": {"hosts": ["expired.x"], "status": "EXPIRE"},
        "back.x": {"hosts": ["back.x"], "status": "EXPIREWAIT", "expireAt": 50},
    }}).domains
    src = Sources(now=100, expire_wait=30)
    got = compute_domains({}, [], [], {'{destination_service="back.x"}': "1"}, prev, src)
    assert {k: (d.status, d.expire_at) for k, d in got.items()} == {
        "active.x": ("EXPIREWAIT", 130), "back.x": ("ACTIVE", None), "wait.x": ("EXPIREWAIT", 200)}
    later = compute_domains({}, [], [], {}, {k: Destinations.model_validate(d.as_status()) for k, d in got.items()},
                            Sources(now=201, expire_wait=30))
    assert {k: (d.status, d.expire_at) for k, d in later.items()} == {"back.x": ("EXPIREWAIT", 231)}
    assert rendered_hosts(got) == ["*/active.x", "*/back.x", "*/wait.x"]


@pytest.mark.parametrize(("dispatches", "message"), [
    ([{"name": "a", "domains": ["x.com"]}], "cluster is required"),
    ([{"domains": ["x.com"], "cluster": "c"}], "name is required"),
    ([{"name": "a", "cluster": "c"}], "needs domains"),
    ([{"name": "a", "domains": ["*"], "cluster": "c"}], "catch-all"),
    ([{"name": "a", "domainRegex": "(", "cluster": "c"}], "not a valid regex"),
    ([{"name": "a", "domains": ["x"], "cluster": "c"}, {"name": "a", "domains": ["y"], "cluster": "c"}], "twice"),
    ([{"name": "a", "domains": ["x"], "cluster": "c"}, {"name": "b", "domains": ["x"], "cluster": "c"}], "twice"),
    ([{"name": "allow_all", "domains": ["x"], "cluster": "c"}], "twice"),
])
def test_dispatches_envoy_would_refuse_are_config_errors(dispatches: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        Fence.model_validate({"dispatches": dispatches})
