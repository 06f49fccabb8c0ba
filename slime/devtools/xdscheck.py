"""Was a configuration applied and accepted? istiod's view (``/debug/syncz``) and Envoy's own.

A proxy has *accepted* what istiod pushed when, for every xDS type istiod sent, the last nonce sent
is the last one acked and there is no ``lastError`` (istiod records the NACK's message there), and
Envoy's ``*.update_rejected`` counters did not grow. :class:`Proxy` reads both for one Pod's Envoy;
:meth:`Proxy.wait_accepted` and :meth:`Proxy.wait_rejected` poll until a push has settled.

Also helpers to find things in Envoy's ``/config_dump`` (routes, HTTP filters, per-filter config).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

SHORT_TYPES = {
    "type.googleapis.com/envoy.config.cluster.v3.Cluster": "CDS",
    "type.googleapis.com/envoy.config.listener.v3.Listener": "LDS",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": "RDS",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": "EDS",
}


class NotAccepted(AssertionError):
    """A proxy did not accept its configuration (or did not get it in time)."""


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


@dataclass
class Proxy:
    """One Envoy that istiod configures: its proxy id (``<pod>.<namespace>``), admin URL, and istiod."""

    proxy_id: str
    admin_url: str  # http://<pod IP>:15000
    syncz: Callable[[], list[dict[str, Any]]]  # Istiod.syncz

    def config_dump(self) -> dict[str, Any]:
        data: dict[str, Any] = _get_json(f"{self.admin_url}/config_dump")
        return data

    def stats(self) -> dict[str, int]:
        """Envoy's counters and gauges by name."""
        data = _get_json(f"{self.admin_url}/stats?format=json")
        return {s["name"]: s["value"] for s in data.get("stats", []) if isinstance(s.get("value"), int)}

    def rejected(self) -> dict[str, int]:
        """The non-zero ``update_rejected`` counters (cumulative since Envoy started)."""
        return {k: v for k, v in self.stats().items() if k.endswith("update_rejected") and v}

    def endpoints(self, cluster: str) -> list[str]:
        """``ip:port`` of the healthy hosts Envoy has for ``cluster`` (admin /clusters)."""
        data = _get_json(f"{self.admin_url}/clusters?format=json")
        out = []
        for status in data.get("cluster_statuses", []):
            if status.get("name") != cluster:
                continue
            for host in status.get("host_statuses", []):
                health = host.get("health_status", {})
                if health.get("eds_health_status", "HEALTHY") == "HEALTHY":
                    addr = host["address"]["socket_address"]
                    out.append(f"{addr['address']}:{addr['port_value']}")
        return out

    def sync_status(self) -> dict[str, Any] | None:
        for entry in self.syncz():
            if entry.get("proxy") == self.proxy_id:
                return entry
        return None

    def problems(self, baseline: dict[str, int] | None = None) -> list[str]:
        """What stands between this proxy and "everything pushed was accepted" (empty: accepted)."""
        out: list[str] = []
        status = self.sync_status()
        if status is None:
            return [f"{self.proxy_id} is not connected to istiod"]
        for type_url, res in (status.get("resources") or {}).items():
            name = SHORT_TYPES.get(type_url, type_url.rsplit(".", 1)[-1])
            if not res.get("sent") or res.get("sent") == res.get("acked"):
                continue  # in sync (a lastError left from an earlier NACK no longer counts)
            if res.get("lastError"):
                out.append(f"istiod: {name} NACKed: {res['lastError']}")
            else:
                out.append(f"istiod: {name} sent {res.get('sent')} but acked {res.get('acked')}")
        before = baseline or {}
        for name, value in self.rejected().items():
            if value > before.get(name, 0):
                out.append(f"envoy: {name} = {value}")
        return out

    def wait_accepted(self, timeout: float = 30.0, baseline: dict[str, int] | None = None,
                      applied: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
        """Poll until the proxy is in sync with no NACK (and ``applied(config_dump)`` is truthy when
        given); return the last config_dump. Raise NotAccepted with what is wrong on timeout."""
        deadline = time.monotonic() + timeout
        problems: list[str] = []
        while True:
            try:
                problems = self.problems(baseline)
                if not problems:
                    dump = self.config_dump()
                    if applied is None or applied(dump):
                        # settled: no push between the two looks
                        if not self.problems(baseline):
                            return dump
                    problems = ["the expected configuration is not in Envoy's config_dump yet"]
            except OSError as e:
                problems = [f"cannot ask: {e}"]
            if time.monotonic() > deadline:
                raise NotAccepted(f"{self.proxy_id}: not accepted after {timeout:g}s: " + "; ".join(problems))
            time.sleep(0.2)

    def wait_rejected(self, timeout: float = 30.0, baseline: dict[str, int] | None = None) -> list[str]:
        """Poll until a NACK shows (istiod's lastError or an Envoy rejection counter); return the problems."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                problems = [p for p in self.problems(baseline) if "NACK" in p or p.startswith("envoy:")]
                if problems:
                    return problems
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.proxy_id}: no rejection within {timeout:g}s")
            time.sleep(0.2)


def cluster_stat(stats: dict[str, int], cluster: str, stat: str) -> int:
    """A cluster's counter, e.g. ``cluster_stat(s, "inbound|8080||", "upstream_rq_200")``. istiod
    gives clusters an ``alt_stat_name`` (the name plus ``;``): both spellings are looked up."""
    return stats.get(f"cluster.{cluster};.{stat}", stats.get(f"cluster.{cluster}.{stat}", 0))


# ---------------------------------------------------------------------------------------------
# config_dump navigation


def dump_sections(dump: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The config_dump entries whose ``@type`` ends with ``kind`` (e.g. ``RoutesConfigDump``)."""
    return [c for c in dump.get("configs", []) if c.get("@type", "").rsplit(".", 1)[-1] == kind]


def route_configs(dump: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for section in dump_sections(dump, "RoutesConfigDump"):
        for rc in section.get("dynamic_route_configs", []):
            yield rc["route_config"]
        for rc in section.get("static_route_configs", []):
            yield rc["route_config"]


def virtual_hosts(dump: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Every virtual host called ``name`` in any route configuration."""
    return [vh for rc in route_configs(dump) for vh in rc.get("virtual_hosts", []) if vh.get("name") == name]


def routes(dump: dict[str, Any], vhost: str, route: str | None = None) -> list[dict[str, Any]]:
    return [r for vh in virtual_hosts(dump, vhost) for r in vh.get("routes", [])
            if route is None or r.get("name") == route]


def cluster_names(dump: dict[str, Any]) -> set[str]:
    """The names of the clusters (static, active and warming) in a config_dump."""
    out = set()
    for section in dump_sections(dump, "ClustersConfigDump"):
        for key in ("static_clusters", "dynamic_active_clusters", "dynamic_warming_clusters"):
            for entry in section.get(key, []):
                out.add(entry.get("cluster", {}).get("name", ""))
    return out - {""}


def listeners(dump: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for section in dump_sections(dump, "ListenersConfigDump"):
        for entry in section.get("dynamic_listeners", []):
            state = entry.get("active_state") or entry.get("warming_state")
            if state:
                yield state["listener"]


def http_filter_names(listener: dict[str, Any]) -> list[list[str]]:
    """For each HTTP connection manager of a listener, its HTTP filter names in order."""
    out = []
    for chain in listener.get("filter_chains", []) + ([listener["default_filter_chain"]]
                                                      if listener.get("default_filter_chain") else []):
        for f in chain.get("filters", []):
            if f.get("name") == "envoy.filters.network.http_connection_manager":
                out.append([h.get("name", "") for h in f.get("typed_config", {}).get("http_filters", [])])
    return out


def has_http_filter(dump: dict[str, Any], listener_name: str, filter_name: str) -> bool:
    return any(filter_name in names for lst in listeners(dump) if lst.get("name") == listener_name
               for names in http_filter_names(lst))


def per_filter_config(item: dict[str, Any], filter_name: str) -> dict[str, Any] | None:
    """A route's or virtual host's ``typed_per_filter_config[filter_name]``."""
    value = (item.get("typed_per_filter_config") or {}).get(filter_name)
    return value if isinstance(value, dict) else None
