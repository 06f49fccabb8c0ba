"""`slime run` against the real local control plane: starts, elects one active replica,
reconciles, serves liveness and metrics, stops cleanly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.integration.operator_proc import Operator, wait_until

GROUP, VERSION = "microservice.slime.io", "v1alpha1"


@pytest.fixture
def operators(kubeconfig: Path, tmp_path: Path) -> Iterator[Callable[..., Operator]]:
    started: list[Operator] = []

    def start(priority: int, **kw: Any) -> Operator:
        op = Operator(kubeconfig, tmp_path / f"operator-{priority}.log", priority, **kw)
        started.append(op)
        wait_until(op.alive, 60, "liveness endpoint")
        return op

    yield start
    for op in started:
        op.stop()


def fence(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ServiceFence",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def accepted(api: k8s.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "servicefences", name)
    status = obj.get("status") or {}
    conds = {c["type"]: c for c in status.get("conditions", [])}
    if "Accepted" in conds and status.get("observedGeneration") == obj["metadata"]["generation"]:
        return conds["Accepted"]
    return None


def test_run_reconciles_serves_metrics_and_stops_cleanly(operators: Callable[..., Operator],
                                                          k8s_api: k8s.ApiClient, namespace: str) -> None:
    op = operators(priority=10)
    api = k8s.CustomObjectsApi(k8s_api)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "servicefences",
                                        fence(namespace, "reviews", enable=True))
    cond = wait_until(lambda: accepted(api, namespace, "reviews"), 30, "Accepted condition")
    assert cond["status"] == "True" and cond["reason"] == "Valid"
    metrics = op.get(op.metrics, "/metrics")
    assert "slime_api_writes_total" in metrics and "slime_reconciles_total" in metrics
    assert op.stop() == 0
    # JSON logs, one object per line
    lines = [ln for ln in op.output().splitlines() if ln.startswith("{")]
    assert lines and all(isinstance(yaml.safe_load(ln), dict) for ln in lines)


def test_two_replicas_one_active_and_failover(operators: Callable[..., Operator],
                                              k8s_api: k8s.ApiClient, namespace: str) -> None:
    api = k8s.CustomObjectsApi(k8s_api)
    low = operators(priority=100)
    high = operators(priority=200)
    wait_until(lambda: "Pausing operations" in low.output(), 30, "the lower-priority replica to pause")
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "servicefences", fence(namespace, "a"))
    wait_until(lambda: accepted(api, namespace, "a"), 30, "the active replica to reconcile")
    assert '"a"' not in low.output().split("Pausing operations", 1)[1]  # the paused one did nothing
    assert high.stop() == 0
    wait_until(lambda: "Resuming operations" in low.output(), 30, "the standby to take over")
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "servicefences", fence(namespace, "b"))
    wait_until(lambda: accepted(api, namespace, "b"), 30, "the new active replica to reconcile")
