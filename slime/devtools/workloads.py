"""Kubernetes objects the mesh test bed runs: apps with sidecars, a gateway, clients, the operator.

Pure functions returning plain dicts (applied by :class:`slime.meshbed.MeshBed`); every Pod uses
``imagePullPolicy: Never`` (only the imported local images exist; nothing is ever pulled) and a
short grace period; Service names resolve through the bed's cluster DNS.

A sidecar is the ``slime-proxy`` image twice: the init container ``istio-init``
(``slime-agent init``: iptables REDIRECT in the Pod's network namespace, Envoy's uid 1337
excluded) and the container ``istio-proxy`` (``slime-agent proxy``: bootstrap + Envoy, dialing
istiod at the node address). Same names as Istio's injected containers, so what reads Pods
(slime's own pod counting, istiod's registry) sees a familiar shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from slime.devtools.sidecar_agent import ADMIN_PORT, PROXY_UID, READY_PORT

GRACE = 1


def _env(**values: str) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def _field_env(**paths: str) -> list[dict[str, Any]]:
    return [{"name": k, "valueFrom": {"fieldRef": {"fieldPath": p}}} for k, p in paths.items()]


def proxy_container(image: str, xds_address: str, labels: Mapping[str, str], workload: str,
                    proxy_type: str = "sidecar", log_level: str = "warning") -> dict[str, Any]:
    return {
        "name": "istio-proxy", "image": image, "imagePullPolicy": "Never", "args": ["proxy"],
        "env": [*_field_env(POD_NAME="metadata.name", POD_NAMESPACE="metadata.namespace",
                            INSTANCE_IP="status.podIP", SERVICE_ACCOUNT="spec.serviceAccountName"),
                *_env(SLIME_XDS_ADDRESS=xds_address, SLIME_LABELS=json.dumps(dict(labels), sort_keys=True),
                      SLIME_WORKLOAD=workload, SLIME_PROXY_TYPE=proxy_type, SLIME_LOG_LEVEL=log_level)],
        "ports": [{"name": "envoy-admin", "containerPort": ADMIN_PORT},
                  {"name": "health", "containerPort": READY_PORT}],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": READY_PORT},
                           "periodSeconds": 1, "failureThreshold": 30},
        "securityContext": {"runAsUser": PROXY_UID, "runAsGroup": PROXY_UID, "runAsNonRoot": True,
                            "allowPrivilegeEscalation": False},
    }


def init_container(image: str, capture_outbound: bool = True) -> dict[str, Any]:
    args = ["init"] + ([] if capture_outbound else ["--no-outbound"])
    return {
        "name": "istio-init", "image": image, "imagePullPolicy": "Never", "args": args,
        "securityContext": {"runAsUser": 0, "runAsNonRoot": False,
                            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
    }


def app_deployment(name: str, namespace: str, *, app_image: str, proxy_image: str | None, xds_address: str,
                   port: int = 8080, replicas: int = 1, labels: Mapping[str, str] | None = None,
                   capture_outbound: bool = True) -> dict[str, Any]:
    """A Deployment of the echo server; with ``proxy_image`` each Pod gets a sidecar."""
    pod_labels = {"app": name, **(labels or {})}
    containers: list[dict[str, Any]] = [{
        "name": "app", "image": app_image, "imagePullPolicy": "Never", "args": ["serve", "--port", str(port)],
        "env": _field_env(POD_NAME="metadata.name"),
        "ports": [{"name": "http", "containerPort": port}],
    }]
    spec: dict[str, Any] = {"terminationGracePeriodSeconds": GRACE, "enableServiceLinks": False,
                            "automountServiceAccountToken": False, "containers": containers}
    if proxy_image:
        containers.append(proxy_container(proxy_image, xds_address, pod_labels, name))
        spec["initContainers"] = [init_container(proxy_image, capture_outbound)]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": pod_labels}, "spec": spec}},
    }


def service(name: str, namespace: str, port: int, target_port: int | None = None,
            selector: Mapping[str, str] | None = None, cluster_ip: str | None = None) -> dict[str, Any]:
    """A ClusterIP Service; the port is named ``http`` so istiod treats it as HTTP."""
    spec: dict[str, Any] = {"selector": dict(selector or {"app": name}),
                            "ports": [{"name": "http", "port": port, "targetPort": target_port or port}]}
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def gateway_deployment(namespace: str, *, proxy_image: str, xds_address: str, name: str = "ingressgateway",
                       labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """An Istio-style ingress gateway: Envoy alone as a ``router`` proxy (no iptables)."""
    pod_labels = dict(labels or {"istio": "ingressgateway", "app": name})
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": pod_labels}, "template": {
            "metadata": {"labels": pod_labels},
            "spec": {"terminationGracePeriodSeconds": GRACE, "enableServiceLinks": False,
                     "automountServiceAccountToken": False,
                     # what Istio's gateways do to listen on port 80 without root
                     "securityContext": {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
                     "containers": [proxy_container(proxy_image, xds_address, pod_labels, name, proxy_type="router")]},
        }},
    }


def client_pod(name: str, namespace: str, *, app_image: str) -> dict[str, Any]:
    """A Pod without sidecar that runs ``echo-server get`` through ``kubectl exec``."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                                                       "labels": {"app": name}},
        "spec": {"terminationGracePeriodSeconds": GRACE, "enableServiceLinks": False,
                 "automountServiceAccountToken": False,
                 "containers": [{"name": "app", "image": app_image, "imagePullPolicy": "Never",
                                 "args": ["serve", "--port", "8080"]}]},
    }


def operator_objects(manifest: Path, *, image: str, config: list[dict[str, Any]] | None = None,
                     replicas: int = 1, metrics_cluster_ip: str | None = None) -> list[dict[str, Any]]:
    """``deploy/slime.yaml`` as shipped, with the bed's image (``Never`` pulled), replica count and
    module config; its /metrics Service ``slime-metrics`` (added if the manifest has none) gets
    ``metrics_cluster_ip``, a fixed address the test Prometheus scrapes."""
    objects = [o for o in yaml.safe_load_all(manifest.read_text()) if o]
    for obj in objects:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "slime":
            obj["spec"]["replicas"] = replicas
            for c in obj["spec"]["template"]["spec"]["containers"]:
                if c["name"] == "slime":
                    c["image"] = image
                    c["imagePullPolicy"] = "Never"
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "slime-config" and config is not None:
            obj["data"]["config.yaml"] = yaml.safe_dump(config, sort_keys=False)
    if metrics_cluster_ip:
        shipped = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "slime-metrics"]
        if shipped:
            shipped[0]["spec"]["clusterIP"] = metrics_cluster_ip
        else:
            svc = service("slime-metrics", "mesh-operator", 9090, selector={"app.kubernetes.io/name": "slime"},
                          cluster_ip=metrics_cluster_ip)
            svc["spec"]["ports"][0]["name"] = "metrics"
            objects.append(svc)
    return objects


def shipped_operator_config(manifest: Path) -> list[dict[str, Any]]:
    """The module config list in deploy/slime.yaml's ConfigMap."""
    for obj in yaml.safe_load_all(manifest.read_text()):
        if obj and obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "slime-config":
            config: list[dict[str, Any]] = yaml.safe_load(obj["data"]["config.yaml"])
            return config
    raise ValueError(f"{manifest}: no ConfigMap slime-config")
