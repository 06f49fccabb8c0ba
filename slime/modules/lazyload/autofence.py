"""Auto-fence: which ServiceFences the module itself creates and deletes. Pure.

A Service gets a fence when it has a selector, its namespace is in scope and it is fenced by
upstream's precedence: the ``slime.io/serviceFenced`` label on the Service (``"true"``/``"false"``),
else the same label on its Namespace, else ``defaultFence``. The fence is named like the Service,
carries ``app.kubernetes.io/created-by: fence-controller`` (and ``istio.io/rev: <selfResourceRev>``),
and its spec is ``{enable: true, workloadSelector: {fromService: true}}``.

Only fences carrying that label are ever deleted, and only when they are no longer wanted (Service
gone or unfenced, namespace out of scope). A hand-made fence is never touched, and a fence of the
Service's name that exists already is never replaced.

Workload fences (``fenceLabelKeyAlias: "<labelKey>[:<alias>]"``, upstream's pod-label fences) are
``<alias>-<value>.workload.identity`` with ``workloadSelector.labels: {<labelKey>: <value>}``, one per
namespace and value among pods that have an IP; deleted with the last such pod.

Differences, on purpose: with ``autoFence`` off nothing is created, so a deleted fence does not come
back (upstream's fence reconciler re-created it, slime#517), and the fences the module created are
deleted (what #517 asked for: switching auto-fence off undoes it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from slime.framework.config import GlobalConfig
from slime.modules.lazyload.api import SERVICE_FENCE
from slime.modules.lazyload.config import Fence, LabelSelector
from slime.modules.lazyload.names import check_object_name, label_problem
from slime.modules.lazyload.render import REV_LABEL, rev_in_scope

Obj = Mapping[str, Any]
FENCED_LABEL = "slime.io/serviceFenced"
CREATED_BY_LABEL = "app.kubernetes.io/created-by"
CREATED_BY = "fence-controller"


def _meta(obj: Obj) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _labels(obj: Obj | None) -> Mapping[str, str]:
    return (_meta(obj).get("labels") or {}) if obj else {}


def _ns(obj: Obj) -> str:
    return str(_meta(obj).get("namespace") or "default")


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels AND matchExpressions)."""
    if any(labels.get(k) != v for k, v in selector.matchLabels.items()):
        return False
    for req in selector.matchExpressions:
        have = labels.get(req.key)
        ok = {"In": have is not None and have in req.values,
              "NotIn": have is None or have not in req.values,
              "Exists": have is not None,
              "DoesNotExist": have is None}[req.operator]
        if not ok:
            return False
    return True


def namespace_in_scope(name: str, labels: Mapping[str, str], config: Fence) -> bool:
    """Upstream's scope: the white or black list (comma-separated, exact names), and any of the
    ``managementSelectors`` (none: every namespace). Both must pass."""
    if config.whiteNamespaceList:
        if name not in {n.strip() for n in config.whiteNamespaceList.split(",")}:
            return False
    elif config.blackNamespaceList and name in {n.strip() for n in config.blackNamespaceList.split(",")}:
        return False
    if config.managementSelectors and not any(selector_matches(s, labels) for s in config.managementSelectors):
        return False
    return True


def _flag(labels: Mapping[str, str]) -> bool | None:
    value = labels.get(FENCED_LABEL)
    return {"true": True, "false": False}.get(value) if value is not None else None


def is_fenced(service: Obj, namespace: Obj | None, config: Fence) -> bool:
    """Service label, then Namespace label, then ``defaultFence``."""
    for decided in (_flag(_labels(service)), _flag(_labels(namespace))):
        if decided is not None:
            return decided
    return config.defaultFence


def wants_fence(service: Obj, namespace: Obj | None, config: Fence) -> bool:
    ns = _ns(service)
    if not namespace_in_scope(ns, _labels(namespace), config):
        return False
    if not ((service.get("spec") or {}).get("selector")):
        return False  # a Sidecar without a workload selector would apply to the whole namespace
    return is_fenced(service, namespace, config)


def fence_for(service: Obj, globals_: GlobalConfig) -> dict[str, Any]:
    labels = {CREATED_BY_LABEL: CREATED_BY}
    if globals_.selfResourceRev and label_problem(REV_LABEL, globals_.selfResourceRev) is None:
        labels[REV_LABEL] = globals_.selfResourceRev
    return {
        "apiVersion": SERVICE_FENCE.api_version,
        "kind": SERVICE_FENCE.kind,
        "metadata": {"name": _meta(service).get("name"), "namespace": _ns(service), "labels": labels},
        "spec": {"enable": True, "workloadSelector": {"fromService": True}},
    }


def is_ours(fence: Obj) -> bool:
    return _labels(fence).get(CREATED_BY_LABEL) == CREATED_BY


def desired_fences(services: Iterable[Obj], namespaces: Iterable[Obj], config: Fence,
                   globals_: GlobalConfig) -> list[dict[str, Any]]:
    """The fences auto-fence wants, whatever exists (sorted by namespace, name)."""
    by_name = {str(_meta(n).get("name")): n for n in namespaces if n.get("kind", "Namespace") == "Namespace"}
    out = [fence_for(s, globals_) for s in services
           if s.get("kind", "Service") == "Service" and wants_fence(s, by_name.get(_ns(s)), config)]
    return sorted(out, key=lambda f: (f["metadata"]["namespace"], f["metadata"]["name"]))


def label_key_alias(value: str) -> tuple[str, str] | None:
    """``fenceLabelKeyAlias`` as (label key, alias): ``"<labelKey>[:<alias>]"``, the alias ``app`` by default."""
    if not value:
        return None
    key, _, alias = value.partition(":")
    return key, alias or "app"


def workload_fence_name(alias: str, value: str) -> str | None:
    """``<alias>-<labelValue>.workload.identity``, or None when that is no valid object name."""
    name = f"{alias}-{value}.workload.identity"
    try:
        check_object_name(name)
    except ValueError:
        return None
    return name


def _pod_ip(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("podIP") or "")


def desired_workload_fences(pods: Iterable[Obj], namespaces: Iterable[Obj], config: Fence,
                            globals_: GlobalConfig) -> list[dict[str, Any]]:
    """Workload fences (upstream's ``fenceLabelKeyAlias``): one per namespace and value of the label key among
    pods that have an IP, in a namespace in scope; the Sidecar selects that label."""
    parsed = label_key_alias(config.fenceLabelKeyAlias)
    if parsed is None:
        return []
    key, alias = parsed
    scope = {str(_meta(n).get("name")): _labels(n) for n in namespaces}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for pod in pods:
        value = _labels(pod).get(key)
        ns = _ns(pod)
        if value is None or not _pod_ip(pod) or not namespace_in_scope(ns, scope.get(ns, {}), config):
            continue
        name = workload_fence_name(alias, value)
        if name is None or label_problem(key, value) is not None:
            continue
        fence = fence_for({"metadata": {"name": name, "namespace": ns}}, globals_)
        fence["spec"] = {"enable": True, "workloadSelector": {"labels": {key: value}}}
        out[(ns, name)] = fence
    return [out[k] for k in sorted(out)]


def workload_ip_index(pods: Iterable[Obj], config: Fence) -> dict[str, list[tuple[str, str]]]:
    """Pod IP -> its workload fence (namespace, name), for the access log."""
    parsed = label_key_alias(config.fenceLabelKeyAlias)
    if parsed is None:
        return {}
    key, alias = parsed
    out: dict[str, list[tuple[str, str]]] = {}
    for pod in pods:
        value = _labels(pod).get(key)
        name = workload_fence_name(alias, value) if value is not None else None
        if name is not None and _pod_ip(pod):
            out[_pod_ip(pod)] = [(_ns(pod), name)]
    return out


@dataclass(frozen=True)
class Plan:
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[tuple[str, str]] = field(default_factory=list)  # (namespace, name)


def plan(services: Iterable[Obj], namespaces: Iterable[Obj], fences: Sequence[Obj], config: Fence,
         globals_: GlobalConfig, pods: Iterable[Obj] = ()) -> Plan:
    """What auto-fence (and the workload fences of ``fenceLabelKeyAlias``) create and delete now."""
    mine = [f for f in fences if is_ours(f)
            and rev_in_scope(str(_labels(f).get(REV_LABEL, "")), globals_.istioRev, globals_.strictRev)]
    namespaces = list(namespaces)
    existing = {(_ns(f), str(_meta(f).get("name"))) for f in fences}
    wanted = desired_fences(services, namespaces, config, globals_) if config.autoFence else []
    wanted += desired_workload_fences(pods, namespaces, config, globals_)
    wanted_keys = {(f["metadata"]["namespace"], f["metadata"]["name"]) for f in wanted}
    create = [f for f in wanted if (f["metadata"]["namespace"], f["metadata"]["name"]) not in existing]
    delete = sorted((_ns(f), str(_meta(f).get("name"))) for f in mine
                    if (_ns(f), str(_meta(f).get("name"))) not in wanted_keys)
    return Plan(create=create, delete=delete)
