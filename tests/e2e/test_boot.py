"""slime-boot end to end: ``helm install`` of the chart (real Helm) with the bed's image; the boot
operator's Pod goes Ready; upstream-style SlimeBoots become module Deployments whose Pods go Ready
and do their job (a limiter that limits real requests, a bundle, lazyload with its global-sidecar
forwarding a first call); a change rolls out; deleting a SlimeBoot removes what it created (cluster-
scoped objects included); two SlimeBoots in different namespaces do not collide; ``helm uninstall``
leaves only the CRDs.

The bed's own operator (deploy/slime.yaml, every module) is scaled to zero for this module: two
operators must not both act on the same CRs, and the lazyload module SlimeBoot deploys writes the
same cluster-wide fallback route (``istio-system/to-global-sidecar``) as the bed's. It is scaled
back afterwards, and its fallback route re-synced, before the other e2e tests run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from slime.devtools import xdscheck
from slime.devtools.prometheus import wait_until
from slime.meshbed import LAZYLOAD_PORT, MeshBed
from tests.compat import COMPAT, documents, require_compat
from tests.e2e.conftest import cr_ready, custom_object, envoyfilter, smart_limiter
from tests.e2e.test_plugin import lua_plugin, plugin_manager
from tests.helm import CHART, REPO, helm
from tests.integration.test_boot_operator import read, rendered

RELEASE = "slime-boot"  # the chart's fullname is the release's (it holds the chart name)
BED_OPERATOR = ("mesh-operator", "app.kubernetes.io/name=slime")
UPSTREAM_LIMITER = "limiter/test/e2e/testdata/install/samples/limiter/slimeboot_limiter.yaml"
UPSTREAM_LAZYLOAD = "lazyload/install/samples/lazyload/slimeboot_cluster_accesslog.yaml"


@dataclass
class Boot:
    bed: MeshBed
    helm_bin: Path
    namespace: str  # the release's
    installed: bool = False

    def helm(self, *args: str) -> Any:
        return helm(self.helm_bin, *args, "--kubeconfig", str(self.bed.kubeconfig), "--namespace", self.namespace)


def _scale_bed_operator(bed: MeshBed, replicas: int) -> None:
    bed.kubectl("scale", "-n", BED_OPERATOR[0], "deployment/slime", f"--replicas={replicas}")
    bed.wait_pods(*BED_OPERATOR, replicas)


@pytest.fixture(scope="module")
def boot(mesh_bed: MeshBed, helm_bin: Path) -> Iterator[Boot]:
    assert mesh_bed.images is not None
    repository, _, tag = mesh_bed.images.slime.name.rpartition(":")
    namespace = f"boot-{uuid.uuid4().hex[:6]}"
    _scale_bed_operator(mesh_bed, 0)
    mesh_bed.ensure_namespace(namespace)
    it = Boot(mesh_bed, helm_bin, namespace)
    try:
        it.helm("install", RELEASE, str(CHART), "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                "--set", "image.pullPolicy=Never", "--set", f"modules.envoyImage={mesh_bed.images.proxy.name}")
        it.installed = True
        mesh_bed.wait_pods(namespace, f"app.kubernetes.io/instance={RELEASE}", 1)
        yield it
    finally:
        if it.installed:
            it.helm("uninstall", RELEASE, "--wait")
        mesh_bed.kubectl("delete", "namespace", namespace, "--wait=false")
        _scale_bed_operator(mesh_bed, mesh_bed.operator_replicas)
        # the bed's lazyload takes its fallback route back (the SlimeBoot's pointed at its own global-sidecar)
        gs = "outbound|80||global-sidecar.mesh-operator.svc.cluster.local"
        wait_until(lambda: gs in json.dumps(envoyfilter(mesh_bed, "istio-system", "to-global-sidecar") or {}), 60,
                   what="the bed's fallback route restored")


def slimeboot(bed: MeshBed, path: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """An upstream SlimeBoot sample (tests/compat) moved to ``namespace`` (its module runs there too)."""
    [doc] = [d for d in documents(COMPAT / path) if d.get("kind") == "SlimeBoot"]
    doc["metadata"]["namespace"] = namespace
    doc["spec"].update(namespace=namespace, **spec)
    return dict(doc)


def bed_image(bed: MeshBed) -> dict[str, str]:
    assert bed.images is not None
    repository, _, tag = bed.images.slime.name.rpartition(":")
    return {"repository": repository, "tag": tag, "pullPolicy": "Never"}


def names(objects: list[dict[str, Any]]) -> list[str]:
    return [f"{o['kind']} {o['metadata'].get('namespace', '')}/{o['metadata']['name']}" for o in objects]


def existing(bed: MeshBed, objects: list[dict[str, Any]]) -> list[str]:
    """Those of ``objects`` that exist (kind namespace/name)."""
    return names([o for o in objects if read(bed.api, o) is not None])


def delete_slimeboot(bed: MeshBed, cr: dict[str, Any]) -> None:
    meta = cr["metadata"]
    children = rendered(cr)
    assert any(o["kind"] == "ClusterRole" for o in children) and any(o["kind"] == "Deployment" for o in children)
    assert existing(bed, children) == names(children)
    k8s.CustomObjectsApi(bed.api).delete_namespaced_custom_object("config.netease.com", "v1alpha1", meta["namespace"],
                                                                  "slimeboots", meta["name"])
    wait_until(lambda: not existing(bed, children), 60, what=f"everything SlimeBoot {meta['name']} created removed")
    wait_until(lambda: custom_object(bed, "slimeboots", meta["namespace"], meta["name"]) is None, 30,
               what="the SlimeBoot gone (finalizer released)")


def test_the_boot_operator_runs_from_the_chart(boot: Boot) -> None:
    [pod] = boot.bed.wait_pods(boot.namespace, f"app.kubernetes.io/instance={RELEASE}", 1)  # Ready
    got = k8s.CoreV1Api(boot.bed.api).read_namespaced_pod(pod.name, boot.namespace)
    assert got.spec.containers[0].args[:3] == ["run", "--modules", "boot"]
    assert got.spec.security_context.run_as_non_root and got.status.container_statuses[0].restart_count == 0


def test_upstream_limiter_slimeboot_limits_rolls_out_and_is_removed(boot: Boot, bed_ns: str) -> None:
    bed = boot.bed
    require_compat()
    cr = slimeboot(bed, UPSTREAM_LIMITER, bed_ns, image=bed_image(bed))
    cr["spec"]["module"][0]["metric"]["prometheus"]["address"] = bed.prometheus_url
    bed.apply([cr])
    wait_until(lambda: cr_ready(bed, "slimeboots", bed_ns, "limiter"), 60, what="SlimeBoot Ready")
    [module_pod] = bed.wait_pods(bed_ns, "app=limiter", 1)

    # the limiter Pod SlimeBoot deployed does the limiter's job (the bed's operator is stopped)
    app = bed.deploy_app("reviews", bed_ns)
    client_pod = bed.client(bed_ns)
    bed.apply([smart_limiter("reviews", bed_ns, [{"action": {"quota": "3", "fill_interval": {"seconds": 60}},
                                                  "condition": "true", "target": {"port": app.port}}])])
    wait_until(lambda: envoyfilter(bed, bed_ns, f"reviews.{bed_ns}.ratelimit"), 60, what="the limiter's EnvoyFilter")
    bed.proxy(app.pods[0]).wait_accepted(
        applied=lambda d: xdscheck.has_http_filter(d, "virtualInbound", "envoy.filters.http.local_ratelimit"))
    assert bed.http_get(client_pod, app.url, count=5)["codes"] == [200] * 3 + [429] * 2
    assert "reviews" in bed.kubectl("logs", "-n", bed_ns, module_pod.name)

    # a change of replicas and of the module's config rolls out
    apps = k8s.AppsV1Api(bed.api)
    before = apps.read_namespaced_deployment("limiter", bed_ns).spec.template.metadata.annotations
    cr["spec"]["replicaCount"] = 2
    cr["spec"]["module"][0].setdefault("general", {})["refresh"] = "2s"
    bed.apply([cr])
    wait_until(lambda: cr_ready(bed, "slimeboots", bed_ns, "limiter"), 60, what="SlimeBoot Ready after the change")

    def rolled() -> bool:
        dep = apps.read_namespaced_deployment("limiter", bed_ns)
        st = dep.status
        return (dep.spec.template.metadata.annotations != before and st.observed_generation == dep.metadata.generation
                and st.updated_replicas == st.ready_replicas == st.replicas == 2)
    wait_until(rolled, 90, what="the limiter Deployment rolled out with 2 replicas")
    cfg = k8s.CoreV1Api(bed.api).read_namespaced_config_map("limiter", bed_ns).data["cfg"]
    assert json.loads(cfg)["general"]["refresh"] == "2s"
    bed.wait_pods(bed_ns, "app=limiter", 2)

    delete_slimeboot(bed, cr)
    bed.wait_pods(bed_ns, "app=limiter", 0)


def test_bundles_in_two_namespaces_do_not_collide(boot: Boot, bed_ns: str) -> None:
    bed = boot.bed
    other = f"{bed_ns}-b"
    bed.ensure_namespace(other)
    try:
        sample = next(d for d in documents(REPO / "samples" / "boot" / "bundle.yaml") if d.get("kind") == "SlimeBoot")
        crs = []
        for ns in (bed_ns, other):
            cr = json.loads(json.dumps(sample))
            cr["metadata"]["namespace"] = ns
            cr["spec"].update(namespace=ns, image=bed_image(bed))
            crs.append(cr)
        bed.apply(crs)
        for ns in (bed_ns, other):
            wait_until(lambda ns=ns: cr_ready(bed, "slimeboots", ns, "bundle"), 60, what=f"the bundle in {ns} Ready")
            bed.wait_pods(ns, "app=bundle", 1)
        rbac = k8s.RbacAuthorizationV1Api(bed.api)
        for ns in (bed_ns, other):
            binding = rbac.read_cluster_role_binding(f"slime.{ns}.bundle")
            assert binding.role_ref.name == f"slime.{ns}.bundle" and binding.subjects[0].namespace == ns

        # the bundle's plugin module works
        bed.apply([plugin_manager("pm", bed_ns, {"app": "x"}, [lua_plugin("bundle", "Inbound")])])
        wait_until(lambda: cr_ready(bed, "pluginmanagers", bed_ns, "pm") and envoyfilter(bed, bed_ns, "pm"), 60,
                   what="the PluginManager's EnvoyFilter from the bundle")

        # one goes, the other stays whole
        delete_slimeboot(bed, crs[1])
        assert existing(bed, rendered(crs[0])) == names(rendered(crs[0]))
        assert cr_ready(bed, "slimeboots", bed_ns, "bundle")
        bed.wait_pods(bed_ns, "app=bundle", 1)
        delete_slimeboot(bed, crs[0])
    finally:
        bed.kubectl("delete", "namespace", other, "--wait=false")


def test_upstream_lazyload_slimeboot_runs_a_forwarding_global_sidecar(boot: Boot, bed_ns: str) -> None:
    bed = boot.bed
    require_compat()
    apps_ns = f"{bed_ns}-apps"
    cr = slimeboot(bed, UPSTREAM_LAZYLOAD, bed_ns)  # upstream's Go images: replaced (status.notes)
    cr["spec"]["module"][0]["general"]["defaultFence"] = False  # fence only the labelled namespace, not the bed
    cr["spec"]["module"][0]["global"]["slimeNamespace"] = bed_ns
    bed.apply([cr])
    status = wait_until(lambda: cr_ready(bed, "slimeboots", bed_ns, "lazyload"), 60, what="SlimeBoot Ready")
    assert any("slimeio/slime-global-sidecar" in n for n in status.get("notes", [])), status
    bed.wait_pods(bed_ns, "app=lazyload", 1)
    [gs] = bed.wait_pods(bed_ns, "app=global-sidecar", 1)
    pod = k8s.CoreV1Api(bed.api).read_namespaced_pod(gs.name, bed_ns)
    assert bed.images is not None and pod.spec.containers[0].image == bed.images.proxy.name

    try:
        bed.ensure_namespace(apps_ns)
        bed.kubectl("label", "namespace", apps_ns, "slime.io/serviceFenced=true")
        caller = bed.deploy_app("caller", apps_ns, port=LAZYLOAD_PORT, wait=False)
        callee = bed.deploy_app("callee", apps_ns, port=LAZYLOAD_PORT)
        caller.pods = bed.wait_pods(apps_ns, "app=caller", 1)
        gs_cluster = f"outbound|80||global-sidecar.{bed_ns}.svc.cluster.local"
        bed.proxy(caller.pods[0]).wait_accepted(
            applied=lambda d: gs_cluster in (n := xdscheck.cluster_names(d))
            and f"outbound|{LAZYLOAD_PORT}||{callee.fqdn}" not in n, timeout=60)
        out = bed.http_get(caller.pods[0], f"http://callee:{LAZYLOAD_PORT}/")
        assert out["codes"] == [200], out
        assert json.loads(out["bodies"][0])["headers"]["host"] == f"callee.{apps_ns}:{LAZYLOAD_PORT}"  # forwarded
        wait_until(lambda: f'{{destination_service="{callee.fqdn}"}}' in (
            (cr_ready(bed, "servicefences", apps_ns, "caller") or {}).get("metricStatus") or {}), 30,
            what="the call learned by the module SlimeBoot deployed")
    finally:
        bed.kubectl("delete", "namespace", apps_ns, "--wait=false")
    delete_slimeboot(bed, cr)
    # what its lazyload module wrote for itself goes with it: the global-sidecar and the fallback route
    # (in the bed, the cluster-wide to-global-sidecar was this instance's while the bed's operator is down)
    fallback = "lazyload.slime.io/fallback"
    for kind in ("deployments", "services", "configmaps", "envoyfilters"):
        assert bed.kubectl("get", kind, "-A", "-l", fallback, "-o", "name",
                           "--field-selector", "metadata.namespace!=mesh-operator").strip() == "", kind


def test_helm_uninstall_leaves_only_the_crds(boot: Boot) -> None:
    bed = boot.bed
    boot.helm("uninstall", RELEASE, "--wait")
    boot.installed = False
    left = []
    selector = f"app.kubernetes.io/instance={RELEASE}"
    core, apps, rbac = k8s.CoreV1Api(bed.api), k8s.AppsV1Api(bed.api), k8s.RbacAuthorizationV1Api(bed.api)
    for items in (core.list_namespaced_config_map(boot.namespace, label_selector=selector).items,
                  core.list_namespaced_service(boot.namespace, label_selector=selector).items,
                  core.list_namespaced_service_account(boot.namespace, label_selector=selector).items,
                  apps.list_namespaced_deployment(boot.namespace, label_selector=selector).items,
                  rbac.list_cluster_role(label_selector=selector).items,
                  rbac.list_cluster_role_binding(label_selector=selector).items):
        left += [i.metadata.name for i in items]
    try:
        peering = k8s.CustomObjectsApi(bed.api).get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings",
                                                                          RELEASE)
        left.append(f"ClusterKopfPeering {peering['metadata']['name']}")
    except ApiException as e:
        assert e.status == 404
    assert left == []
    bed.wait_pods(boot.namespace, f"app.kubernetes.io/instance={RELEASE}", 0)
    crd = k8s.ApiextensionsV1Api(bed.api).read_custom_resource_definition("slimeboots.config.netease.com")
    assert crd.metadata.name  # kept, as documented (charts/slime-boot/README.md)
