"""A fence's dependency set (``status.domains``) from its spec, its learned data and the cluster. Pure.

Upstream's ``updateServicefenceDomain``, in its order (the first writer of a key wins, ``ns/*``
entries always overwrite): ``spec.host``, ``spec.namespaceSelector`` (ours: upstream never read it),
``spec.labelSelector``, ``status.metricStatus``; then the merge with the previous domains (a domain
that was ACTIVE and is gone turns EXPIREWAIT, one already EXPIREWAIT or EXPIRE is dropped).

Differences, on purpose:

* EXPIREWAIT is a real grace period: the domain stays (and stays in the Sidecar) until
  ``expireAt`` = the time it went away + ``expireWait``; upstream dropped it on the very next
  reconcile, which its own status write triggered.
* VirtualService expansion works (upstream's map has been empty since 2023) and follows Istio:
  short hosts are resolved in the VirtualService's namespace, every route kind counts (http, tcp,
  tls, mirrors), several VirtualServices of one host add up, and a deleted one is gone at once.
* An alias that already exists no longer stops the remaining aliases of that host.
* Learned dependencies expire after ``dependencyTTL`` without a report (upstream: never).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from slime.modules.lazyload.api import ACTIVE, EXPIRE, EXPIREWAIT, Destinations, RecyclingStrategy
from slime.modules.lazyload.config import DomainAlias
from slime.modules.lazyload.names import domain_problem, is_dns_label

Obj = Mapping[str, Any]
SVC_SUFFIX = "svc.cluster.local"
_EXPAND = re.compile(r"\$(?:(\$)|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")
_METRIC_PREFIXES = ("destination_service", "request_host")


@dataclass
class Domain:
    hosts: list[str]
    status: str = ACTIVE
    expire_at: int | None = None

    def as_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.hosts:
            out["hosts"] = list(self.hosts)
        if self.status != ACTIVE:  # jsonpb leaves the zero value out
            out["status"] = self.status
        if self.status == EXPIREWAIT and self.expire_at is not None:
            out["expireAt"] = self.expire_at
        return out


@dataclass(frozen=True)
class Sources:
    """What the domains are computed from, besides the spec."""

    services: Sequence[Obj] = ()  # every Service (labelSelector, ns/*)
    namespaces: Sequence[Obj] = ()  # every Namespace (namespaceSelector label selectors)
    destinations: Mapping[str, Sequence[str]] = field(default_factory=dict)  # host -> VS destinations
    aliases: Sequence[DomainAlias] = ()
    now: float = 0.0
    expire_wait: float = 0.0


def _meta(obj: Obj) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _labels(obj: Obj) -> Mapping[str, str]:
    return _meta(obj).get("labels") or {}


def is_valid_host(host: str) -> bool:
    """Upstream's filter of learned and declared hosts."""
    return not ("global-sidecar" in host or ":" in host or "unknown" in host)


def fqdn(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.{SVC_SUFFIX}"


# ---------------------------------------------------------------------------
# Domain aliases


def expand_template(template: str, match: re.Match[str]) -> str:
    """Go's ``Regexp.Expand``: ``$name``/``${name}``/``$1``; an unknown group is empty; ``$$`` is ``$``."""
    groups = match.re.groupindex

    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(3)
        if name.isdigit():
            index = int(name)
            return (match.group(index) or "") if index <= match.re.groups else ""
        return (match.group(name) or "") if name in groups else ""

    return _EXPAND.sub(one, template)


def aliases_of(host: str, rules: Iterable[DomainAlias]) -> list[str]:
    """``[host, alias...]``: each rule whose pattern matches ``host`` exactly once adds its templates."""
    out = [host]
    for rule in rules:
        matches = list(re.finditer(rule.pattern, host))
        if len(matches) != 1:
            continue
        for template in rule.templates:
            alias = expand_template(template, matches[0])
            if alias:
                out.append(alias)
    return out


# ---------------------------------------------------------------------------
# VirtualService expansion


def resolve_host(host: str, namespace: str) -> str:
    """Istio's short-name resolution: a name without a dot is in the object's namespace."""
    return host if "." in host or host == "*" else fqdn(host, namespace)


def _route_hosts(spec: Mapping[str, Any]) -> list[str]:
    hosts: list[str] = []
    for kind in ("http", "tcp", "tls"):
        for rule in spec.get(kind) or []:
            if not isinstance(rule, Mapping):
                continue
            for route in rule.get("route") or []:
                host = ((route or {}).get("destination") or {}).get("host")
                if isinstance(host, str) and host:
                    hosts.append(host)
            mirror = (rule.get("mirror") or {}).get("host")
            if isinstance(mirror, str) and mirror:
                hosts.append(mirror)
            for m in rule.get("mirrors") or []:
                host = ((m or {}).get("destination") or {}).get("host")
                if isinstance(host, str) and host:
                    hosts.append(host)
    return hosts


def destination_map(virtual_services: Iterable[Obj]) -> dict[str, list[str]]:
    """host -> the other hosts its VirtualServices route to (FQDNs, sorted). Wildcard hosts are skipped."""
    out: dict[str, set[str]] = {}
    for vs in virtual_services:
        ns = str(_meta(vs).get("namespace") or "default")
        spec = vs.get("spec") or {}
        targets = {resolve_host(h, ns) for h in _route_hosts(spec)}
        for raw in spec.get("hosts") or []:
            if not isinstance(raw, str) or raw.startswith("*"):
                continue
            host = resolve_host(raw, ns)
            dests = {t for t in targets if t != host and not t.startswith("*") and domain_problem(t) is None}
            if dests:
                out.setdefault(host, set()).update(dests)
    return {h: sorted(d) for h, d in sorted(out.items())}


# ---------------------------------------------------------------------------
# Selectors


def parse_namespace_selector(entry: str) -> tuple[str | None, list[tuple[str, str, str]]]:
    """A ``namespaceSelector`` entry: (namespace name, None) or (None, [(key, op, value)]).

    ``shop`` names a namespace; ``team=shop``, ``env!=dev``, ``istio-injection`` (exists) and ``!legacy``
    (absent), comma-separated, are ANDed requirements on Namespace labels. ValueError otherwise."""
    text = entry.strip()
    if is_dns_label(text):
        return text, []
    reqs: list[tuple[str, str, str]] = []
    for part in text.split(","):
        part = part.strip()
        if "!=" in part:
            key, _, value = part.partition("!=")
            reqs.append((key.strip(), "!=", value.strip()))
        elif "=" in part:
            key, _, value = part.partition("=")
            reqs.append((key.strip().rstrip("="), "=", value.strip().lstrip("=")))
        elif part.startswith("!"):
            reqs.append((part[1:].strip(), "!", ""))
        else:
            reqs.append((part, "exists", ""))
    for key, _, _ in reqs:
        if not key or not re.fullmatch(r"([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", key):
            raise ValueError(f"{entry!r} is neither a namespace name nor a label selector such as team=shop")
    return None, reqs


def _selects(labels: Mapping[str, str], reqs: Sequence[tuple[str, str, str]]) -> bool:
    for key, op, value in reqs:
        have = labels.get(key)
        if (op == "=" and have != value) or (op == "!=" and have == value) \
                or (op == "exists" and have is None) or (op == "!" and have is not None):
            return False
    return True


def selected_namespaces(entries: Sequence[str], namespaces: Sequence[Obj]) -> list[str]:
    """Namespaces named or selected by ``namespaceSelector`` (sorted, unique)."""
    out: set[str] = set()
    for entry in entries:
        name, reqs = parse_namespace_selector(entry)
        if name is not None:
            out.add(name)
            continue
        out.update(str(_meta(n).get("name")) for n in namespaces if _selects(_labels(n), reqs))
    return sorted(out)


def services_matching(selectors: Iterable[Mapping[str, str]], services: Iterable[Obj]) -> list[str]:
    """FQDNs of Services whose labels match any selector (labels of one selector are ANDed); an empty
    selector matches nothing (upstream's loop never ran for it)."""
    sels = [s for s in selectors if s]
    out = []
    for svc in services:
        labels = _labels(svc)
        if any(all(labels.get(k) == v for k, v in sel.items()) for sel in sels):
            out.append(fqdn(str(_meta(svc).get("name")), str(_meta(svc).get("namespace") or "default")))
    return sorted(set(out))


# ---------------------------------------------------------------------------
# metricStatus keys


def metric_host(key: str) -> str | None:
    """The host of a ``metricStatus`` key (``{destination_service="a.b.svc.cluster.local:80"}``), or None."""
    text = key.strip("{}")
    if not text.startswith(_METRIC_PREFIXES):
        return None
    parts = text.split('"')
    if len(parts) != 3:
        return None
    return parts[1].partition(":")[0]


def metric_key(host: str) -> str:
    return f'{{destination_service="{host}"}}'


# ---------------------------------------------------------------------------
# The domains


def strategy_status(strategy: RecyclingStrategy | None, now: float) -> str:
    """ACTIVE or EXPIRE for a static dependency: stable, then deadline, then auto (upstream's order)."""
    if strategy is None or strategy.stable is not None:
        return ACTIVE
    if strategy.deadline is not None:
        expire = strategy.deadline.expire
        return EXPIRE if expire is not None and now > expire.secs else ACTIVE
    if strategy.auto is not None:
        called, duration = strategy.RecentlyCalled, strategy.auto.duration
        if called is not None and duration is not None and now - called.secs > duration.secs:
            return EXPIRE
    return ACTIVE


def _valid_names(host: str, src: Sources) -> list[str]:
    # Generated names (aliases, VS destinations) Istio would refuse are left out.
    return [n for n in aliases_of(host, src.aliases) if domain_problem(n) is None]


def _targets(name: str, src: Sources) -> list[str]:
    return [name, *(d for d in src.destinations.get(name, ()) if d != name)]


def _namespace_wildcard(ns: str, src: Sources) -> Domain:
    hosts: list[str] = []
    for svc in src.services:
        if str(_meta(svc).get("namespace") or "default") != ns:
            continue
        for dest in src.destinations.get(fqdn(str(_meta(svc).get("name")), ns), ()):
            labels = dest.split(".")
            if len(labels) > 1 and labels[1] == ns:
                continue  # already visible through ns/*
            if dest not in hosts:
                hosts.append(dest)
    return Domain(hosts=sorted(hosts))


def compute_domains(
    hosts: Mapping[str, RecyclingStrategy | None],
    namespace_entries: Sequence[str],
    label_selectors: Sequence[Mapping[str, str]],
    metric_status: Mapping[str, str],
    previous: Mapping[str, Destinations],
    src: Sources,
) -> dict[str, Domain]:
    """``status.domains``, sorted by key. ``hosts`` must already be checked (see ``render``)."""
    domains: dict[str, Domain] = {}

    def add(host: str, status: str) -> None:
        if not is_valid_host(host):
            return
        for name in _valid_names(host, src):
            if name not in domains:
                domains[name] = Domain(hosts=_targets(name, src), status=status)

    for key in sorted(hosts):
        if key.endswith("/*"):
            domains[key] = _namespace_wildcard(key[:-2], src)
        else:
            add(key, strategy_status(hosts[key], src.now))
    for ns in selected_namespaces(namespace_entries, src.namespaces):
        domains[f"{ns}/*"] = _namespace_wildcard(ns, src)
    for host in services_matching(label_selectors, src.services):
        add(host, ACTIVE)
    for key in sorted(metric_status):
        learned = metric_host(key)
        if learned:
            add(learned, ACTIVE)
    for key in sorted(previous):
        if key in domains:
            continue
        prev = previous[key]
        if prev.state == ACTIVE:
            domains[key] = Domain(hosts=list(prev.hosts), status=EXPIREWAIT,
                                  expire_at=int(src.now + src.expire_wait))
        elif prev.state == EXPIREWAIT and prev.expireAt is not None and src.now < prev.expireAt:
            domains[key] = Domain(hosts=list(prev.hosts), status=EXPIREWAIT, expire_at=prev.expireAt)
    return dict(sorted(domains.items()))


def rendered_hosts(domains: Mapping[str, Domain]) -> list[str]:
    """Sidecar hosts from the domains that are ACTIVE or EXPIREWAIT, in upstream's order (not sorted)."""
    out: list[str] = []
    for key, d in domains.items():
        if d.status not in (ACTIVE, EXPIREWAIT):
            continue
        if key.endswith("/*"):
            out.append(key)
        out.extend(f"*/{h}" for h in d.hosts)
    return out


def expiry_times(domains: Mapping[str, Domain], hosts: Mapping[str, RecyclingStrategy | None]) -> list[float]:
    """Future moments at which these domains change by themselves (EXPIREWAIT ends, deadlines)."""
    times: list[float] = [float(d.expire_at) for d in domains.values()
                          if d.status == EXPIREWAIT and d.expire_at is not None]
    for strategy in hosts.values():
        if strategy is not None and strategy.stable is None and strategy.deadline is not None \
                and strategy.deadline.expire is not None:
            times.append(float(strategy.deadline.expire.secs) + 1)
    return times
