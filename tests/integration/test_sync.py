"""sync_children on the real apiserver: create, no-op, update only on a real difference,
delete extras, and never touch objects of another owner."""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s

from slime.framework import observability
from slime.framework.kinds import CONFIG_MAP
from slime.framework.kube import Kube
from slime.framework.sync import OWNER_UID, sync_children


def writes() -> float:
    return sum(s.value for m in observability.API_WRITES.collect() for s in m.samples if s.name.endswith("_total"))


def owner(api: k8s.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    cm = k8s.CoreV1Api(api).create_namespaced_config_map(namespace, {"metadata": {"name": name}})
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "uid": cm.metadata.uid}}


def child(name: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": value}}


def test_sync_writes_only_differences(k8s_api: k8s.ApiClient, namespace: str) -> None:
    kube = Kube(k8s_api)
    core = k8s.CoreV1Api(k8s_api)
    a, b = owner(k8s_api, namespace, "owner-a"), owner(k8s_api, namespace, "owner-b")
    sync_children(kube, b, [child("b-1", "x")], [CONFIG_MAP])

    first = sync_children(kube, a, [child("a-1", "1"), child("a-2", "2")], [CONFIG_MAP])
    assert sorted(first.applied) == [f"ConfigMap {namespace}/a-1", f"ConfigMap {namespace}/a-2"]
    made = core.read_namespaced_config_map("a-1", namespace)
    assert made.metadata.labels[OWNER_UID] == a["metadata"]["uid"]
    assert made.metadata.owner_references[0].uid == a["metadata"]["uid"]
    assert any(f.manager == "slime" for f in made.metadata.managed_fields)

    before = writes()
    again = sync_children(kube, a, [child("a-1", "1"), child("a-2", "2")], [CONFIG_MAP])
    assert not again.changed and writes() == before  # nothing changed: nothing written

    changed = sync_children(kube, a, [child("a-1", "one")], [CONFIG_MAP])
    assert changed.applied == [f"ConfigMap {namespace}/a-1"]
    assert changed.deleted == [f"ConfigMap {namespace}/a-2"]
    assert core.read_namespaced_config_map("a-1", namespace).data == {"v": "one"}
    names = {cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items}
    assert "a-2" not in names and "b-1" in names  # another owner's child is left alone


def test_sync_from_previous_children_lists_nothing(k8s_api: k8s.ApiClient, namespace: str) -> None:
    kube = Kube(k8s_api)
    core = k8s.CoreV1Api(k8s_api)
    a = owner(k8s_api, namespace, "owner-a")
    first = sync_children(kube, a, [child("a-1", "1"), child("a-2", "2")], [CONFIG_MAP])
    assert first.children == {("ConfigMap", namespace, "a-1"), ("ConfigMap", namespace, "a-2")}

    lists = []
    real_list = kube.list
    kube.list = lambda *args, **kw: lists.append(args) or real_list(*args, **kw)  # type: ignore[method-assign]
    second = sync_children(kube, a, [child("a-1", "one"), child("a-3", "3")], [CONFIG_MAP], first.children)
    assert lists == []
    assert sorted(second.applied) == [f"ConfigMap {namespace}/a-1", f"ConfigMap {namespace}/a-3"]
    assert second.deleted == [f"ConfigMap {namespace}/a-2"]
    names = {cm.metadata.name: cm.data for cm in core.list_namespaced_config_map(namespace).items}
    assert names["a-1"] == {"v": "one"} and names["a-3"] == {"v": "3"} and "a-2" not in names

    # A child deleted by someone else meanwhile: not an error.
    core.delete_namespaced_config_map("a-3", namespace)
    third = sync_children(kube, a, [child("a-1", "one")], [CONFIG_MAP], second.children)
    assert third.deleted == [] and third.children == {("ConfigMap", namespace, "a-1")}
