"""The samples on the real control plane: every sample file applies with kubectl, and the operator
writes exactly what `slime render` prints for them (objects and status), through the same path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from slime import registry
from slime.framework import kinds
from slime.framework.kube import Kube
from slime.framework.sync import MANAGED_BY, OWNER, OWNER_KIND, OWNER_UID
from tests.integration.conftest import PrometheusStack
from tests.integration.operator_proc import Operator, wait_until

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
NAMESPACE = "slime-samples"
OURS = {MANAGED_BY, OWNER_UID, OWNER_KIND, OWNER}


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], input=stdin, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def render(*args: str) -> list[dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "slime.cli", "render", *args, "--status"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """An object as the render states it: without server fields and the operator's ownership marks."""
    meta = obj["metadata"]
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in OURS}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in OURS}
    out = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    out["metadata"] = {k: meta[k] for k in ("name", "namespace") if k in meta}
    if labels:
        out["metadata"]["labels"] = labels
    if annotations:
        out["metadata"]["annotations"] = annotations
    return out


def test_operator_writes_what_render_prints_for_the_samples(kubeconfig: Path, k8s_api: k8s.ApiClient,
                                                            prometheus_stack: PrometheusStack,
                                                            tmp_path: Path) -> None:
    modules = [m for m in registry.names() if (SAMPLES / m).is_dir()]
    configs = []
    for module in modules:
        path = SAMPLES / module / "config" / f"{module}.yaml"
        if path.exists():
            cfg = yaml.safe_load(path.read_text())
            if (cfg.get("metric") or {}).get("prometheus"):
                cfg["metric"]["prometheus"]["address"] = prometheus_stack.url
            configs.append(cfg)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump_all(configs))
    # What a kubelet and Prometheus would say: the context Pods Running, the metric values given.
    metrics = yaml.safe_load((SAMPLES / "limiter" / "config" / "metrics.yaml").read_text())
    for module in modules:
        kubectl(kubeconfig, "apply", "-f", str(SAMPLES / module))  # every sample file applies as it is
    kube = Kube(k8s_api)
    for module in modules:
        for path in sorted((SAMPLES / module / "context").glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                for obj in (doc or {}).get("items") or [doc] if doc else []:
                    status = obj.pop("status", None)
                    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-",
                            stdin=yaml.safe_dump(obj))
                    if status and obj["kind"] == "Pod":
                        kube.merge_patch(kinds.POD, NAMESPACE, obj["metadata"]["name"], {"status": status},
                                         subresource="status")
    for key, values in metrics.items():
        ns, name = key.split("/")
        for metric, value in values.items():
            assert metric == "_base.cpu.sum", "extend the exporter for other metrics"
            pods = [p for p in kube.list(kinds.POD, ns) if p["metadata"]["labels"].get("app") == name]
            for pod in pods:
                prometheus_stack.exporter.set_cpu(ns, pod["metadata"]["name"], float(value) / len(pods))

    args = [a for m in modules for a in ("-f", str(SAMPLES / m))]
    args += [a for m in modules if (SAMPLES / m / "context").is_dir() for a in ("-f", str(SAMPLES / m / "context"))]
    expected = render(*args, "--config", str(config), "--metrics", str(SAMPLES / "limiter" / "config" / "metrics.yaml"))
    crs = {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]): o for o in expected
           if "status" in o and "spec" not in o}
    objects = [o for o in expected if "status" not in o or "spec" in o]

    op = Operator(kubeconfig, tmp_path / "op.log", None, modules=",".join(modules),
                  extra=["--config", str(config), "--namespace", NAMESPACE, "--namespace", "istio-system"]).wait_alive()
    try:
        def written() -> list[dict[str, Any]]:
            found = []
            for obj in objects:
                kind = kinds.of(obj)
                live = kube.get(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"])
                if live is not None:
                    found.append(comparable(live))
            return found

        want = [comparable(o) for o in objects if o["kind"] != "ConfigMap"]
        wait_until(lambda: all(w in written() for w in want), 60,
                   f"the operator's objects to equal the render's (log: {tmp_path / 'op.log'})")

        def statuses() -> dict[tuple[str, str, str], Any]:
            out = {}
            for kind, ns, name in crs:
                info = next(i for i in registry.crd_infos() if i.kind == kind)
                live = kube.get(info.kind_ref, ns, name) or {}
                status = dict(live.get("status") or {})
                status.pop("observedGeneration", None)
                status["conditions"] = [{k: c[k] for k in ("type", "status", "reason", "message")}
                                        for c in status.get("conditions") or []]
                out[(kind, ns, name)] = status
            return out

        want_status = {k: v["status"] for k, v in crs.items()}
        diff: list[Any] = []

        def same_status() -> bool:
            got = statuses()
            diff[:] = [(k, got.get(k), v) for k, v in want_status.items() if got.get(k) != v]
            return not diff

        try:
            wait_until(same_status, 60, "every CR's status to equal the render's")
        except AssertionError:
            raise AssertionError(f"status differs (key, operator, render): {diff}") from None
        rls = next(o for o in objects if o["kind"] == "ConfigMap")
        live_rls = kube.get(kinds.CONFIG_MAP, rls["metadata"]["namespace"], rls["metadata"]["name"])
        assert live_rls is not None
        ours = [d for d in yaml.safe_load(rls["data"]["config.yaml"])["descriptors"] if NAMESPACE in d["value"]]
        live = [d for d in yaml.safe_load(live_rls["data"]["config.yaml"])["descriptors"] if NAMESPACE in d["value"]]
        assert ours and live == ours
    finally:
        assert op.stop() == 0
        for module in modules:
            kubectl(kubeconfig, "delete", "--wait=false", "--ignore-not-found", "-f", str(SAMPLES / module))
