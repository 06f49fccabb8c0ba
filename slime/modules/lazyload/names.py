"""Name checks, as the apiserver and istiod apply them, so that nothing we render is refused. Pure.

* Kubernetes object names and namespaces (DNS-1123 subdomain / label).
* Label keys and values (a Sidecar's ``workloadSelector.labels``).
* Sidecar egress hosts, as istiod validates them (``namespace/dnsName``: the namespace ``*``, ``.``,
  ``~`` or a DNS-1123 label; the name ``*`` or a domain of at least two labels (istiod refuses short
  names) whose first label may be a wildcard, each label a DNS-1123 label of letters, digits and ``-``,
  the last one not all digits).
* Go-style durations (``500ms``, ``1m30s``, ``24h``).
"""

from __future__ import annotations

import re

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# istiod's DNS label: letters of either case.
_ISTIO_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?")
_ISTIO_WILDCARD_LABEL = re.compile(r"\*|(\*|\*-)?[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def check_dns_label(value: str, what: str = "name") -> str:
    if len(value) > 63 or not _LABEL.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a DNS-1123 label (lower case letters, digits, '-', ≤ 63)")
    return value


def check_object_name(value: str, what: str = "name") -> str:
    if len(value) > 253 or not _SUBDOMAIN.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a valid object name (DNS-1123 subdomain, ≤ 253)")
    return value


def is_dns_label(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL.fullmatch(value))


def label_problem(key: str, value: str) -> str | None:
    """Why ``key: value`` is not a valid Kubernetes label, or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not _SUBDOMAIN.fullmatch(prefix)):
        return f"label key {key!r}: prefix is not a DNS-1123 subdomain"
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return f"label key {key!r} is not a valid label name"
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        return f"label value {value!r} (key {key!r}) is not a valid label value (≤ 63, alphanumeric, '-_.')"
    return None


def domain_problem(name: str) -> str | None:
    """Why istiod would refuse ``name`` as the dnsName of a Sidecar host, or None."""
    if name == "*":
        return None
    if not name or len(name) > 255:
        return "domain name must be 1 to 255 characters"
    first, dot, rest = name.partition(".")
    if len(first) > 63 or not _ISTIO_WILDCARD_LABEL.fullmatch(first):
        return f"domain name {name!r} invalid (label {first!r} invalid)"
    if not dot:
        return f"{name!r}: short names (non FQDN) are not allowed"
    labels = rest.split(".")
    if labels[-1].isdigit():
        return f"domain name {name!r} invalid (top level domain {labels[-1]!r} cannot be all-numeric)"
    for i, label in enumerate(labels):
        if i == len(labels) - 1 and label == "":
            break  # a trailing dot: "istio.io."
        if len(label) > 63 or not _ISTIO_LABEL.fullmatch(label):
            return f"domain name {name!r} invalid (label {label!r} invalid)"
    return None


def sidecar_host_problem(host: str) -> str | None:
    """Why istiod would refuse ``host`` in a Sidecar's egress hosts, or None."""
    ns, slash, name = host.partition("/")
    if not slash:
        return f"host {host!r} must be of form namespace/dnsName"
    if not ns or not name:
        return f"host {host!r}: namespace and dnsName cannot be empty"
    if ns not in ("*", ".", "~") and not (len(ns) <= 63 and _ISTIO_LABEL.fullmatch(ns)):
        return f"host {host!r}: namespace {ns!r} is not a DNS-1123 label"
    return domain_problem(name)


def check_sidecar_host(host: str) -> str:
    problem = sidecar_host_problem(host)
    if problem:
        raise ValueError(problem)
    return host


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (``1h30m``, ``500ms``, ``10s``); ValueError otherwise."""
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"{text!r} is not a duration (e.g. 500ms, 10s, 5m, 24h)")
    return total
