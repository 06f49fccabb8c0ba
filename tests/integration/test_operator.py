"""`slime run` against the real local control plane: starts, elects one active replica,
reconciles, serves liveness and metrics, stops cleanly. The module used is the test module
(tests/modules/echo), which the registry picks up from SLIME_EXTRA_MODULES with no other edit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.integration.operator_proc import Operator, wait_until

GROUP, VERSION, PLURAL = "test.slime.io", "v1", "echoes"


@pytest.fixture
def operators(kubeconfig: Path, tmp_path: Path) -> Iterator[Callable[..., Operator]]:
    started: list[Operator] = []

    def start(priority: int | None, **kw: Any) -> Operator:
        op = Operator(kubeconfig, tmp_path / f"operator-{priority}.log", priority, modules="echo", **kw)
        started.append(op)
        wait_until(op.alive, 60, "liveness endpoint")
        return op

    yield start
    for op in started:
        op.stop()


def echo(ns: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Echo",
            "metadata": {"name": name, "namespace": ns}, "spec": {"message": "hi", **spec}}


def ready(api: k8s.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    status = obj.get("status") or {}
    conds = {c["type"]: c for c in status.get("conditions", [])}
    if "Ready" in conds and status.get("observedGeneration") == obj["metadata"]["generation"]:
        return conds["Ready"]
    return None


def configmaps(api: k8s.ApiClient, namespace: str, prefix: str) -> list[str]:
    return sorted(cm.metadata.name for cm in k8s.CoreV1Api(api).list_namespaced_config_map(namespace).items
                  if cm.metadata.name.startswith(prefix))


def test_run_reconciles_serves_metrics_and_stops_cleanly(operators: Callable[..., Operator],
                                                          k8s_api: k8s.ApiClient, namespace: str) -> None:
    op = operators(priority=10)
    api = k8s.CustomObjectsApi(k8s_api)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, echo(namespace, "hello", copies=2))
    cond = wait_until(lambda: ready(api, namespace, "hello"), 30, "Ready condition")
    assert cond["status"] == "True" and cond["reason"] == "Rendered"
    assert configmaps(k8s_api, namespace, "hello-") == ["hello-0", "hello-1"]
    metrics = op.get(op.metrics, "/metrics")
    assert "slime_api_writes_total" in metrics and 'slime_reconciles_total{kind="Echo",result="ready"}' in metrics
    assert "slime_build_info{" in metrics and "slime_active_replica 1.0" in metrics
    assert f'slime_resource_condition{{condition="Ready",kind="Echo",name="hello",namespace="{namespace}",' \
           'status="True"} 1.0' in metrics
    assert "_created" not in metrics
    assert op.stop() == 0
    # JSON logs, one object per line
    lines = [ln for ln in op.output().splitlines() if ln.startswith("{")]
    assert lines and all(isinstance(yaml.safe_load(ln), dict) for ln in lines)


def test_children_in_another_namespace_are_cleaned_up_under_a_finalizer(
        operators: Callable[..., Operator], k8s_api: k8s.ApiClient, namespace: str) -> None:
    """ownerReferences cannot cross namespaces: such children are found by label and removed on delete."""
    operators(priority=None)
    api = k8s.CustomObjectsApi(k8s_api)
    core = k8s.CoreV1Api(k8s_api)
    other = f"{namespace}-x"
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, echo(namespace, "far", namespace=other))
    cond = wait_until(lambda: ready(api, namespace, "far"), 30, "Ready condition")
    assert (cond["status"], cond["reason"]) == ("False", "NoNamespace")
    wait_until(lambda: any(e.reason == "NoNamespace" and e.type == "Warning" for e in core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=far").items), 10, "a Warning event NoNamespace")
    core.create_namespace({"metadata": {"name": other}})  # wakes the Echo (its hooks)
    try:
        wait_until(lambda: configmaps(k8s_api, other, "far-") == ["far-0"], 30, "the child in the other namespace")
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "far")
        assert "slime.io/children" in obj["metadata"]["finalizers"]
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "far")
        wait_until(lambda: configmaps(k8s_api, other, "far-") == [], 30, "the child to be deleted")

        def gone() -> bool:
            try:
                api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "far")
            except ApiException as e:
                return e.status == 404
            return False
        wait_until(gone, 30, "the Echo to go once its finalizer is released")
    finally:
        core.delete_namespace(other)


def test_two_replicas_one_active_and_failover(operators: Callable[..., Operator],
                                              k8s_api: k8s.ApiClient, namespace: str) -> None:
    api = k8s.CustomObjectsApi(k8s_api)
    low = operators(priority=100)
    high = operators(priority=200)
    wait_until(lambda: "Pausing operations" in low.output(), 30, "the lower-priority replica to pause")
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, echo(namespace, "a"))
    wait_until(lambda: ready(api, namespace, "a"), 30, "the active replica to reconcile")
    assert '"a"' not in low.output().split("Pausing operations", 1)[1]  # the paused one did nothing
    assert high.stop() == 0
    wait_until(lambda: "Resuming operations" in low.output(), 30, "the standby to take over")
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, echo(namespace, "b"))
    wait_until(lambda: ready(api, namespace, "b"), 30, "the new active replica to reconcile")


def test_standby_takes_over_within_15s_of_a_kill(operators: Callable[..., Operator], k8s_api: k8s.ApiClient,
                                                  namespace: str) -> None:
    """kill -9 of the active replica (no goodbye in the peering object): the standby reconciles an
    edit within 15 s (the default --peering-lifetime is 10 s)."""
    import signal
    import time

    api = k8s.CustomObjectsApi(k8s_api)
    low = operators(priority=100)
    high = operators(priority=200)
    wait_until(lambda: "Pausing operations" in low.output(), 30, "the lower-priority replica to pause")
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, echo(namespace, "k"))
    wait_until(lambda: ready(api, namespace, "k"), 30, "the active replica to reconcile")
    time.sleep(3)  # a keep-alive or two of the active replica
    high.proc.send_signal(signal.SIGKILL)
    high.proc.wait(10)
    killed = time.monotonic()
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "k", {"spec": {"copies": 2}})
    wait_until(lambda: configmaps(k8s_api, namespace, "k-") == ["k-0", "k-1"], 30, "the standby to reconcile")
    took = time.monotonic() - killed
    print(f"takeover after kill -9: {took:.1f}s")
    assert took <= 15, f"the standby took {took:.1f}s"
