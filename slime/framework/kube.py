"""A small, blocking client for any Kubernetes resource of a known kind (``slime.framework.kinds``).

The generated typed clients need one method per kind; the operator writes EnvoyFilters,
Sidecars, ConfigMaps and Deployments alike, so one path-based client is simpler.
Call it from a worker thread (``asyncio.to_thread`` or an executor), never on the event loop.

Every name and namespace that goes into a request path is checked to be a Kubernetes object
name (``check_name``) and escaped anyway: a name built from user input (a DestinationRule
subset, a set name) can never turn into ``../other-namespace/...``.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from slime.framework import kinds, observability
from slime.framework.kinds import Kind
from slime.framework.names import InvalidNameError, check_name, check_namespace

__all__ = ["InvalidNameError", "Kube", "api_path", "kind_of", "short_error"]

FIELD_MANAGER = "slime"
LIST_PAGE = 500  # objects per list request

def api_path(kind: Kind, namespace: str | None, name: str | None = None, subresource: str = "") -> str:
    """The request path; names are validated and escaped (defence in depth)."""
    base = kind.prefix
    if kind.namespaced and namespace:
        base += "/namespaces/" + urllib.parse.quote(check_namespace(namespace), safe="")
    base += f"/{kind.plural}"
    if name is not None:
        base += "/" + urllib.parse.quote(check_name(name), safe="")
    if subresource:
        base += f"/{subresource}"
    return base


def kind_of(obj: dict[str, Any]) -> Kind:
    """The registered kind of an object; ``kinds.UnknownKindError`` for any other."""
    return kinds.of(obj)


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
            page = self._call("GET", api_path(kind, namespace), query=query)
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
        response = self._request("GET", api_path(kind, namespace), query, timeout=(10, timeout_seconds + 30))
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
            return self._call("GET", api_path(kind, namespace, name))
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
        """Server-side apply with the ``slime`` field manager. Forced: callers apply only objects
        that are theirs (``slime.framework.sync`` checks the owner first)."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        where = api_path(kind, meta.get("namespace"), meta["name"], subresource)
        observability.API_WRITES.labels(verb="apply", kind=kind.kind).inc()
        return self._call(
            "PATCH", where, query={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=obj, content_type="application/apply-patch+yaml",
        )

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind = kind_of(obj)
        observability.API_WRITES.labels(verb="create", kind=kind.kind).inc()
        return self._call("POST", api_path(kind, obj["metadata"].get("namespace")), body=obj,
                          query={"fieldManager": FIELD_MANAGER})

    def merge_patch(self, kind: Kind, namespace: str | None, name: str, patch: dict[str, Any],
                    *, subresource: str = "") -> dict[str, Any]:
        where = api_path(kind, namespace, name, subresource)
        observability.API_WRITES.labels(verb="patch", kind=kind.kind).inc()
        return self._call(
            "PATCH", where, body=patch, content_type="application/merge-patch+json",
            query={"fieldManager": FIELD_MANAGER},
        )

    def delete(self, kind: Kind, namespace: str | None, name: str, uid: str | None = None) -> bool:
        """Delete; with ``uid``, only that very object (a precondition: not one re-created since)."""
        observability.API_WRITES.labels(verb="delete", kind=kind.kind).inc()
        body = {"preconditions": {"uid": uid}} if uid else None
        try:
            self._call("DELETE", api_path(kind, namespace, name), body=body)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise


def short_error(e: BaseException) -> str:
    """One line for a log or a condition: ``HTTP 422 (Invalid): <the apiserver's message>``,
    not the response headers an ApiException prints."""
    if isinstance(e, ApiException):
        message = ""
        try:
            body = json.loads(e.body) if e.body else {}
            message = str(body.get("message") or "") if isinstance(body, dict) else ""
        except (TypeError, ValueError):
            message = str(e.body or "")[:300]
        reason = e.reason or ""
        return f"HTTP {e.status} ({reason}){': ' + message if message else ''}".replace("\n", " ")
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:300]
