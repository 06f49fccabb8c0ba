"""Learning dependencies from traffic. Pure (the clock is always passed in).

* ``AccessLogEntry`` -> learned hosts: upstream's conversion (``producer.go``). The caller is the
  Service(s) whose Endpoints or EndpointSlices hold the entry's direct remote address; only inbound
  entries of the global-sidecar count (its istio-proxy's ``inbound|<port>||``, or its forwarder's
  ``original_dst``: calls it forwarded); the authority, without its port and
  unless it is an IP, becomes a full host by its number of DNS labels.
* ``LearningBuffer``: what was learned since the last status write, per fence. Any number of calls
  make a fence due at most once per ``learnInterval``; only news (a new host, or a TTL refresh that
  is due) make it due at all. A render gets what the fence's last ``due`` released, never what came
  after it: the evaluations its own writes cause do not write again before the next interval.
* ``effective_metrics``: the fence's ``metricStatus``/``lastSeen`` after merging what was learned and
  dropping what outlived ``dependencyTTL``.
* ``prometheus_queries``: upstream's prometheus source mode (``$namespace``, ``$source_app``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from slime.framework.metrics import Query, build_queries
from slime.modules.lazyload.domains import fqdn, is_valid_host, metric_key
from slime.modules.lazyload.forwarder import ORIGINAL_DST
from slime.modules.lazyload.names import domain_problem

if TYPE_CHECKING:
    from slime.modules.lazyload.context import FenceContext

Obj = Mapping[str, Any]
FenceKey = tuple[str, str]  # (namespace, name)
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MAX_PENDING = 2000  # learned entries kept per fence between two writes


@dataclass(frozen=True)
class AccessLogEntry:
    """The three fields of an ``HTTPAccessLogEntry`` that upstream reads."""

    source_ip: str  # common_properties.downstream_direct_remote_address.socket_address.address
    upstream_cluster: str  # common_properties.upstream_cluster
    authority: str  # request.authority


# ---------------------------------------------------------------------------
# Who called: IP -> Services


def ip_index(endpoints: Iterable[Obj], slices: Iterable[Obj] = ()) -> dict[str, list[FenceKey]]:
    """Pod IP -> the Services (namespace, name) whose Endpoints or EndpointSlices hold it, ready or not
    (a pod behind several Services counts for each, as upstream since its PR #456)."""
    out: dict[str, set[FenceKey]] = {}
    for ep in endpoints:
        meta = ep.get("metadata") or {}
        key = (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
        for subset in ep.get("subsets") or []:
            for addr in [*(subset.get("addresses") or []), *(subset.get("notReadyAddresses") or [])]:
                if addr.get("ip"):
                    out.setdefault(str(addr["ip"]), set()).add(key)
    for sl in slices:
        meta = sl.get("metadata") or {}
        svc = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not svc:
            continue
        key = (str(meta.get("namespace") or "default"), str(svc))
        for endpoint in sl.get("endpoints") or []:
            for ip in endpoint.get("addresses") or []:
                out.setdefault(str(ip), set()).add(key)
    return {ip: sorted(keys) for ip, keys in out.items()}


def known_services(endpoints: Iterable[Obj], slices: Iterable[Obj] = ()) -> set[FenceKey]:
    """(namespace, name) of every Service with an Endpoints object or EndpointSlices."""
    out = set()
    for ep in endpoints:
        meta = ep.get("metadata") or {}
        out.add((str(meta.get("namespace") or "default"), str(meta.get("name") or "")))
    for sl in slices:
        meta = sl.get("metadata") or {}
        svc = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if svc:
            out.add((str(meta.get("namespace") or "default"), str(svc)))
    return out


# ---------------------------------------------------------------------------
# What was called: authority -> host


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def full_host(authority: str, source_ns: str, services: set[FenceKey]) -> str | None:
    """The host a call's authority names, as upstream completes it; None for an IP or nothing."""
    if authority.startswith("["):  # [v6]:port
        return None
    host = authority.partition(":")[0].strip().lower().rstrip(".")
    if not host or _is_ip(host):
        return None
    labels = host.split(".")
    if len(labels) == 1:
        return fqdn(host, source_ns)
    if len(labels) == 2 or (len(labels) == 3 and labels[2] == "svc"):
        name, ns = labels[0], labels[1]
        return fqdn(name, ns) if (ns, name) in services else host
    return host


def learned_hosts(entry: AccessLogEntry, ips: Mapping[str, Sequence[FenceKey]], services: set[FenceKey],
                  short_domain: bool = False) -> tuple[list[FenceKey], list[str]]:
    """(caller fences, learned hosts) of one entry; both empty when it does not count."""
    parts = entry.upstream_cluster.split("|")
    if entry.upstream_cluster != ORIGINAL_DST and (len(parts) != 4 or parts[0] != "inbound"):
        return [], []  # the global-sidecar's outbound entries, or not from it
    callers = list(ips.get(entry.source_ip, ()))
    if not callers:
        return [], []
    host = full_host(entry.authority, callers[0][0], services)
    if host is None:
        return [], []
    hosts = [host]
    raw = entry.authority.partition(":")[0].strip().lower()
    if short_domain and raw != host:
        hosts.append(raw)
    hosts = [h for h in hosts if is_valid_host(h) and domain_problem(h) is None]
    return (callers, hosts) if hosts else ([], [])


def convert_batch(entries: Iterable[AccessLogEntry], ips: Mapping[str, Sequence[FenceKey]],
                  services: set[FenceKey], short_domain: bool = False) -> dict[FenceKey, dict[str, int]]:
    """Fence -> {metric key: number of calls in this batch}."""
    out: dict[FenceKey, dict[str, int]] = {}
    for entry in entries:
        callers, hosts = learned_hosts(entry, ips, services, short_domain)
        for caller in callers:
            counts = out.setdefault(caller, {})
            for h in hosts:
                key = metric_key(h)
                counts[key] = counts.get(key, 0) + 1
    return out


# ---------------------------------------------------------------------------
# Between status writes


@dataclass
class _Pending:
    learned: dict[str, str] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    dirty: bool = False
    last_flush: float = float("-inf")
    released: tuple[dict[str, str], dict[str, int]] = field(default_factory=lambda: ({}, {}))  # at the last due


class LearningBuffer:
    """Learned entries per fence until its status holds them. Not thread-safe: one owner (the event loop).

    ``observe`` takes a batch with the fence's current ``metricStatus``/``lastSeen``; ``due(now)`` gives
    the fences to re-render now (each at most once per ``interval``) and releases what they learned so
    far; ``record`` is what was released, which every render merges until the next ``due`` (what came
    later waits for it, so a render that the fence's own status write causes brings nothing new);
    ``written`` drops what a status write persisted."""

    def __init__(self, interval: float, ttl: float = 0.0) -> None:
        self.interval = interval
        self.ttl = ttl
        self._fences: dict[FenceKey, _Pending] = {}

    def observe(self, fence: FenceKey, counts: Mapping[str, int], now: float,
                status_metrics: Mapping[str, str], status_seen: Mapping[str, int]) -> bool:
        """Record one batch for ``fence``; True when it brought news."""
        p = self._fences.setdefault(fence, _Pending())
        news = False
        for key, count in counts.items():
            if key not in status_metrics and key not in p.learned:
                if len(p.learned) >= MAX_PENDING:
                    continue
                p.learned[key] = str(count)  # upstream: the first batch's count, never changed
                news = True
            if key in status_metrics or key in p.learned:
                # A refresh of lastSeen is news once it moved by a quarter of the TTL since the last write
                # (and was not already pending).
                persisted = status_seen.get(key, 0)
                pending = p.seen.get(key, persisted) - persisted >= self.ttl / 4
                if self.ttl > 0 and now - persisted >= self.ttl / 4 and not pending:
                    news = True
                p.seen[key] = int(now)
        p.dirty = p.dirty or news
        return news

    def due(self, now: float) -> list[FenceKey]:
        out = []
        for fence, p in self._fences.items():
            if p.dirty and now - p.last_flush >= self.interval:
                p.dirty = False
                p.last_flush = now
                p.released = (dict(p.learned), dict(p.seen))
                out.append(fence)
        return sorted(out)

    def next_due(self) -> float | None:
        times = [p.last_flush + self.interval for p in self._fences.values() if p.dirty]
        return min(times) if times else None

    def record(self, fence: FenceKey) -> tuple[dict[str, str], dict[str, int]]:
        p = self._fences.get(fence)
        return (dict(p.released[0]), dict(p.released[1])) if p else ({}, {})

    def written(self, fence: FenceKey, metrics: Mapping[str, str], seen: Mapping[str, int]) -> None:
        """A status holding ``metrics``/``seen`` was written for ``fence``."""
        p = self._fences.get(fence)
        if p is None:
            return
        def unwritten(learned: dict[str, str], times: dict[str, int]) -> tuple[dict[str, str], dict[str, int]]:
            return ({k: v for k, v in learned.items() if k not in metrics},
                    {k: t for k, t in times.items() if t > seen.get(k, -1)})

        p.learned, p.seen = unwritten(p.learned, p.seen)
        p.released = unwritten(*p.released)
        # The record stays (its last_flush paces the next write) until the fence is deleted: ``forget``.

    def forget(self, fence: FenceKey) -> None:
        self._fences.pop(fence, None)

    def __len__(self) -> int:
        """Fences with learned entries not written yet."""
        return sum(1 for p in self._fences.values() if p.learned or p.dirty)


def effective_metrics(status_metrics: Mapping[str, str], status_seen: Mapping[str, int],
                      ctx: FenceContext) -> tuple[dict[str, str], dict[str, int]]:
    """The fence's learned dependencies to write: ``metricStatus`` and ``lastSeen``."""
    if ctx.config.source == "prometheus":
        if ctx.prometheus is None:
            return dict(status_metrics), {}
        return dict(ctx.prometheus), {}  # replaced wholesale by each query, as upstream
    metrics = dict(status_metrics)
    for key, value in ctx.learned.items():
        metrics.setdefault(key, value)
    seen: dict[str, int] = {}
    for key in metrics:
        times = [t for t in (status_seen.get(key), ctx.seen.get(key)) if t is not None]
        if times:
            seen[key] = max(times)
    ttl = ctx.config.ttl
    if ttl > 0:
        for key in list(metrics):
            if key not in seen:
                seen[key] = int(ctx.now)  # written before lastSeen existed: its clock starts now
            elif ctx.now - seen[key] > ttl:
                del metrics[key]
                del seen[key]
    return metrics, seen


def ttl_deadlines(seen: Mapping[str, int], ttl: float) -> list[float]:
    """When learned entries outlive the TTL."""
    return [t + ttl + 1 for t in seen.values()] if ttl > 0 else []


def prometheus_queries(namespace: str, name: str, handlers: Mapping[str, Any]) -> dict[str, Query]:
    """Upstream's queries of a fence: each handler with ``$namespace`` and ``$source_app`` (the fence's
    name) filled in; all handlers are queried (upstream required exactly one)."""
    return build_queries(handlers, namespace=namespace, name=name)


def merge_group_results(results: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """Several handlers' label-set maps as one ``metricStatus`` (the first handler wins a key)."""
    out: dict[str, str] = {}
    for result in results:
        for key, value in result.items():
            out.setdefault(key, value)
    return out

