"""The operator in its Pod, from deploy/slime.yaml: ServiceAccount token and least RBAC, probes,
/metrics scraped by the test Prometheus."""

from __future__ import annotations

import urllib.request

from kubernetes import client

from slime.devtools.prometheus import prom_query, wait_until
from slime.meshbed import OPERATOR_METRICS_IP, MeshBed
from tests.e2e.conftest import smart_limiter


def test_operator_runs_in_cluster_with_its_service_account(mesh_bed: MeshBed, bed_ns: str) -> None:
    pods = mesh_bed.wait_pods("mesh-operator", "app.kubernetes.io/name=slime", mesh_bed.operator_replicas)
    pod = client.CoreV1Api(mesh_bed.api).read_namespaced_pod(pods[0].name, "mesh-operator")
    assert pod.spec.service_account_name == "slime"
    container = pod.spec.containers[0]
    assert mesh_bed.images is not None and container.image == mesh_bed.images.slime.name
    assert container.liveness_probe and container.readiness_probe
    assert any(m.mount_path == "/var/run/secrets/kubernetes.io/serviceaccount" for m in container.volume_mounts)
    status = pod.status.container_statuses[0]
    assert status.ready and status.restart_count == 0
    # the probes' endpoint answers from the node (the kubelet probes the same)
    with urllib.request.urlopen(f"http://{pods[0].ip}:8080/healthz", timeout=5) as resp:
        assert resp.status == 200

    # it works with its own rights: a SmartLimiter becomes an EnvoyFilter and a Ready status
    mesh_bed.ensure_namespace(bed_ns)
    mesh_bed.apply([{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ratings", "namespace": bed_ns},
                     "spec": {"selector": {"app": "ratings"}, "ports": [{"name": "http", "port": 9080}]}},
                    smart_limiter("ratings", bed_ns, [{"action": {"quota": "9", "fill_interval": {"seconds": 1}},
                                                       "condition": "true", "target": {"port": 9080}}])])
    wait_until(lambda: client.CustomObjectsApi(mesh_bed.api).list_namespaced_custom_object(
        "networking.istio.io", "v1alpha3", bed_ns, "envoyfilters")["items"], 30, what="EnvoyFilter written")
    logs = mesh_bed.kubectl("logs", "-n", "mesh-operator", pods[0].name)
    # RBAC refusals name the identity ("... serviceaccount:mesh-operator:slime" cannot list ...)
    denied = [line for line in logs.splitlines() if "serviceaccount:mesh-operator:slime" in line and "cannot" in line]
    assert not denied, denied[:5]


def test_operator_metrics_are_scraped(mesh_bed: MeshBed) -> None:
    target = f"{OPERATOR_METRICS_IP}:9090"
    up = wait_until(lambda: [r for r in prom_query(mesh_bed.prometheus_url, f'up{{instance="{target}"}}')
                             if r["value"][1] == "1"], 60, what="the operator's /metrics scraped")
    assert up
    series = wait_until(lambda: prom_query(mesh_bed.prometheus_url,
                                           f'slime_reconciles_total{{instance="{target}"}}'), 60,
                        what="slime_reconciles_total in Prometheus")
    assert sum(float(s["value"][1]) for s in series) > 0
