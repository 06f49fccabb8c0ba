"""ServiceFence + context -> Istio Sidecar and status. Pure.

Upstream's ``newSidecar``: the egress hosts are the default namespaces (``<istioNamespace>/*``,
``<slimeNamespace>/*``), ``stableHost``, every ACTIVE or EXPIREWAIT domain (``ns/*`` keys as is, each
of its hosts as ``*/<host>``) and, in namespace mode or with a ``clusterGsNamespace`` of its own,
the global-sidecar's host; de-duplicated, then sorted byte-wise. The workload selector is
``spec.workloadSelector.labels``, else the Service's selector (``fromService``), else
``{<global.service>: <fence name>}``. The Sidecar has the fence's name and namespace, is owned by
it, and carries its ``istio.io/rev`` label (no other label).

Differences, on purpose:

* ``enable: false`` renders no Sidecar, so the one in force is removed (upstream kept it).
* A Sidecar istiod would refuse is never written: an invalid ``spec.host`` or ``namespaceSelector``
  entry, or workload labels that are not valid labels, give ``Ready=False`` and leave the Sidecar in
  force as it is; hosts learned from traffic or generated (aliases, VirtualServices) that Istio would
  refuse are left out.
* A ``fromService`` Service without a selector renders nothing (its Sidecar would select every
  workload of the namespace), with ``Ready=False``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slime.framework.conditions import ConditionUpdate
from slime.framework.kinds import SIDECAR
from slime.framework.module import READY, Rendered, out_of_scope
from slime.framework.revision import REV_LABEL, rev_in_scope
from slime.framework.validation import parse_spec
from slime.modules.lazyload.api import SERVICE_FENCE, ServiceFenceSpec, ServiceFenceStatus
from slime.modules.lazyload.context import FenceContext
from slime.modules.lazyload.domains import (
    Domain,
    Sources,
    compute_domains,
    is_valid_host,
    parse_namespace_selector,
    rendered_hosts,
)
from slime.modules.lazyload.learning import effective_metrics
from slime.modules.lazyload.names import label_problem, sidecar_host_problem

MAX_PROBLEMS = 5


def _ready(ok: bool, reason: str, message: str) -> list[ConditionUpdate]:
    return [ConditionUpdate(READY, ok, reason, message)]


def _join(problems: list[str]) -> str:
    shown = "; ".join(problems[:MAX_PROBLEMS])
    more = len(problems) - MAX_PROBLEMS
    return shown + (f"; and {more} more" if more > 0 else "")


def default_hosts(ctx: FenceContext, namespace: str) -> list[str]:
    """The hosts every Sidecar gets, in upstream's order."""
    hosts = [f"{ctx.istio_namespace}/*"]
    if ctx.slime_namespace != ctx.istio_namespace:
        hosts.append(f"{ctx.slime_namespace}/*")
    hosts.extend(h if h.endswith("/*") else f"*/{h}" for h in ctx.config.stableHost)
    return hosts


def global_sidecar_host(ctx: FenceContext, namespace: str) -> str | None:
    if ctx.config.mode == "namespace":
        return f"*/global-sidecar.{namespace}.svc.cluster.local"
    gs_ns = ctx.config.clusterGsNamespace
    if gs_ns and gs_ns != ctx.slime_namespace:
        return f"*/global-sidecar.{gs_ns}.svc.cluster.local"
    return None


def sidecar_hosts(domains: Mapping[str, Domain], ctx: FenceContext, namespace: str) -> list[str]:
    hosts = [*default_hosts(ctx, namespace), *rendered_hosts(domains)]
    gs = global_sidecar_host(ctx, namespace)
    if gs:
        hosts.append(gs)
    unique = list(dict.fromkeys(hosts))
    return sorted(unique, key=lambda h: h.encode())


def spec_problems(spec: ServiceFenceSpec) -> list[tuple[str, str]]:
    """(reason, message) for each user-written entry that would make istiod refuse the Sidecar."""
    problems = []
    for key in spec.host:
        where = f"spec.host[{key!r}]"
        if ":" in key:
            problems.append(("InvalidHost", f"{where}: a host has no port"))
        elif not is_valid_host(key):
            continue  # upstream ignores global-sidecar and unknown hosts; so do we
        elif "/" in key and not key.endswith("/*"):
            problems.append(("InvalidHost", f"{where}: write a host name or <namespace>/*"))
        else:
            problem = sidecar_host_problem(key if key.endswith("/*") else f"*/{key}")
            if problem:
                problems.append(("InvalidHost", f"{where}: {problem}"))
    for i, entry in enumerate(spec.namespaceSelector):
        try:
            parse_namespace_selector(entry)
        except ValueError as e:
            problems.append(("InvalidNamespaceSelector", f"spec.namespaceSelector[{i}]: {e}"))
    if spec.workloadSelector is not None:
        for k, v in spec.workloadSelector.labels.items():
            problem = label_problem(k, v)
            if problem:
                problems.append(("InvalidWorkloadSelector", f"spec.workloadSelector.labels: {problem}"))
    return problems


def workload_labels(spec: ServiceFenceSpec, name: str, ctx: FenceContext) -> tuple[dict[str, str] | None, str, str]:
    """(labels, reason, message): the Sidecar's workload selector, or None with why not."""
    ws = spec.workloadSelector
    if ws is not None and ws.labels:
        return dict(ws.labels), "", ""
    if ws is not None and ws.fromService:
        if ctx.service is None:
            return None, "ServiceNotFound", f"spec.workloadSelector.fromService: Service {name} not found"
        selector = (ctx.service.get("spec") or {}).get("selector") or {}
        if not selector:
            return None, "ServiceWithoutSelector", (
                f"spec.workloadSelector.fromService: Service {name} has no selector; "
                "its Sidecar would apply to every workload of the namespace")
        return {str(k): str(v) for k, v in selector.items()}, "", ""
    labels = {ctx.service_label: name}
    problem = label_problem(ctx.service_label, name)
    if problem:
        return None, "InvalidWorkloadSelector", (
            f"metadata.name: cannot be the {ctx.service_label!r} label value of the default workload selector "
            f"({problem}); set spec.workloadSelector")
    return labels, "", ""


def sidecar(cr: Mapping[str, Any], hosts: list[str], labels: dict[str, str]) -> dict[str, Any]:
    meta = cr.get("metadata") or {}
    out_meta: dict[str, Any] = {"name": meta.get("name"), "namespace": meta.get("namespace") or "default"}
    rev = (meta.get("labels") or {}).get(REV_LABEL)
    if rev is not None:
        out_meta["labels"] = {REV_LABEL: rev}
    if meta.get("uid"):
        out_meta["ownerReferences"] = [{
            "apiVersion": SERVICE_FENCE.api_version,
            "kind": SERVICE_FENCE.kind,
            "name": meta.get("name"),
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }]
    return {
        "apiVersion": SIDECAR.api_version,
        "kind": SIDECAR.kind,
        "metadata": out_meta,
        "spec": {"egress": [{"hosts": hosts}], "workloadSelector": {"labels": labels}},
    }


def _previous(cr: Mapping[str, Any]) -> ServiceFenceStatus:
    raw = cr.get("status") or {}
    try:
        return ServiceFenceStatus.model_validate(
            {k: raw[k] for k in ("domains", "metricStatus", "lastSeen") if k in raw})
    except ValueError:
        return ServiceFenceStatus()  # a status we cannot read is recomputed from scratch


def render(cr: Mapping[str, Any], ctx: FenceContext) -> Rendered:
    meta = cr.get("metadata") or {}
    name, ns = str(meta.get("name") or ""), str(meta.get("namespace") or "default")
    if not rev_in_scope(str((meta.get("labels") or {}).get(REV_LABEL, "")), ctx.istio_rev, ctx.strict_rev):
        return out_of_scope()
    spec, errors = parse_spec(ServiceFenceSpec, cr.get("spec"))
    if spec is None or errors:
        return Rendered(objects=None, conditions=_ready(False, "InvalidSpec", _join(errors)))
    problems = spec_problems(spec)
    if problems:
        return Rendered(objects=None, conditions=_ready(False, problems[0][0], _join([m for _, m in problems])))

    previous = _previous(cr)
    metrics, seen = effective_metrics(previous.metricStatus, previous.lastSeen, ctx)
    sources = Sources(services=ctx.services, namespaces=ctx.namespaces, destinations=ctx.destinations,
                      aliases=ctx.config.domainAliases, now=ctx.now, expire_wait=ctx.config.expire_wait)
    domains = compute_domains(spec.host, spec.namespaceSelector, [s.selector for s in spec.labelSelector],
                              metrics, previous.domains, sources)
    status: dict[str, Any] = {"domains": {k: d.as_status() for k, d in domains.items()},
                              "metricStatus": dict(sorted(metrics.items()))}
    if seen:
        status["lastSeen"] = dict(sorted(seen.items()))

    if not spec.enable:
        return Rendered(objects=[], status=status,
                        conditions=_ready(True, "Disabled", "spec.enable is false: no Sidecar"))
    labels, reason, message = workload_labels(spec, name, ctx)
    if labels is None:
        return Rendered(objects=None, status=status, conditions=_ready(False, reason, message))
    hosts = sidecar_hosts(domains, ctx, ns)
    bad = [p for p in (sidecar_host_problem(h) for h in hosts) if p]
    if bad:  # only reachable through a config or status Istio would refuse
        return Rendered(objects=None, status=status, conditions=_ready(False, "InvalidHost", _join(bad)))
    waiting = sum(1 for d in domains.values() if d.status == "EXPIREWAIT")
    note = f" ({waiting} expiring)" if waiting else ""
    return Rendered(
        objects=[sidecar(cr, hosts, labels)],
        status=status,
        conditions=_ready(True, "SidecarRendered", f"Sidecar {ns}/{name}: {len(hosts)} egress hosts{note}"),
    )
