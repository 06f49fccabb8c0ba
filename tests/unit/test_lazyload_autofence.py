"""Auto-fence: upstream's precedence of slime.io/serviceFenced, namespace scope, and what it may delete."""

from __future__ import annotations

from typing import Any

import pytest

from slime.framework.config import GlobalConfig
from slime.modules.lazyload.autofence import desired_fences, is_fenced, namespace_in_scope, plan
from slime.modules.lazyload.config import Fence

G = GlobalConfig().with_defaults()


def svc(name: str, ns: str = "default", fenced: str | None = None, selector: bool = True) -> dict[str, Any]:
    labels = {"slime.io/serviceFenced": fenced} if fenced is not None else {}
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"selector": {"app": name}} if selector else {"type": "ExternalName"}}


def ns(name: str, fenced: str | None = None, **labels: str) -> dict[str, Any]:
    if fenced is not None:
        labels["slime.io/serviceFenced"] = fenced
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def fence(name: str, namespace: str = "default", ours: bool = True, rev: str | None = None) -> dict[str, Any]:
    labels = {"app.kubernetes.io/created-by": "fence-controller"} if ours else {}
    if rev is not None:
        labels["istio.io/rev"] = rev
    return {"kind": "ServiceFence", "metadata": {"name": name, "namespace": namespace, "labels": labels}}


@pytest.mark.parametrize(("service", "namespace", "default", "fenced"), [
    ("false", "true", True, False),  # Service label beats Namespace label
    ("true", "false", False, True),
    (None, "false", True, False),  # Namespace label beats defaultFence
    (None, "true", False, True),
    (None, None, True, True),
    (None, None, False, False),
    ("yes", "maybe", True, True),  # other values fall through
])
def test_precedence(service: str | None, namespace: str | None, default: bool, fenced: bool) -> None:
    assert is_fenced(svc("a", fenced=service), ns("default", namespace), Fence(defaultFence=default)) is fenced


def test_desired_fences_shape_and_selectorless_services() -> None:
    out = desired_fences([svc("b"), svc("a"), svc("ext", selector=False)], [ns("default")], Fence(defaultFence=True),
                         GlobalConfig(selfResourceRev="canary").with_defaults())
    assert out == [{
        "apiVersion": "microservice.slime.io/v1alpha1", "kind": "ServiceFence",
        "metadata": {"name": n, "namespace": "default",
                     "labels": {"app.kubernetes.io/created-by": "fence-controller", "istio.io/rev": "canary"}},
        "spec": {"enable": True, "workloadSelector": {"fromService": True}}} for n in ("a", "b")]


def test_namespace_scope() -> None:
    assert not namespace_in_scope("a", {}, Fence(blackNamespaceList="a,b"))
    assert namespace_in_scope("ab", {}, Fence(blackNamespaceList="a,b"))
    assert namespace_in_scope("b", {}, Fence(whiteNamespaceList="a, b"))
    assert not namespace_in_scope("c", {}, Fence(whiteNamespaceList="a,b"))
    sel = Fence.model_validate({"managementSelectors": [
        {"matchLabels": {"mesh": "on"}}, {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["x"]}]}]})
    assert namespace_in_scope("a", {"mesh": "on"}, sel) and namespace_in_scope("a", {"tier": "x"}, sel)
    assert not namespace_in_scope("a", {"mesh": "off"}, sel)
    nots = Fence.model_validate({"managementSelectors": [{"matchExpressions": [
        {"key": "legacy", "operator": "DoesNotExist"}, {"key": "env", "operator": "NotIn", "values": ["dev"]}]}]})
    assert namespace_in_scope("a", {"env": "prod"}, nots) and not namespace_in_scope("a", {"legacy": ""}, nots)


def test_plan_creates_missing_and_deletes_only_its_own() -> None:
    config = Fence(autoFence=True, defaultFence=True, blackNamespaceList="out")
    services = [svc("a"), svc("b"), svc("c", fenced="false"), svc("d", ns="out")]
    fences = [fence("b"), fence("c"), fence("d", "out"), fence("gone"), fence("manual", ours=False),
              fence("c2", ours=False)]
    p = plan(services, [ns("default"), ns("out")], fences, config, G)
    assert [f["metadata"]["name"] for f in p.create] == ["a"]
    assert p.delete == [("default", "c"), ("default", "gone"), ("out", "d")]


def test_plan_never_replaces_a_fence_of_the_same_name() -> None:
    p = plan([svc("a")], [], [fence("a", ours=False)], Fence(autoFence=True, defaultFence=True), G)
    assert p.create == [] and p.delete == []


def test_autofence_off_creates_nothing_and_removes_its_own() -> None:
    """A deleted fence does not come back with autoFence off (upstream's #517); hand-made ones stay."""
    p = plan([svc("a"), svc("b")], [], [fence("b"), fence("m", ours=False)], Fence(defaultFence=True), G)
    assert p.create == [] and p.delete == [("default", "b")]


def test_plan_leaves_other_revisions_alone() -> None:
    g = GlobalConfig(istioRev="canary", strictRev=True).with_defaults()
    p = plan([], [], [fence("a", rev="stable"), fence("b", rev="canary")], Fence(autoFence=True), g)
    assert p.delete == [("default", "b")]


def pod(name: str, ns_: str, labels: dict[str, str], ip: str = "10.0.0.1") -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": name, "namespace": ns_, "labels": labels},
            "status": {"podIP": ip} if ip else {}}


def test_workload_fences_from_pod_labels() -> None:
    from slime.modules.lazyload.autofence import desired_workload_fences, workload_ip_index

    config = Fence(fenceLabelKeyAlias="app:foo", blackNamespaceList="out")
    pods = [pod("p1", "default", {"app": "bar"}), pod("p2", "default", {"app": "bar"}, "10.0.0.2"),
            pod("p3", "default", {"app": "Bad_Value"}), pod("p4", "default", {"app": "baz"}, ip=""),
            pod("p5", "out", {"app": "bar"}), pod("p6", "default", {"other": "x"})]
    [fence] = desired_workload_fences(pods, [], config, G)
    assert fence["metadata"] == {"name": "foo-bar.workload.identity", "namespace": "default",
                                 "labels": {"app.kubernetes.io/created-by": "fence-controller"}}
    assert fence["spec"] == {"enable": True, "workloadSelector": {"labels": {"app": "bar"}}}
    assert workload_ip_index(pods, config)["10.0.0.2"] == [("default", "foo-bar.workload.identity")]
    assert desired_workload_fences(pods, [], Fence(fenceLabelKeyAlias="app"), G)[0]["metadata"]["name"] == (
        "app-bar.workload.identity")


def test_workload_fence_goes_with_its_last_pod() -> None:
    config = Fence(fenceLabelKeyAlias="app:foo")
    ours = fence("foo-bar.workload.identity")
    assert plan([], [], [ours], config, G, [pod("p1", "default", {"app": "bar"})]).delete == []
    assert plan([], [], [ours], config, G, []).delete == [("default", "foo-bar.workload.identity")]
