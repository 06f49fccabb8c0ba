"""The limiter module end to end: `slime run` on the real local control plane with a real
Prometheus scraping a test exporter. EnvoyFilters follow metrics and pod counts, are
garbage-collected with their SmartLimiter, and survive a Prometheus outage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import PrometheusStack
from tests.integration.operator_proc import Operator, wait_until
from tests.integration.prom import TestExporter, run_prometheus

GROUP, VERSION, PLURAL = "microservice.slime.io", "v1alpha2", "smartlimiters"
CPU_QUERY = 'sum(container_cpu_usage_seconds_total{namespace="$namespace",pod=~"$pod_name"})'
RLS_CM = "rate-limit-config"


def module_config(prometheus_url: str, rls_namespace: str = "istio-system") -> dict[str, Any]:
    return {
        "name": "limiter", "kind": "limiter", "enable": True,
        "general": {
            "refresh": "1s",
            "rlsConfigMap": {"name": RLS_CM, "namespace": rls_namespace},
            "rls": {"service": "rate-limit.istio-system.svc.cluster.local", "port": 18081},
        },
        "metric": {"prometheus": {"address": prometheus_url, "handlers": {"cpu.sum": {"query": CPU_QUERY}}}},
    }


def start_operator(kubeconfig: Path, tmp_path: Path, config: dict[str, Any], name: str,
                   priority: int | None = None, namespace: str | None = None) -> Operator:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    scope = ["--namespace", namespace] if namespace else []
    return Operator(kubeconfig, tmp_path / f"{name}.log", priority, modules="limiter",
                    extra=["--config", str(path), *scope]).wait_alive()


@pytest.fixture(scope="module")
def limiter_operator(kubeconfig: Path, prometheus_stack: PrometheusStack,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = start_operator(kubeconfig, tmp_path_factory.mktemp("limiter"), module_config(prometheus_stack.url), "op")
    yield op
    assert op.stop() == 0, op.output()[-3000:]


# --- cluster helpers


def make_service(api: k8s.ApiClient, ns: str, name: str, labels: dict[str, str]) -> None:
    k8s.CoreV1Api(api).create_namespaced_service(ns, {
        "metadata": {"name": name}, "spec": {"selector": labels, "ports": [{"name": "http", "port": 9080}]}})


def make_running_pod(api: k8s.ApiClient, ns: str, name: str, labels: dict[str, str], ip: str) -> None:
    """A Pod as a kubelet would report it (there is no kubelet here): Running, with an IP."""
    core = k8s.CoreV1Api(api)
    core.create_namespaced_pod(ns, {"metadata": {"name": name, "labels": labels},
                                    "spec": {"containers": [{"name": "app", "image": "app"}]}})
    core.patch_namespaced_pod_status(name, ns, {"status": {"phase": "Running", "podIP": ip,
                                                           "podIPs": [{"ip": ip}]}})


def smartlimiter(ns: str, name: str, condition: str, quota: str, **action: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SmartLimiter", "metadata": {"name": name, "namespace": ns},
        "spec": {"sets": {"_base": {"descriptor": [{
            "action": {"fill_interval": {"seconds": 60}, "quota": quota, **action},
            "condition": condition, "target": {"port": 9080},
        }]}}},
    }


def envoyfilter(api: k8s.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
            "networking.istio.io", "v1alpha3", ns, "envoyfilters", f"{name}.{ns}.ratelimit")
        return obj
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def tokens(ef: dict[str, Any] | None) -> int | None:
    """maxTokens of the (first) local rate limit descriptor the EnvoyFilter carries."""
    if ef is None:
        return None
    descriptors = _find(ef["spec"], "descriptors")
    return int(descriptors[0]["tokenBucket"]["maxTokens"]) if descriptors else None


def _find(node: Any, key: str) -> Any:
    if isinstance(node, dict):
        if key in node:
            return node[key]
        node = list(node.values())
    if isinstance(node, list):
        for child in node:
            hit = _find(child, key)
            if hit is not None:
                return hit
    return None


def get_limiter(api: k8s.ApiClient, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = k8s.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    return obj


def limiter_gone(api: k8s.ApiClient, ns: str, name: str) -> bool:
    try:
        get_limiter(api, ns, name)
    except ApiException as e:
        return e.status == 404
    return False


def condition(api: k8s.ApiClient, ns: str, name: str, type_: str) -> dict[str, Any] | None:
    obj = get_limiter(api, ns, name)
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


def create(api: k8s.ApiClient, obj: dict[str, Any]) -> None:
    k8s.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, obj["metadata"]["namespace"],
                                                              PLURAL, obj)


# --- tests


def api_writes(op: Operator) -> float:
    total = 0.0
    for line in op.get(op.metrics, "/metrics").splitlines():
        if line.startswith("slime_api_writes_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_no_api_writes_while_nothing_changes(limiter_operator: Operator, k8s_api: k8s.ApiClient,
                                             namespace: str) -> None:
    labels = {"app": "quiet"}
    make_service(k8s_api, namespace, "quiet", labels)
    make_running_pod(k8s_api, namespace, "quiet-1", labels, "10.4.0.1")
    create(k8s_api, smartlimiter(namespace, "quiet", "true", "100/{{._base.pod}}"))
    wait_until(lambda: tokens(envoyfilter(k8s_api, namespace, "quiet")) == 100, 20, "the first render")
    wait_until(lambda: condition(k8s_api, namespace, "quiet", "Ready"), 10, "status written")
    time.sleep(1.5)  # let the status write of the first render settle
    before = api_writes(limiter_operator)
    time.sleep(3.5)  # three refreshes (refresh: 1s) with nothing changing
    assert api_writes(limiter_operator) == before
    make_running_pod(k8s_api, namespace, "quiet-2", labels, "10.4.0.2")  # a real change is still written
    wait_until(lambda: tokens(envoyfilter(k8s_api, namespace, "quiet")) == 50, 20, "quota 100/2 after a new pod")
    assert api_writes(limiter_operator) > before


def test_average_quota_follows_pod_count_and_gc_on_delete(limiter_operator: Operator, k8s_api: k8s.ApiClient,
                                                          namespace: str) -> None:
    labels = {"app": "reviews"}
    make_service(k8s_api, namespace, "reviews", labels)
    make_running_pod(k8s_api, namespace, "reviews-1", labels, "10.1.0.1")
    make_running_pod(k8s_api, namespace, "reviews-2", labels, "10.1.0.2")
    create(k8s_api, smartlimiter(namespace, "reviews", "true", "100/{{._base.pod}}", strategy="average"))
    wait_until(lambda: tokens(envoyfilter(k8s_api, namespace, "reviews")) == 50, 20, "quota 100/2 = 50")
    ef = envoyfilter(k8s_api, namespace, "reviews")
    assert ef is not None and ef["metadata"]["ownerReferences"][0]["kind"] == "SmartLimiter"
    meta = get_limiter(k8s_api, namespace, "reviews")["metadata"]
    assert not meta.get("finalizers") and not meta.get("annotations"), meta  # no bookkeeping writes
    make_running_pod(k8s_api, namespace, "reviews-3", labels, "10.1.0.3")
    wait_until(lambda: tokens(envoyfilter(k8s_api, namespace, "reviews")) == 34, 20, "quota 100/3 rounds up to 34")
    patch = {"spec": {"sets": {"_base": {"descriptor": [{
        "action": {"fill_interval": {"seconds": 60}, "quota": "300/{{._base.pod}}", "strategy": "average"},
        "condition": "true", "target": {"port": 9080}}]}}}}
    k8s.CustomObjectsApi(k8s_api).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "reviews", patch)
    wait_until(lambda: tokens(envoyfilter(k8s_api, namespace, "reviews")) == 100, 10, "the edited quota 300/3")
    ready = wait_until(lambda: condition(k8s_api, namespace, "reviews", "Ready"), 10, "Ready condition")
    assert ready["status"] == "True"
    k8s.CustomObjectsApi(k8s_api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "reviews")
    wait_until(lambda: envoyfilter(k8s_api, namespace, "reviews") is None, 60, "EnvoyFilter garbage-collected")


def test_condition_on_prometheus_metric_adds_and_removes_the_limit(
        limiter_operator: Operator, prometheus_stack: PrometheusStack, k8s_api: k8s.ApiClient,
        namespace: str) -> None:
    labels = {"app": "ratings"}
    make_service(k8s_api, namespace, "ratings", labels)
    make_running_pod(k8s_api, namespace, "ratings-1", labels, "10.2.0.1")
    exporter = prometheus_stack.exporter
    exporter.set_cpu(namespace, "ratings-1", 50)
    create(k8s_api, smartlimiter(namespace, "ratings", "{{._base.cpu.sum}}>100", "10"))
    wait_until(lambda: (condition(k8s_api, namespace, "ratings", "Ready") or {}).get("status") == "True", 30,
               "first evaluation")
    assert envoyfilter(k8s_api, namespace, "ratings") is None  # 50 > 100 is false: no limit
    exporter.set_cpu(namespace, "ratings-1", 150)
    wait_until(lambda: tokens(envoyfilter(k8s_api, namespace, "ratings")) == 10, 30, "limit once cpu > 100")
    exporter.set_cpu(namespace, "ratings-1", 20)
    wait_until(lambda: envoyfilter(k8s_api, namespace, "ratings") is None, 30, "limit removed once cpu <= 100")


def test_bad_limiter_reports_itself_and_others_still_work(limiter_operator: Operator, k8s_api: k8s.ApiClient,
                                                           namespace: str) -> None:
    make_service(k8s_api, namespace, "good", {"app": "good"})
    make_service(k8s_api, namespace, "bad", {"app": "bad"})
    create(k8s_api, smartlimiter(namespace, "bad", "1 >> 3", "10"))
    create(k8s_api, smartlimiter(namespace, "good", "true", "7"))
    wait_until(lambda: tokens(envoyfilter(k8s_api, namespace, "good")) == 7, 20, "the good limiter's filter")
    # the first evaluation may still miss the Service (watch lag); the settled state names the error
    ready = wait_until(lambda: (c := condition(k8s_api, namespace, "bad", "Ready")) and "position" in c["message"]
                       and c, 20, "the bad limiter's condition")
    assert ready["status"] == "False", ready
    assert envoyfilter(k8s_api, namespace, "bad") is None


def test_global_strategy_maintains_its_own_rls_entries(limiter_operator: Operator, k8s_api: k8s.ApiClient,
                                                       namespace: str) -> None:
    core = k8s.CoreV1Api(k8s_api)
    other = {"key": "generic_key", "value": "Service[someone.else]-Id[1]",
             "rate_limit": {"requests_per_unit": 1, "unit": "SECOND"}}
    body = {"metadata": {"name": RLS_CM},
            "data": {"config.yaml": yaml.safe_dump({"domain": "slime", "descriptors": [other]})}}
    try:
        core.create_namespaced_config_map("istio-system", body)
    except ApiException as e:
        if e.status != 409:
            raise
        core.replace_namespaced_config_map(RLS_CM, "istio-system", body)
    make_service(k8s_api, namespace, "details", {"app": "details"})
    create(k8s_api, smartlimiter(namespace, "details", "true", "5", strategy="global"))

    def rls() -> list[dict[str, Any]]:
        cm = core.read_namespaced_config_map(RLS_CM, "istio-system")
        return list(yaml.safe_load(cm.data["config.yaml"]).get("descriptors") or [])

    mine = f"Service[details.{namespace}]-"
    wait_until(lambda: any(str(d.get("value", "")).startswith(mine) for d in rls()), 20, "our RLS entry")
    assert other in rls()
    assert envoyfilter(k8s_api, namespace, "details") is not None
    # Its entries must not outlive it, even if the operator is down when it is deleted.
    assert get_limiter(k8s_api, namespace, "details")["metadata"]["finalizers"] == ["slime.io/rls-entries"]
    k8s.CustomObjectsApi(k8s_api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "details")
    wait_until(lambda: not any(str(d.get("value", "")).startswith(mine) for d in rls()), 20, "our entry removed")
    assert other in rls()  # someone else's entry is left alone
    wait_until(lambda: limiter_gone(k8s_api, namespace, "details"), 20, "the limiter released and gone")


def test_a_finalizer_left_by_an_earlier_version_is_released(limiter_operator: Operator, k8s_api: k8s.ApiClient,
                                                            namespace: str) -> None:
    # Earlier versions ran a kopf daemon per SmartLimiter, which put kopf's finalizer on each.
    make_service(k8s_api, namespace, "legacy", {"app": "legacy"})
    body = smartlimiter(namespace, "legacy", "true", "5")
    body["metadata"]["finalizers"] = ["slime.io/finalizer"]
    create(k8s_api, body)
    wait_until(lambda: tokens(envoyfilter(k8s_api, namespace, "legacy")) == 5, 20, "its EnvoyFilter")
    k8s.CustomObjectsApi(k8s_api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "legacy")
    wait_until(lambda: limiter_gone(k8s_api, namespace, "legacy"), 20, "the limiter released and gone")


def test_many_global_limiters_at_once_lose_no_rls_entry(limiter_operator: Operator, k8s_api: k8s.ApiClient,
                                                        namespace: str) -> None:
    # All of them rewrite one shared ConfigMap at the same moment: none may overwrite another.
    names = [f"burst-{i}" for i in range(15)]
    for name in names:
        make_service(k8s_api, namespace, name, {"app": name})
        create(k8s_api, smartlimiter(namespace, name, "true", "5", strategy="global"))
    core = k8s.CoreV1Api(k8s_api)

    def present() -> set[str]:
        cm = core.read_namespaced_config_map(RLS_CM, "istio-system")
        values = {str(d.get("value", "")) for d in yaml.safe_load(cm.data["config.yaml"]).get("descriptors") or []}
        return {n for n in names if any(v.startswith(f"Service[{n}.{namespace}]-") for v in values)}

    wait_until(lambda: present() == set(names), 60, "every limiter's RLS entry")


def test_prometheus_outage_keeps_the_last_limits(kubeconfig: Path, k8s_api: k8s.ApiClient, namespace: str,
                                                 tmp_path: Path, limiter_operator: Operator) -> None:
    limiter_operator.stop()  # this test runs its own operator against a Prometheus it can stop
    labels = {"app": "outage"}
    make_service(k8s_api, namespace, "outage", labels)
    make_running_pod(k8s_api, namespace, "outage-1", labels, "10.3.0.1")
    with TestExporter() as exporter:
        exporter.set_cpu(namespace, "outage-1", 500)
        prom = run_prometheus([exporter.target])
        url = prom.__enter__()
        op = start_operator(kubeconfig, tmp_path, module_config(url), "outage-op")
        try:
            create(k8s_api, smartlimiter(namespace, "outage", "{{._base.cpu.sum}}>100", "9"))
            wait_until(lambda: tokens(envoyfilter(k8s_api, namespace, "outage")) == 9, 30, "limit in force")
            prom.__exit__(None, None, None)
            cond = wait_until(
                lambda: (c := condition(k8s_api, namespace, "outage", "MetricsAvailable")) and c["status"] == "False"
                and c, 30, "MetricsAvailable=False")
            assert cond["reason"] == "PrometheusUnreachable", cond
            assert tokens(envoyfilter(k8s_api, namespace, "outage")) == 9  # the last limit stays
            port = int(url.rsplit(":", 1)[1])
            with run_prometheus([exporter.target], port=port):  # back on the same address
                wait_until(lambda: (condition(k8s_api, namespace, "outage", "MetricsAvailable") or {}).get("status")
                           == "True", 30, "recovery by itself")
                exporter.set_cpu(namespace, "outage-1", 10)
                wait_until(lambda: envoyfilter(k8s_api, namespace, "outage") is None, 30, "fresh data used again")
        finally:
            prom.__exit__(None, None, None)
            assert op.stop() == 0


def reconciles(op: Operator) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in op.get(op.metrics, "/metrics").splitlines()
               if line.startswith("slime_reconciles_total{"))


def test_a_paused_replica_stops_evaluating(kubeconfig: Path, prometheus_stack: PrometheusStack,
                                           k8s_api: k8s.ApiClient, namespace: str, tmp_path: Path,
                                           limiter_operator: Operator) -> None:
    # kopf pauses its watches in a standby replica; the limiter's own scheduler must pause too,
    # or it would keep evaluating (every refresh, here 1 s) and writing from stale caches.
    limiter_operator.stop()  # two peered replicas of its own
    labels = {"app": "peered"}
    make_service(k8s_api, namespace, "peered", labels)
    make_running_pod(k8s_api, namespace, "peered-1", labels, "10.5.0.1")
    prometheus_stack.exporter.set_cpu(namespace, "peered-1", 500)
    config = module_config(prometheus_stack.url)
    api = k8s.CustomObjectsApi(k8s_api)

    def set_quota(quota: str) -> None:
        body = smartlimiter(namespace, "peered", "{{._base.cpu.sum}}>100", quota)
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "peered", {"spec": body["spec"]})

    low = start_operator(kubeconfig, tmp_path, config, "low", priority=100)
    try:
        create(k8s_api, smartlimiter(namespace, "peered", "{{._base.cpu.sum}}>100", "9"))
        wait_until(lambda: tokens(envoyfilter(k8s_api, namespace, "peered")) == 9, 30, "the low replica's render")
        high = start_operator(kubeconfig, tmp_path, config, "high", priority=200)
        try:
            wait_until(lambda: "this replica is now paused" in low.output(), 30, "the low replica to pause")
            before = reconciles(low)
            set_quota("11")
            wait_until(lambda: tokens(envoyfilter(k8s_api, namespace, "peered")) == 11, 30, "the high replica")
            time.sleep(3)  # three refreshes
            assert reconciles(low) == before
        finally:
            assert high.stop() == 0
        wait_until(lambda: "this replica is now active" in low.output(), 90, "the low replica to take over")
        set_quota("13")
        wait_until(lambda: tokens(envoyfilter(k8s_api, namespace, "peered")) == 13, 30, "the low replica again")
        assert reconciles(low) > before
    finally:
        assert low.stop() == 0


def test_a_restarted_operator_rewrites_nothing(kubeconfig: Path, prometheus_stack: PrometheusStack,
                                               k8s_api: k8s.ApiClient, namespace: str, tmp_path: Path,
                                               limiter_operator: Operator) -> None:
    # After a restart every limiter is evaluated again from scratch; what is in force must be
    # recognised as such (EnvoyFilters, RLS entries, finalizer, status), not written again.
    limiter_operator.stop()
    config = module_config(prometheus_stack.url)
    for name in ("local", "global"):
        make_service(k8s_api, namespace, name, {"app": name})
        make_running_pod(k8s_api, namespace, f"{name}-1", {"app": name}, "10.6.0.1" if name == "local" else "10.6.0.2")
    # Scoped to this test's namespace: limiters other tests left behind (their namespaces may still
    # be terminating, their EnvoyFilters already gone) are not this test's business.
    first = start_operator(kubeconfig, tmp_path, config, "first", namespace=namespace)
    try:
        create(k8s_api, smartlimiter(namespace, "local", "true", "100/{{._base.pod}}"))
        create(k8s_api, smartlimiter(namespace, "global", "true", "5", strategy="global"))
        for name in ("local", "global"):
            wait_until(lambda n=name: (condition(k8s_api, namespace, n, "Ready") or {}).get("status") == "True", 30,
                       f"{name} in force")
    finally:
        assert first.stop() == 0
    second = start_operator(kubeconfig, tmp_path, config, "second", namespace=namespace)
    try:
        wait_until(lambda: reconciles(second) >= 2, 30, "both limiters evaluated after the restart")
        time.sleep(3)  # every limiter present evaluated (debounce 0.3 s), and refreshes (1 s)
        assert api_writes(second) == 0, second.output()[-2000:]
    finally:
        assert second.stop() == 0
