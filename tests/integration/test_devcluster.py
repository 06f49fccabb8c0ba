"""The local control plane itself: apiserver version, CRDs, and the KCM controllers we rely on."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from slime.devcluster import DevCluster, pinned_k8s_version


def wait_for(what: str, check: Callable[[], Any], timeout: float = 40.0, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def gone(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


def test_version_is_pinned_release(k8s_api: ApiClient) -> None:
    info = client.VersionApi(k8s_api).get_code()
    assert info.git_version == pinned_k8s_version()
    assert (info.major, info.minor) == ("1", pinned_k8s_version().split(".")[1])


def test_crds_established(dev_cluster: DevCluster, k8s_api: ApiClient) -> None:
    names = [doc["metadata"]["name"]
             for path in dev_cluster.crd_paths
             for doc in yaml.safe_load_all(path.read_text())
             if doc and doc.get("kind") == "CustomResourceDefinition"]
    assert "envoyfilters.networking.istio.io" in names
    ext: Any = client.ApiextensionsV1Api(k8s_api)
    for name in names:
        raw = ext.read_custom_resource_definition(name, _preload_content=False)
        conditions = {c["type"]: c["status"] for c in json.loads(raw.data)["status"]["conditions"]}
        assert conditions.get("Established") == "True", name


def test_default_namespaces(k8s_api: ApiClient) -> None:
    core: Any = client.CoreV1Api(k8s_api)
    names = {ns.metadata.name for ns in core.list_namespace().items}
    assert {"default", "istio-system", "mesh-operator"} <= names


def test_deployment_creates_replicaset_and_pods(k8s_api: ApiClient, namespace: str) -> None:
    apps: Any = client.AppsV1Api(k8s_api)
    core: Any = client.CoreV1Api(k8s_api)
    labels = {"app": "web"}
    dep = apps.create_namespaced_deployment(namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "c", "image": "example.invalid/web:1"}]}}},
    })
    rs = wait_for("a ReplicaSet", lambda: apps.list_namespaced_replica_set(namespace).items)[0]
    assert rs.metadata.owner_references[0].uid == dep.metadata.uid
    pods = wait_for("2 pods", lambda: (p := core.list_namespaced_pod(namespace).items) and len(p) == 2 and p)
    assert {p.metadata.owner_references[0].uid for p in pods} == {rs.metadata.uid}
    # Background deletion of the Deployment: the garbage collector removes ReplicaSet and Pods.
    apps.delete_namespaced_deployment("web", namespace)
    wait_for("ReplicaSet GC", lambda: not apps.list_namespaced_replica_set(namespace).items)
    wait_for("Pod GC", lambda: not core.list_namespaced_pod(namespace).items)


def test_owner_reference_gc_for_core_and_custom_resources(k8s_api: ApiClient, namespace: str) -> None:
    core: Any = client.CoreV1Api(k8s_api)
    custom: Any = client.CustomObjectsApi(k8s_api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "child", "ownerReferences": [ref]}})
    # An Istio CR owned by a core object, the shape slime's controllers produce.
    custom.create_namespaced_custom_object("networking.istio.io", "v1alpha3", namespace, "envoyfilters", {
        "apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
        "metadata": {"name": "child-ef", "ownerReferences": [ref]}, "spec": {"configPatches": []},
    })
    core.delete_namespaced_config_map("owner", namespace)
    wait_for("ConfigMap child GC", lambda: gone(lambda: core.read_namespaced_config_map("child", namespace)))
    wait_for("EnvoyFilter child GC", lambda: gone(lambda: custom.get_namespaced_custom_object(
        "networking.istio.io", "v1alpha3", namespace, "envoyfilters", "child-ef")))


def test_namespace_deletion_completes(k8s_api: ApiClient) -> None:
    core: Any = client.CoreV1Api(k8s_api)
    name = f"t-del-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "x"}})
    core.delete_namespace(name)
    wait_for(f"namespace {name} deleted", lambda: gone(lambda: core.read_namespace(name)), timeout=60)


def test_serviceaccount_and_root_ca_published(k8s_api: ApiClient, namespace: str) -> None:
    core: Any = client.CoreV1Api(k8s_api)
    wait_for("default ServiceAccount", lambda: not gone(lambda: core.read_namespaced_service_account(
        "default", namespace)))
    wait_for("kube-root-ca.crt", lambda: not gone(lambda: core.read_namespaced_config_map(
        "kube-root-ca.crt", namespace)))


def test_service_gets_cluster_ip(k8s_api: ApiClient, namespace: str) -> None:
    core: Any = client.CoreV1Api(k8s_api)
    svc = core.create_namespaced_service(namespace, {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "name": "http"}]},
    })
    assert svc.spec.cluster_ip.startswith("10.0.0.")


def test_kubectl_and_apply_yaml(dev_cluster: DevCluster, kubeconfig: Path, namespace: str) -> None:
    dev_cluster.apply_yaml([{"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": "applied", "namespace": namespace}, "data": {"k": "v"}}])
    out = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", "-n", namespace, "get", "configmap", "applied",
         "-o", "jsonpath={.data.k}"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert out == "v"
    assert "namespace/mesh-operator" in dev_cluster.kubectl("get", "namespaces", "-o", "name").split()
