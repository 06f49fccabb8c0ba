"""Every Kubernetes kind the operator reads or writes, declared once: no plural guessing.

A kind is found by its API group and name (``lookup``); an unknown kind is an error, never a
guessed path. Slime's own kinds are added from their CRD identities (``register``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class UnknownKindError(KeyError):
    """A kind the operator does not know: it would not know its path, scope or plural."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown kind"


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def prefix(self) -> str:
        return f"/api/{self.api_version}" if not self.group else f"/apis/{self.api_version}"

    def __str__(self) -> str:
        return self.kind


# Core and apps
NAMESPACE = Kind("v1", "Namespace", "namespaces", namespaced=False)
SERVICE = Kind("v1", "Service", "services")
POD = Kind("v1", "Pod", "pods")
ENDPOINTS = Kind("v1", "Endpoints", "endpoints")
CONFIG_MAP = Kind("v1", "ConfigMap", "configmaps")
SECRET = Kind("v1", "Secret", "secrets")
SERVICE_ACCOUNT = Kind("v1", "ServiceAccount", "serviceaccounts")
EVENT = Kind("v1", "Event", "events")
NODE = Kind("v1", "Node", "nodes", namespaced=False)
ENDPOINT_SLICE = Kind("discovery.k8s.io/v1", "EndpointSlice", "endpointslices")
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
ROLE = Kind("rbac.authorization.k8s.io/v1", "Role", "roles")
ROLE_BINDING = Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings")
CLUSTER_ROLE = Kind("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", namespaced=False)
CLUSTER_ROLE_BINDING = Kind("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings",
                            namespaced=False)
CRD = Kind("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", namespaced=False)
LEASE = Kind("coordination.k8s.io/v1", "Lease", "leases")
# Istio
ENVOY_FILTER = Kind("networking.istio.io/v1alpha3", "EnvoyFilter", "envoyfilters")
SIDECAR = Kind("networking.istio.io/v1beta1", "Sidecar", "sidecars")
DESTINATION_RULE = Kind("networking.istio.io/v1beta1", "DestinationRule", "destinationrules")
SERVICE_ENTRY = Kind("networking.istio.io/v1beta1", "ServiceEntry", "serviceentries")
VIRTUAL_SERVICE = Kind("networking.istio.io/v1beta1", "VirtualService", "virtualservices")
GATEWAY = Kind("networking.istio.io/v1beta1", "Gateway", "gateways")
# kopf's peering objects
CLUSTER_PEERING = Kind("kopf.dev/v1", "ClusterKopfPeering", "clusterkopfpeerings", namespaced=False)
NAMESPACED_PEERING = Kind("kopf.dev/v1", "KopfPeering", "kopfpeerings")

_BY_GROUP_KIND: dict[tuple[str, str], Kind] = {}


def register(*kinds: Kind) -> None:
    for kind in kinds:
        _BY_GROUP_KIND[(kind.group, kind.kind)] = kind


register(NAMESPACE, SERVICE, POD, ENDPOINTS, CONFIG_MAP, SECRET, SERVICE_ACCOUNT, EVENT, NODE, ENDPOINT_SLICE,
         DEPLOYMENT, ROLE, ROLE_BINDING, CLUSTER_ROLE, CLUSTER_ROLE_BINDING, CRD, LEASE, ENVOY_FILTER, SIDECAR,
         DESTINATION_RULE, SERVICE_ENTRY, VIRTUAL_SERVICE, GATEWAY, CLUSTER_PEERING, NAMESPACED_PEERING)


def lookup(api_version: str, kind: str) -> Kind:
    """The kind of an object with this apiVersion and kind, at the object's own version
    (a Sidecar written as networking.istio.io/v1 keeps v1). Raises UnknownKindError."""
    group = api_version.rpartition("/")[0]
    known = _BY_GROUP_KIND.get((group, kind))
    if known is None:
        raise UnknownKindError(f"unknown kind {kind} in {api_version or 'core/v1'}: not one the operator handles")
    if known.api_version == api_version:
        return known
    return Kind(api_version, known.kind, known.plural, known.namespaced)


def of(obj: Mapping[str, Any]) -> Kind:
    return lookup(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))


def by_name(kind: str) -> list[Kind]:
    """Known kinds called ``kind`` (any group)."""
    return [k for (_, name), k in _BY_GROUP_KIND.items() if name == kind]
