"""Fixtures of the end-to-end tier: a fresh namespace of the shared mesh bed per test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slime.devcluster import DevClusterError
from slime.devtools import xdscheck
from slime.devtools.meshops import App, PodRef
from slime.meshbed import MeshBed

# plural -> (group, version) of the custom resources the e2e tests read
RESOURCES = {
    "smartlimiters": ("microservice.slime.io", "v1alpha2"),
    "pluginmanagers": ("microservice.slime.io", "v1alpha1"),
    "envoyplugins": ("microservice.slime.io", "v1alpha1"),
    "servicefences": ("microservice.slime.io", "v1alpha1"),
    "slimeboots": ("config.netease.com", "v1alpha1"),
    "envoyfilters": ("networking.istio.io", "v1alpha3"),
    "sidecars": ("networking.istio.io", "v1alpha3"),
}


@pytest.fixture
def bed_ns(mesh_bed: MeshBed) -> Iterator[str]:
    """A namespace of the bed for one test, deleted afterwards.

    Its Services go first, and synchronously: a Service change makes istiod push new route
    configurations to every sidecar with a listener on that port, and Envoy starts a fresh local
    rate-limit bucket with each (observed: a limit of 4 let 5 requests through). Without this,
    the namespace's slow deletion would push in the middle of a later test's requests."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    mesh_bed.ensure_namespace(name)
    yield name
    with contextlib.suppress(DevClusterError):
        mesh_bed.kubectl("delete", "services", "--all", "-n", name, "--wait=true")
        mesh_bed.kubectl("delete", "namespace", name, "--wait=false")


def smart_limiter(name: str, namespace: str, descriptors: list[dict[str, Any]],
                  **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "microservice.slime.io/v1alpha2", "kind": "SmartLimiter",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {**spec, "sets": {"_base": {"descriptor": descriptors}}}}


def custom_object(bed: MeshBed, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    """A custom resource (see RESOURCES), or None when it does not exist."""
    group, version = RESOURCES[plural]
    try:
        obj: dict[str, Any] = client.CustomObjectsApi(bed.api).get_namespaced_custom_object(
            group, version, namespace, plural, name)
        return obj
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def envoyfilter(bed: MeshBed, namespace: str, name: str) -> dict[str, Any] | None:
    return custom_object(bed, "envoyfilters", namespace, name)


def cr_ready(bed: MeshBed, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The status of a Slime object whose Ready condition is True for its current generation, else None."""
    obj = custom_object(bed, plural, namespace, name)
    status = (obj or {}).get("status") or {}
    if obj is None or status.get("observedGeneration", obj["metadata"]["generation"]) != obj["metadata"]["generation"]:
        return None
    if any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])):
        return dict(status)
    return None


def productpage_behind_a_gateway(bed: MeshBed, namespace: str,
                                 host: str) -> tuple[App, App, PodRef, xdscheck.Proxy]:
    """A productpage app, an ingress gateway routing ``host`` to it (Gateway + VirtualService) and
    a client Pod; returns once the gateway's Envoy has the virtual host and the app is routable
    through it: (app, gateway, client, the gateway's proxy)."""
    backend = bed.deploy_app("productpage", namespace, wait=False)
    gateway = bed.deploy_gateway(namespace)
    backend.pods = bed.wait_pods(namespace, "app=productpage", 1)
    client_pod = bed.client(namespace)
    bed.apply([
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "gw", "namespace": namespace},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": [host]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "productpage", "namespace": namespace},
         "spec": {"hosts": [host], "gateways": ["gw"],
                  "http": [{"route": [{"destination": {"host": backend.fqdn, "port": {"number": backend.port}}}]}]}},
    ])
    proxy = bed.proxy(gateway.pods[0])
    proxy.wait_accepted(applied=lambda d: xdscheck.virtual_hosts(d, f"{host}:80"))
    bed.wait_routable(backend, via=gateway.pods[0])
    return backend, gateway, client_pod, proxy
