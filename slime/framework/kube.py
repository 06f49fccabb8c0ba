"""A small, blocking client for any Kubernetes resource by apiVersion and kind.

The generated typed clients need one method per kind; the operator writes EnvoyFilters,
Sidecars, ConfigMaps and Deployments alike, so one path-based client is simpler.
Call it from kopf's thread pool (sync handlers) or ``asyncio.to_thread``, never on the loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from slime.framework import observability

FIELD_MANAGER = "slime"
LIST_PAGE = 500  # objects per list request


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def prefix(self) -> str:
        return f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = self.prefix
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


ENVOY_FILTER = Kind("networking.istio.io/v1alpha3", "EnvoyFilter", "envoyfilters")
SIDECAR = Kind("networking.istio.io/v1beta1", "Sidecar", "sidecars")
CONFIG_MAP = Kind("v1", "ConfigMap", "configmaps")
SERVICE = Kind("v1", "Service", "services")
POD = Kind("v1", "Pod", "pods")
DESTINATION_RULE = Kind("networking.istio.io/v1beta1", "DestinationRule", "destinationrules")
SERVICE_ENTRY = Kind("networking.istio.io/v1beta1", "ServiceEntry", "serviceentries")
KINDS = {k.kind: k for k in (ENVOY_FILTER, SIDECAR, CONFIG_MAP, SERVICE, POD, DESTINATION_RULE, SERVICE_ENTRY)}


def kind_of(obj: dict[str, Any]) -> Kind:
    known = KINDS.get(obj["kind"])
    if known and known.api_version.split("/")[0] == obj["apiVersion"].split("/")[0]:
        return Kind(obj["apiVersion"], known.kind, known.plural, known.namespaced)
    return Kind(obj["apiVersion"], obj["kind"], obj["kind"].lower() + "s")


class Kube:
    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api = api_client

    def _request(self, method: str, path: str, query: dict[str, str] | None = None, body: Any = None,
                 content_type: str = "application/json", timeout: Any = None) -> Any:
        """The raw response (its body not read yet); raises ApiException unless 2xx."""
        request = self.api.param_serialize(
            method, path, query_params=list((query or {}).items()), body=body,
            header_params={"Accept": "application/json", "Content-Type": content_type},
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request, _request_timeout=timeout)
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=(response.read() or b"").decode(), data=None)
        return response

    def _call(self, method: str, path: str, *, query: dict[str, str] | None = None,
              body: Any = None, content_type: str = "application/json") -> Any:
        raw = self._request(method, path, query, body, content_type).read()
        return json.loads(raw) if raw else None

    def list_versioned(self, kind: Kind, namespace: str | None,
                       label_selector: str = "") -> tuple[list[dict[str, Any]], str]:
        """A quorum list, page by page, and the resourceVersion to watch from after it."""
        items: list[dict[str, Any]] = []
        query = {"limit": str(LIST_PAGE), **({"labelSelector": label_selector} if label_selector else {})}
        while True:
            page = self._call("GET", kind.path(namespace), query=query)
            items += page.get("items") or []
            query["continue"] = (page.get("metadata") or {}).get("continue") or ""
            if not query["continue"]:
                return items, str(page["metadata"]["resourceVersion"])

    def watch(self, kind: Kind, namespace: str | None, resource_version: str,
              timeout_seconds: int = 300) -> Iterator[dict[str, Any]]:
        """Watch events (``type``, ``object``) after ``resource_version``, with bookmarks, until the
        server ends the watch (``timeout_seconds``). Blocking: call it from a thread."""
        query = {"watch": "1", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(timeout_seconds)}
        response = self._request("GET", kind.path(namespace), query, timeout=(10, timeout_seconds + 30))
        pending = b""
        try:
            for chunk in response.response.stream(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.response.release_conn()

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", kind.path(namespace, name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def list(self, kind: Kind, namespace: str | None, label_selector: str = "") -> list[dict[str, Any]]:
        items, _ = self.list_versioned(kind, namespace, label_selector)
        for item in items:  # list responses omit these per item
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
        return items

    def apply(self, obj: dict[str, Any], *, subresource: str = "") -> dict[str, Any]:
        """Server-side apply with the ``slime`` field manager (force: we own these fields)."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        path = kind.path(meta.get("namespace"), meta["name"]) + (f"/{subresource}" if subresource else "")
        observability.API_WRITES.labels(verb="apply", kind=kind.kind).inc()
        return self._call(
            "PATCH", path, query={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=obj, content_type="application/apply-patch+yaml",
        )

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind = kind_of(obj)
        observability.API_WRITES.labels(verb="create", kind=kind.kind).inc()
        return self._call("POST", kind.path(obj["metadata"].get("namespace")), body=obj,
                          query={"fieldManager": FIELD_MANAGER})

    def merge_patch(self, kind: Kind, namespace: str | None, name: str, patch: dict[str, Any],
                    *, subresource: str = "") -> dict[str, Any]:
        path = kind.path(namespace, name) + (f"/{subresource}" if subresource else "")
        observability.API_WRITES.labels(verb="patch", kind=kind.kind).inc()
        return self._call(
            "PATCH", path, body=patch, content_type="application/merge-patch+json",
            query={"fieldManager": FIELD_MANAGER},
        )

    def delete(self, kind: Kind, namespace: str | None, name: str) -> bool:
        observability.API_WRITES.labels(verb="delete", kind=kind.kind).inc()
        try:
            self._call("DELETE", kind.path(namespace, name))
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise
