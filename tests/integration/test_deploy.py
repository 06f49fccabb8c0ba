"""deploy/slime.yaml on the real apiserver: it applies, and its RBAC is enough for the
operator — `slime run` authenticates as the manifest's ServiceAccount and does its job."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from tests.integration.operator_proc import Operator, wait_until

REPO = Path(__file__).resolve().parents[2]


def kubectl(kubeconfig: Path, *args: str) -> str:
    return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def service_account_kubeconfig(admin: Path, out: Path) -> Path:
    token = kubectl(admin, "-n", "mesh-operator", "create", "token", "slime", "--duration=1h").strip()
    cfg = yaml.safe_load(admin.read_text())
    cfg["users"] = [{"name": "slime", "user": {"token": token}}]
    for ctx in cfg["contexts"]:
        ctx["context"]["user"] = "slime"
    out.write_text(yaml.safe_dump(cfg))
    return out


def test_manifest_rbac_lets_the_operator_work(kubeconfig: Path, k8s_api: k8s.ApiClient, namespace: str,
                                              tmp_path: Path) -> None:
    kubectl(kubeconfig, "apply", "--server-side", "-f", str(REPO / "deploy" / "slime.yaml"))
    sa_config = service_account_kubeconfig(kubeconfig, tmp_path / "sa.kubeconfig")
    config = yaml.safe_load(kubectl(kubeconfig, "-n", "mesh-operator", "get", "configmap", "slime-config",
                                    "-o", "yaml"))["data"]["config.yaml"]
    (tmp_path / "config.yaml").write_text(config)
    manifest = [d for d in yaml.safe_load_all((REPO / "deploy" / "slime.yaml").read_text()) if d]
    args = next(d for d in manifest if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    op = Operator(sa_config, tmp_path / "op.log", priority=5, modules=args[args.index("--modules") + 1],
                  extra=["--config", str(tmp_path / "config.yaml")]).wait_alive()
    try:
        core = k8s.CoreV1Api(k8s_api)
        core.create_namespaced_service(namespace, {"metadata": {"name": "web"},
                                                   "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
        limiter: dict[str, Any] = {
            "apiVersion": "microservice.slime.io/v1alpha2", "kind": "SmartLimiter",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"sets": {"_base": {"descriptor": [{"action": {"fill_interval": {"seconds": 1}, "quota": "5"},
                                                        "condition": "true", "target": {"port": 80}}]}}},
        }
        k8s.CustomObjectsApi(k8s_api).create_namespaced_custom_object(
            "microservice.slime.io", "v1alpha2", namespace, "smartlimiters", limiter)
        wait_until(lambda: kubectl(kubeconfig, "-n", namespace, "get", "envoyfilter", "web." + namespace + ".ratelimit",
                                   "-o", "name"), 30, "the EnvoyFilter written with the ServiceAccount's rights")
        status = wait_until(lambda: yaml.safe_load(kubectl(kubeconfig, "-n", namespace, "get", "sml", "web", "-o",
                                                           "yaml")).get("status"), 30, "status written")
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"])
        assert "forbidden" not in op.output().lower(), op.output()[-2000:]
    finally:
        assert op.stop() == 0
