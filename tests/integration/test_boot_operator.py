"""The boot module in `slime run` against the real control plane (apiserver + controller-manager; no
node, so Deployments get ReplicaSets but no running Pods): a SlimeBoot's children are created exactly
as ``slime render`` prints them (RBAC included), a config change rolls the Deployment (a new
pod-template hash), deleting it removes everything (cluster-scoped objects too), two SlimeBoots in
different namespaces do not collide, one deploying over another's objects is told so, and a foreign
SlimeBoot CRD is reported at start-up."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from slime.framework import kinds
from slime.framework.kube import Kube
from slime.framework.sync import contains
from slime.render import Source, render_sources
from tests.integration.operator_proc import Operator, wait_until

GROUP, VERSION, PLURAL = "config.netease.com", "v1alpha1", "slimeboots"
CRD_NAME = "slimeboots.config.netease.com"


@pytest.fixture(scope="module")
def boot_operator(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = Operator(kubeconfig, tmp_path_factory.mktemp("boot") / "boot.log", modules="boot").wait_alive()
    yield op
    assert op.stop() == 0


@pytest.fixture
def other_namespace(k8s_api: k8s.ApiClient) -> Iterator[str]:
    core = k8s.CoreV1Api(k8s_api)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def slimeboot(namespace: str, name: str, target: str, modules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SlimeBoot", "metadata": {"name": name, "namespace": namespace},
            "spec": {"namespace": target, "module": modules}}


def condition(api: k8s.ApiClient, namespace: str, name: str, type_: str = "Ready") -> dict[str, Any] | None:
    obj = k8s.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    return next((c for c in status.get("conditions", []) if c["type"] == type_), None)


def read(api: k8s.ApiClient, obj: dict[str, Any]) -> dict[str, Any] | None:
    meta = obj["metadata"]
    return Kube(api).get(kinds.of(obj), meta.get("namespace"), meta["name"])


def rendered(cr: dict[str, Any]) -> list[dict[str, Any]]:
    target = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": cr["spec"]["namespace"]}}
    out = render_sources([Source(cr, "cr"), Source(target, "ns")], [], {})
    assert out.errors == []
    return out.objects


def replica_set_hashes(api: k8s.ApiClient, namespace: str, deployment: str) -> set[str]:
    sets = k8s.AppsV1Api(api).list_namespaced_replica_set(namespace).items
    return {rs.metadata.labels["pod-template-hash"] for rs in sets
            if any(ref.name == deployment for ref in rs.metadata.owner_references or [])}


def test_children_rbac_rollout_and_delete(boot_operator: Operator, k8s_api: k8s.ApiClient, namespace: str) -> None:
    api = k8s.CustomObjectsApi(k8s_api)
    modules = [{"name": "limiter", "kind": "limiter", "enable": True, "general": {"refresh": "5s"}},
               {"name": "plugin", "kind": "plugin", "enable": True}]
    cr = slimeboot(namespace, "sb", namespace, modules)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, cr)
    ready = wait_until(lambda: condition(k8s_api, namespace, "sb"), 30, "Ready")
    assert ready["status"] == "True", ready
    want = rendered(cr)
    assert len(want) == 14  # 7 objects per module
    for obj in want:  # every child as slime render prints it; the roles exactly
        live = read(k8s_api, obj)
        assert live is not None and contains(live, obj), obj["kind"] + " " + obj["metadata"]["name"]
        if obj["kind"] == "ClusterRole":
            assert live["rules"] == obj["rules"]
    limiter_role = read(k8s_api, next(o for o in want if o["kind"] == "ClusterRole" and "limiter" in
                                      o["metadata"]["name"]))
    assert limiter_role is not None
    assert not any("sidecars" in r["resources"] and "create" in r["verbs"] for r in limiter_role["rules"])
    first = wait_until(lambda: replica_set_hashes(k8s_api, namespace, "limiter"), 30, "a ReplicaSet")

    modules[0]["general"] = {"refresh": "9s"}  # the limiter's config changes: its Pods roll
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "sb", {"spec": {"module": modules}})
    wait_until(lambda: replica_set_hashes(k8s_api, namespace, "limiter") - first, 30, "a new ReplicaSet")
    assert replica_set_hashes(k8s_api, namespace, "plugin") and len(replica_set_hashes(k8s_api, namespace,
                                                                                        "plugin")) == 1
    cm = k8s.CoreV1Api(k8s_api).read_namespaced_config_map("limiter", namespace)
    assert '"refresh":"9s"' in cm.data["cfg"]

    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "sb")
    wait_until(lambda: all(read(k8s_api, o) is None for o in want), 60, "every child gone")

    def released() -> bool:  # its finalizer goes once the children are gone
        try:
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "sb")
        except ApiException as e:
            return e.status == 404
        return False

    wait_until(released, 30, "the SlimeBoot gone")


def test_two_slimeboots_in_different_namespaces(boot_operator: Operator, k8s_api: k8s.ApiClient, namespace: str,
                                               other_namespace: str) -> None:
    api = k8s.CustomObjectsApi(k8s_api)
    rbac = k8s.RbacAuthorizationV1Api(k8s_api)
    limiter = [{"name": "limiter", "kind": "limiter", "enable": True}]
    for ns in (namespace, other_namespace):
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, slimeboot(ns, "sb", ns, limiter))
    for ns in (namespace, other_namespace):
        ready = wait_until(lambda ns=ns: condition(k8s_api, ns, "sb"), 30, "Ready")
        assert ready["status"] == "True", ready
        binding = rbac.read_cluster_role_binding(f"slime.{ns}.limiter")
        assert [(s.name, s.namespace) for s in binding.subjects] == [("limiter", ns)]
    # A third, elsewhere, deploying into the first one's namespace: told who has the objects, nothing touched.
    api.create_namespaced_custom_object(GROUP, VERSION, other_namespace, PLURAL,
                                        slimeboot(other_namespace, "intruder", namespace, limiter))
    cond = wait_until(lambda: condition(k8s_api, other_namespace, "intruder"), 30, "Ready of the intruder")
    assert cond["status"] == "False" and cond["reason"] == "NameConflict", cond
    assert f"SlimeBoot {namespace}/sb" in cond["message"]
    api.delete_namespaced_custom_object(GROUP, VERSION, other_namespace, PLURAL, "intruder")
    api.delete_namespaced_custom_object(GROUP, VERSION, other_namespace, PLURAL, "sb")

    def gone() -> bool:
        try:
            rbac.read_cluster_role(f"slime.{other_namespace}.limiter")
        except ApiException as e:
            return e.status == 404
        return False

    wait_until(gone, 30, "the second one's role gone")
    assert rbac.read_cluster_role(f"slime.{namespace}.limiter").rules  # the first one's untouched
    assert k8s.AppsV1Api(k8s_api).read_namespaced_deployment("limiter", namespace).metadata.labels[
        "slime.io/owner-kind"] == "slimeboot"
    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "sb")


def test_children_in_another_namespace(boot_operator: Operator, k8s_api: k8s.ApiClient, namespace: str,
                                       other_namespace: str) -> None:
    api = k8s.CustomObjectsApi(k8s_api)
    cr = slimeboot(namespace, "remote", other_namespace, [{"name": "plugin", "kind": "plugin", "enable": True}])
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, cr)
    wait_until(lambda: (condition(k8s_api, namespace, "remote") or {}).get("status") == "True", 30, "Ready")
    obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "remote")
    assert "slime.io/children" in obj["metadata"]["finalizers"]
    want = rendered(cr)
    assert all(read(k8s_api, o) is not None for o in want)
    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "remote")
    wait_until(lambda: all(read(k8s_api, o) is None for o in want), 30, "children elsewhere removed")


def test_a_missing_namespace_is_reported(boot_operator: Operator, k8s_api: k8s.ApiClient, namespace: str) -> None:
    api = k8s.CustomObjectsApi(k8s_api)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                        slimeboot(namespace, "nowhere", "no-such-ns",
                                                  [{"name": "plugin", "kind": "plugin", "enable": True}]))
    cond = wait_until(lambda: condition(k8s_api, namespace, "nowhere"), 30, "Ready")
    assert cond["status"] == "False" and cond["reason"] == "NamespaceNotFound", cond


def test_foreign_crd_is_reported_at_start_up(kubeconfig: Path, k8s_api: k8s.ApiClient, namespace: str,
                                             tmp_path: Path) -> None:
    ext = k8s.ApiextensionsV1Api(k8s_api)
    ext.patch_custom_resource_definition(CRD_NAME, {"metadata": {"labels": {"app.kubernetes.io/part-of": None}}})
    try:
        op = Operator(kubeconfig, tmp_path / "boot.log", modules="boot").wait_alive()
        try:
            k8s.CustomObjectsApi(k8s_api).create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL,
                slimeboot(namespace, "sb", namespace, [{"name": "plugin", "kind": "plugin", "enable": True}]))
            cond = wait_until(lambda: condition(k8s_api, namespace, "sb", "CRDCompatible"), 30, "CRDCompatible")
            assert cond["status"] == "False" and cond["reason"] == "ForeignCRD"
            assert "Migrating from upstream" in cond["message"]
            lines = [line for line in op.output().splitlines() if "foreign SlimeBoot CRD" in line]
            assert len(lines) == 1, op.output()[-2000:]
            k8s.CustomObjectsApi(k8s_api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "sb")
            wait_until(lambda: not k8s.RbacAuthorizationV1Api(k8s_api).list_cluster_role(
                field_selector=f"metadata.name=slime.{namespace}.plugin").items, 30, "cleaned up")
        finally:
            assert op.stop() == 0
    finally:
        ext.patch_custom_resource_definition(CRD_NAME, {"metadata": {"labels": {"app.kubernetes.io/part-of": "slime"}}})
