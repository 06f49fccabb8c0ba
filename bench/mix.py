"""The SmartLimiter mix every benchmark phase uses, so render and cluster numbers describe the same work.

Out of every 10 limiters: 4 inbound local with a header matcher, 3 ``average`` over the pod count,
2 ``global`` (RLS) with a header matcher, 1 adaptive (``{{._base.cpu.sum}}>100``). Every Service has
Running pods (2 for ``average``, 1 otherwise), as a real mesh would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GROUP, VERSION, PLURAL = "microservice.slime.io", "v1alpha2", "smartlimiters"
PATTERN = ("header", "average", "global", "header", "average", "header", "global", "average", "header", "adaptive")
PODS = {"header": 1, "average": 2, "global": 1, "adaptive": 1}
CPU_QUERY = 'sum(container_cpu_usage_seconds_total{namespace="$namespace",pod=~"$pod_name"})'
ADAPTIVE_CONDITION = "{{._base.cpu.sum}}>100"
RLS_CM = "rate-limit-config"
RLS = {"service": "rate-limit.istio-system.svc.cluster.local", "port": 18081}


@dataclass(frozen=True)
class Item:
    """One limited service: its Service, pods and SmartLimiter."""

    namespace: str
    name: str
    kind: str

    @property
    def labels(self) -> dict[str, str]:
        return {"app": self.name}

    @property
    def pod_names(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(PODS[self.kind])]

    def service(self) -> dict[str, Any]:
        # Headless: the dev cluster's /24 service range holds only ~250 cluster IPs (the limiter uses the selector).
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"clusterIP": "None", "selector": self.labels, "ports": [{"name": "http", "port": 9080}]}}

    def pods(self) -> list[dict[str, Any]]:
        """As a kubelet would report them (Running), for the pure render's context."""
        return [{"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": p, "namespace": self.namespace, "labels": self.labels},
                 "status": {"phase": "Running"}} for p in self.pod_names]

    def smartlimiter(self, quota: int = 10, uid: str = "") -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace, **({"uid": uid} if uid else {})}
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SmartLimiter", "metadata": meta,
                "spec": {"sets": {"_base": {"descriptor": [descriptor(self.kind, quota)]}}}}


def descriptor(kind: str, quota: int) -> dict[str, Any]:
    """One descriptor of ``kind``; local kinds carry ``quota`` as maxTokens in the EnvoyFilter."""
    target = {"port": 9080}
    if kind == "header":
        return {"action": {"quota": str(quota), "fill_interval": {"seconds": 1}, "strategy": "single"},
                "condition": "true", "match": [{"name": "user", "exact_match": "alice"}], "target": target}
    if kind == "average":  # 2 Running pods: quota*2 shared out is quota per pod
        return {"action": {"quota": f"{quota * PODS['average']}/{{{{._base.pod}}}}", "fill_interval": {"seconds": 60},
                           "strategy": "average"}, "condition": "true", "target": target}
    if kind == "global":
        return {"action": {"quota": str(quota * 60), "fill_interval": {"seconds": 60}, "strategy": "global"},
                "condition": "true", "match": [{"name": "x-tenant", "exact_match": "acme"}], "target": target}
    if kind == "adaptive":
        return {"action": {"quota": str(quota), "fill_interval": {"seconds": 1}, "strategy": "single"},
                "condition": ADAPTIVE_CONDITION, "target": target}
    raise ValueError(kind)


def items(count: int, namespaces: int, prefix: str = "svc") -> list[Item]:
    """``count`` items spread round-robin over ``namespaces`` namespaces bench-0, bench-1, ..."""
    return [Item(f"bench-{i % namespaces}", f"{prefix}-{i:05d}", PATTERN[i % len(PATTERN)]) for i in range(count)]


def module_general(refresh: str) -> dict[str, Any]:
    return {"refresh": refresh, "rlsConfigMap": {"name": RLS_CM, "namespace": "istio-system"}, "rls": RLS}


def module_config(refresh: str, prometheus_url: str | None) -> dict[str, Any]:
    """The operator's ``--config``: one Prometheus handler (cpu.sum), as the integration tests use."""
    cfg: dict[str, Any] = {"name": "limiter", "kind": "limiter", "enable": True, "general": module_general(refresh)}
    if prometheus_url:
        cfg["metric"] = {"prometheus": {"address": prometheus_url, "handlers": {"cpu.sum": {"query": CPU_QUERY}}}}
    return cfg
