"""lazyload on the real local control plane (etcd + kube-apiserver + Istio's CRDs; no node).

* Every Sidecar and fallback object of the goldens is accepted by the apiserver with Istio's real CRDs
  (server-side dry run), and by ``istioctl validate`` when an istioctl is at hand.
* ServiceFences in upstream's encodings (quoted int64, enum numbers) are accepted, and so is the status
  the render writes (through the status subresource).
* Auto-fence creates and deletes through the real API, never touching a hand-made fence.
* The fallback sync applies its objects, refuses to overwrite a foreign one, and removes its leftovers.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from slime.framework.config import load_module_configs
from slime.framework.kinds import CONFIG_MAP, SERVICE
from slime.framework.kube import Kube
from slime.framework.module import ObjectsView, Settings
from slime.modules.lazyload import MODULE
from slime.modules.lazyload.autofence import plan
from slime.modules.lazyload.config import Fence
from slime.modules.lazyload.globalsidecar import render_fallback
from slime.modules.lazyload.writer import FENCE, apply_plan, sync_fallback

GOLDEN = Path(__file__).parents[1] / "golden" / "lazyload"


def kubectl(kubeconfig: Path, *args: str, docs: list[dict[str, Any]] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args],  # noqa: S607
                          input=yaml.safe_dump_all(docs) if docs is not None else None,
                          capture_output=True, text=True, timeout=120, check=False)


def _moved(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    obj["metadata"].pop("ownerReferences", None)
    return obj


def golden_objects() -> list[dict[str, Any]]:
    out = []
    for path in sorted(GOLDEN.rglob("*.out.yaml")):
        out += [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] != "ServiceFence"]
    return out


def test_goldens_are_accepted_by_istios_crds(kubeconfig: Path, namespace: str) -> None:
    objects = [_moved(o, namespace) for o in golden_objects()]
    kinds = {o["kind"] for o in objects}
    assert {"Sidecar", "EnvoyFilter", "Deployment", "Service", "ConfigMap"} <= kinds
    seen: set[tuple[str, str]] = set()
    unique = []
    for o in objects:  # one object per (kind, name) in a namespace
        key = (o["kind"], o["metadata"]["name"])
        if key not in seen:
            seen.add(key)
            unique.append(o)
    result = kubectl(kubeconfig, "apply", "--dry-run=server", "-f", "-", docs=unique)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(unique)


def istioctl() -> str | None:
    found = shutil.which("istioctl")
    if found:
        return found
    cached = sorted(Path.home().glob(".cache/slime/istio/*/istioctl")) + sorted(
        Path.home().glob(".cache/slime/istio/*/bin/istioctl"))
    return str(cached[-1]) if cached else None


def test_istioctl_validates_every_rendered_sidecar(tmp_path: Path) -> None:
    binary = istioctl()
    if binary is None:
        pytest.skip("istioctl not built yet (hack/ build scripts of the mesh test bed)")
    sidecars = [o for o in golden_objects() if o["kind"] == "Sidecar"]
    path = tmp_path / "sidecars.yaml"
    path.write_text(yaml.safe_dump_all(sidecars))
    result = subprocess.run([binary, "validate", "-f", str(path)], capture_output=True, text=True,  # noqa: S603
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_fence_in_upstream_encodings_and_our_status(kubeconfig: Path, namespace: str, k8s_api: Any) -> None:
    kube = Kube(k8s_api)
    fence = {"apiVersion": "microservice.slime.io/v1alpha1", "kind": "ServiceFence",
             "metadata": {"name": "ratings", "namespace": namespace},
             "spec": {"enable": True, "host": {"www.example.com": {"deadline": {"expire": {"seconds": "1700000000"}}},
                                               "a.b.svc.cluster.local": {"stable": {}}},
                      "workloadSelector": {"labels": {"app": "ratings"}}}}
    created = kube.create(fence)
    upstream_status = {"domains": {"a.b.svc.cluster.local": {"hosts": ["a.b.svc.cluster.local"]},
                                   "x.y": {"hosts": ["x.y"], "status": 2},
                                   "gone.x": {"hosts": ["gone.x"], "status": 0},
                                   "www.example.com": {"hosts": ["www.example.com"], "status": "EXPIRE"}},
                       "metricStatus": {'{destination_service="x.y"}': "1"}}
    kube.merge_patch(FENCE, namespace, "ratings", {"status": upstream_status}, subresource="status")
    current = kube.get(FENCE, namespace, "ratings")
    assert current is not None and current["status"]["domains"]["x.y"]["status"] == 2
    settings = Settings(name="lazyload", general=Fence(), globals=load_module_configs({"name": "lazyload"})[0].globals)
    rendered = MODULE.render(current, MODULE.context(current, ObjectsView([current]), settings))
    assert rendered.ready is not None and rendered.ready.status is True
    status = {**rendered.status, "conditions": [{"type": "Ready", "status": "True", "reason": rendered.ready.reason,
                                                 "message": rendered.ready.message,
                                                 "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    # The whole status is replaced (PUT /status, as upstream's status().update): with a JSON merge patch,
    # the key of a dropped domain and a stale `status: 2` of a domain now ACTIVE (left out) would stay.
    from kubernetes import client as k8s

    api = k8s.CustomObjectsApi(k8s_api)
    api.replace_namespaced_custom_object_status("microservice.slime.io", "v1alpha1", namespace, "servicefences",
                                                "ratings", {**current, "status": status})
    after = kube.get(FENCE, namespace, "ratings")
    assert after is not None
    domains = after["status"]["domains"]
    assert domains["x.y"] == {"hosts": ["x.y"]}  # learned: ACTIVE again, the stale number is gone
    assert domains["gone.x"]["status"] == "EXPIREWAIT" and domains["gone.x"]["expireAt"] > 1_700_000_000
    assert domains["www.example.com"]["status"] == "EXPIRE"
    assert after["status"]["conditions"][0]["reason"] == "SidecarRendered"
    assert after["metadata"]["uid"] == created["metadata"]["uid"]
    [sidecar] = rendered.objects or []
    result = kubectl(kubeconfig, "apply", "-f", "-", docs=[sidecar])
    assert result.returncode == 0, result.stderr


def _svc(name: str, namespace: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace,
                                                                "labels": labels or {}},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 9080}]}}


def test_auto_fence_through_the_api(namespace: str, k8s_api: Any) -> None:
    kube = Kube(k8s_api)
    client = kube
    for svc in (_svc("a", namespace), _svc("b", namespace, {"slime.io/serviceFenced": "false"}), _svc("m", namespace)):
        kube.create(svc)
    manual = {"apiVersion": "microservice.slime.io/v1alpha1", "kind": "ServiceFence",
              "metadata": {"name": "m", "namespace": namespace}, "spec": {"enable": True}}
    kube.create(manual)
    config = Fence(autoFence=True, defaultFence=True)
    glob = load_module_configs({"name": "lazyload"})[0].globals

    def fences() -> dict[str, dict[str, Any]]:
        return {f["metadata"]["name"]: f for f in client.list(FENCE, namespace)}

    def services() -> list[dict[str, Any]]:
        return kube.list(SERVICE, namespace)

    outcome = apply_plan(client, plan(services(), [], list(fences().values()), config, glob))
    assert outcome.errors == [] and outcome.written == [f"ServiceFence {namespace}/a"]
    now = fences()
    assert sorted(now) == ["a", "m"]
    assert now["a"]["metadata"]["labels"] == {"app.kubernetes.io/created-by": "fence-controller"}
    assert now["a"]["spec"] == {"enable": True, "workloadSelector": {"fromService": True}}
    assert apply_plan(client, plan(services(), [], list(now.values()), config, glob)).written == []  # idempotent

    kube.delete(SERVICE, namespace, "a")
    kube.delete(SERVICE, namespace, "m")
    outcome = apply_plan(client, plan(services(), [], list(fences().values()), config, glob))
    assert outcome.deleted == [f"ServiceFence {namespace}/a"]
    assert sorted(fences()) == ["m"]  # the hand-made fence stays though its Service is gone


def test_fallback_sync_owns_only_its_objects(namespace: str, k8s_api: Any) -> None:
    kube = Kube(k8s_api)
    client = kube
    foreign = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "lazyload-accesslog-source",
                                                                      "namespace": namespace}, "data": {"x": "mine"}}
    kube.create(foreign)

    def settings(source: str) -> Settings:
        cfg = load_module_configs({"name": "lazyload", "general": {
            "wormholePort": ["9080"], "clusterGsNamespace": namespace, "metricSourceType": source},
            "global": {"istioNamespace": namespace}})[0]
        return Settings(name=cfg.name, general=Fence.model_validate(cfg.general), globals=cfg.globals)

    desired = render_fallback(settings("accesslog"))
    outcome = sync_fallback(client, desired, "lazyload", [namespace])
    assert outcome.errors == []
    assert outcome.conflicts == [f"ConfigMap {namespace}/lazyload-accesslog-source exists and is not this module's "
                                 "(label lazyload.slime.io/fallback)"]
    assert len(outcome.written) == len(desired) - 1
    cm = kube.get(CONFIG_MAP, namespace, "lazyload-accesslog-source")
    assert cm is not None and cm["data"] == {"x": "mine"}

    outcome = sync_fallback(client, render_fallback(settings("prometheus")), "lazyload", [namespace])
    assert outcome.deleted == [f"EnvoyFilter {namespace}/global-sidecar-accesslog"]
    names = {(o["kind"], o["metadata"]["name"]) for o in render_fallback(settings("prometheus"))}
    assert ("EnvoyFilter", "global-sidecar-accesslog") not in names


def test_status_writer_replaces_dropped_domains(namespace: str, k8s_api: Any) -> None:
    from slime.framework.status import StatusWriter

    kube = Kube(k8s_api)
    fence = kube.create({"apiVersion": "microservice.slime.io/v1alpha1", "kind": "ServiceFence",
                         "metadata": {"name": "f", "namespace": namespace},
                         "spec": {"enable": True, "workloadSelector": {"labels": {"app": "f"}}}})
    kube.merge_patch(FENCE, namespace, "f", {"status": {
        "domains": {"gone.x.svc.cluster.local": {"hosts": ["gone.x.svc.cluster.local"], "status": "EXPIREWAIT",
                                                 "expireAt": 1}},
        "metricStatus": {'{destination_service="gone.x.svc.cluster.local"}': "1"}}}, subresource="status")
    current = kube.get(FENCE, namespace, "f")
    assert current is not None
    settings = Settings(name="lazyload", general=Fence(), globals=load_module_configs({"name": "lazyload"})[0].globals)
    rendered = MODULE.render(current, MODULE.context(current, ObjectsView([current]), settings))
    # Still learned (metricStatus), the domain is ACTIVE again: no `status`, no `expireAt` any more.
    assert rendered.status["domains"] == {"gone.x.svc.cluster.local": {"hosts": ["gone.x.svc.cluster.local"]}}
    StatusWriter(kube).write(current, rendered, [])
    after = kube.get(FENCE, namespace, "f")
    assert after is not None and after["status"]["domains"] == rendered.status["domains"], after["status"]
    # Forgotten (metricStatus emptied, the grace period over): the domain goes from the stored status too.
    gone = {**after, "status": {**after["status"], "metricStatus": {},
                                "domains": {"gone.x.svc.cluster.local": {"hosts": ["gone.x.svc.cluster.local"],
                                                                         "status": "EXPIREWAIT", "expireAt": 1}}}}
    dropped = MODULE.render(gone, MODULE.context(gone, ObjectsView([gone]), settings))
    assert dropped.status["domains"] == {}
    StatusWriter(kube).write(after, dropped, [])
    final = kube.get(FENCE, namespace, "f")
    assert final is not None and final["status"].get("domains", {}) == {}, final["status"]
    assert fence["metadata"]["uid"] == after["metadata"]["uid"]
