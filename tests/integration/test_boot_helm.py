"""The slime-boot Helm chart with real Helm: lint clean, ``helm template`` as in the golden file, the
values schema refusing bad values, its generated parts (CRDs, ClusterRole) current, and
``helm install`` against the real apiserver: applied, its Deployment created, its RBAC enough for
the boot operator to deploy modules (it creates their roles, which Kubernetes allows only to a
user holding those permissions), ``helm uninstall`` leaving only the CRDs.

The golden (tests/golden/boot/chart/) is rewritten by
``pytest tests/integration/test_boot_helm.py --update-goldens``: its ClusterRole follows the modules'."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from slime.crds import chart_cluster_role
from tests.golden import conftest as golden_files
from tests.helm import CHART, REPO, helm
from tests.integration.operator_proc import Operator, wait_until

golden = golden_files.golden  # the golden fixture (--update-goldens rewrites)

GOLDEN = REPO / "tests" / "golden" / "boot" / "chart" / "helm-template.yaml"


def test_lint_is_clean(helm_bin: Path) -> None:
    out = helm(helm_bin, "lint", "--strict", str(CHART))
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout, out.stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


def test_template_is_the_golden(helm_bin: Path, golden: Callable[[Path, list[Any]], None]) -> None:
    out = helm(helm_bin, "template", "slime-boot", str(CHART), "--namespace", "mesh-operator", "--include-crds")
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds.count("CustomResourceDefinition") == len(list((CHART / "crds").glob("*.yaml")))
    golden(GOLDEN, [d for d in docs if d["kind"] != "CustomResourceDefinition"])


def test_template_operator_is_hardened(helm_bin: Path) -> None:
    docs = [d for d in yaml.safe_load_all(helm(helm_bin, "template", "x", str(CHART)).stdout) if d]
    [dep] = [d for d in docs if d["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["args"][:3] == ["run", "--modules", "boot"]
    [role] = [d for d in docs if d["kind"] == "ClusterRole"]
    assert all("*" not in r["verbs"] + r["resources"] for r in role["rules"])
    assert not any({"escalate", "bind", "impersonate"} & set(r["verbs"]) for r in role["rules"])


@pytest.mark.parametrize(("values", "message"), [
    (["--set", "logFormat=xml"], "/logFormat"),
    (["--set", "imag.tag=x"], "additional properties 'imag' not allowed"),
    (["--set", "modules.upstreamImages=maybe"], "/modules/upstreamImages"),
    (["--set", "watchNamespaces[0]=Not_A_Namespace"], "/watchNamespaces/0"),
    (["--set", "metrics.port=80"], "/metrics/port"),
])
def test_schema_rejects_a_bad_value(helm_bin: Path, values: list[str], message: str) -> None:
    out = helm(helm_bin, "template", "x", str(CHART), *values, check=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr


def test_generated_parts_are_current() -> None:
    assert (CHART / "templates" / "clusterrole.yaml").read_text() == chart_cluster_role(), "run `make crds`"
    ours = {p.name: p.read_text() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert chart == ours, "run `make crds`"


def kubectl(kubeconfig: Path, *args: str) -> str:
    return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def sa_kubeconfig(admin: Path, namespace: str, account: str, out: Path) -> Path:
    token = kubectl(admin, "-n", namespace, "create", "token", account, "--duration=1h").strip()
    cfg = yaml.safe_load(admin.read_text())
    cfg["users"] = [{"name": account, "user": {"token": token}}]
    for ctx in cfg["contexts"]:
        ctx["context"]["user"] = account
    out.write_text(yaml.safe_dump(cfg))
    return out


def test_install_runs_boot_with_the_charts_rbac(helm_bin: Path, kubeconfig: Path, k8s_api: k8s.ApiClient,
                                                namespace: str, tmp_path: Path) -> None:
    release = f"b{uuid.uuid4().hex[:8]}"
    fullname = f"{release}-slime-boot"
    helm(helm_bin, "install", release, str(CHART), "--kubeconfig", str(kubeconfig), "--namespace", namespace)
    apps, rbac = k8s.AppsV1Api(k8s_api), k8s.RbacAuthorizationV1Api(k8s_api)
    try:
        dep = apps.read_namespaced_deployment(fullname, namespace)
        assert dep.spec.template.spec.containers[0].args[:3] == ["run", "--modules", "boot"]
        config = k8s.CoreV1Api(k8s_api).read_namespaced_config_map(fullname, namespace).data["config.yaml"]
        (tmp_path / "config.yaml").write_text(config)
        # The operator as the chart's ServiceAccount (the Pod cannot run here: no node).
        op = Operator(sa_kubeconfig(kubeconfig, namespace, fullname, tmp_path / "sa.kubeconfig"),
                      tmp_path / "boot.log", priority=1, modules="boot",
                      extra=["--config", str(tmp_path / "config.yaml"), "--peering", fullname]).wait_alive()
        try:
            api = k8s.CustomObjectsApi(k8s_api)
            spec = {"namespace": namespace, "module": [{"name": n, "kind": n, "enable": True}
                                                       for n in ("limiter", "plugin", "lazyload")]}
            api.create_namespaced_custom_object("config.netease.com", "v1alpha1", namespace, "slimeboots", {
                "apiVersion": "config.netease.com/v1alpha1", "kind": "SlimeBoot",
                "metadata": {"name": "all", "namespace": namespace}, "spec": spec})

            def ready() -> Any:
                obj = api.get_namespaced_custom_object("config.netease.com", "v1alpha1", namespace, "slimeboots",
                                                       "all")
                conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}
                return conds.get("Ready", {}).get("status") == "True" and obj

            wait_until(ready, 60, f"SlimeBoot Ready (log: {op.log_path})")
            for name in ("limiter", "plugin", "lazyload"):
                assert rbac.read_cluster_role(f"slime.{namespace}.{name}").rules
                assert rbac.read_cluster_role_binding(f"slime.{namespace}.{name}").subjects[0].name == name
                assert apps.read_namespaced_deployment(name, namespace).spec.template.spec.service_account_name \
                    == name
            assert "forbidden" not in op.output().lower(), op.output()[-3000:]
            api.delete_namespaced_custom_object("config.netease.com", "v1alpha1", namespace, "slimeboots", "all")
            wait_until(lambda: not rbac.list_cluster_role(label_selector="app.kubernetes.io/part-of=slime",
                                                          field_selector=f"metadata.name=slime.{namespace}.limiter")
                       .items, 30, "module roles removed")
        finally:
            assert op.stop() == 0
    finally:
        helm(helm_bin, "uninstall", release, "--kubeconfig", str(kubeconfig), "--namespace", namespace)
    for read in (lambda: apps.read_namespaced_deployment(fullname, namespace),
                 lambda: rbac.read_cluster_role(fullname), lambda: rbac.read_cluster_role_binding(fullname),
                 lambda: k8s.CustomObjectsApi(k8s_api).get_cluster_custom_object(
                     "kopf.dev", "v1", "clusterkopfpeerings", fullname)):  # the release's, not left behind
        with pytest.raises(ApiException) as e:
            read()
        assert e.value.status == 404
    crd = k8s.ApiextensionsV1Api(k8s_api).read_custom_resource_definition("slimeboots.config.netease.com")
    assert crd.metadata.name  # Helm leaves CRDs (documented)
