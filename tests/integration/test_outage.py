"""An apiserver outage (its own cluster: the shared one must not go down): the operator logs one
line per informer when it starts and one when it ends, no retry chatter, and works on after it."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from slime.devcluster import DevCluster
from tests.conftest import _controlplane, crd_files
from tests.integration.operator_proc import Operator, wait_until
from tests.integration.test_limiter_operator import create, make_service, smartlimiter

OUTAGE_SECONDS = 20


def test_apiserver_outage_logs_one_line_per_watch_and_state(dev_cluster: DevCluster, tmp_path: Path) -> None:
    with DevCluster(crd_files(), bin_dir=_controlplane["bin"]) as cluster:
        op = Operator(cluster.kubeconfig, tmp_path / "op.log", None, modules="limiter").wait_alive()
        try:
            api = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))
            wait_until(lambda: "Registered module limiter" in op.output(), 30, "the operator to start")
            time.sleep(2)
            before = len(op.output().splitlines())
            apiserver = next(p for p in cluster._procs if p.name == "kube-apiserver")
            argv = list(apiserver.popen.args)  # type: ignore[arg-type]
            apiserver.popen.send_signal(signal.SIGKILL)
            apiserver.popen.wait(10)
            cluster._procs.remove(apiserver)
            time.sleep(OUTAGE_SECONDS)
            cluster._spawn("kube-apiserver", argv)
            wait_until(lambda: cluster._get(f"{cluster.server}/readyz") == "ok", 60, "the apiserver back")
            # It works on: a new limiter gets its EnvoyFilter.
            make_service(api, "default", "after", {"app": "after"})
            create(api, smartlimiter("default", "after", "true", "10"))
            wait_until(lambda: k8s.CustomObjectsApi(api).list_namespaced_custom_object(
                "networking.istio.io", "v1alpha3", "default", "envoyfilters")["items"], 60, "the limiter after it")
            lines = [json.loads(ln) for ln in op.output().splitlines()[before:] if ln.startswith("{")]
        finally:
            op.stop()
    warnings = [ln["message"] for ln in lines if ln.get("severity") in ("warn", "error", "fatal")]
    print(f"{len(warnings)} warning/error lines during a {OUTAGE_SECONDS}s outage:")
    for w in warnings:
        print("  ", w[:200])
    assert not [w for w in warnings if "Retrying (Retry(" in w], "urllib3 retry chatter"
    watch_failures = [w for w in warnings if w.startswith("Watch of ")]
    assert len(watch_failures) <= 4, watch_failures  # one per informer (Services, Pods, DRs, SEs)
    assert not [w for w in warnings if w.startswith("Request attempt #2")], "kopf's retry chatter"
    assert len(warnings) <= 12, warnings
    restored = [ln["message"] for ln in lines if str(ln.get("message", "")).startswith("Watch of ")
                and "restored" in ln["message"]]
    assert restored, "no line saying the watches are back"
