"""Metric sources shared by the limiter and lazyload.

Two parts:

* pure helpers (config models, pod counting, PromQL template substitution), which
  import no client and are safe for renders and unit tests;
* ``PrometheusSource``, a small blocking wrapper over prometheus-api-client. The
  operator calls it off the event loop (``asyncio.to_thread``).

Upstream (slime ``framework/model/source/k8s/metric.go`` and the limiter's
``producer.go``) is followed for the config shape, the ``$namespace`` /
``$pod_name`` / ``$source_app`` placeholders, the result keys (``<set>.<name>``,
``<name>``, ``<set>.pod``) and the value format. Differences, on purpose:

* every handler is queried (upstream's limiter kept only one, effectively random);
* substituted names are validated and regex-escaped, so a name cannot change the query;
* failures raise ``MetricsUnavailableError`` with a CamelCase reason instead of being logged
  and dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, field_validator

from slime.framework.api import SlimeModel

BASE_SET = "_base"

# ---------------------------------------------------------------------------
# Config models (the module config's `metric` section)


class Handler(SlimeModel):
    """A PromQL query whose result is a metric."""

    query: str = Field(default="", description="PromQL with $namespace, $pod_name, $source_app placeholders")
    # The number form is upstream's proto enum (0/1); the validator turns it into the name.
    type: Literal["Value", "Group"] | Literal[0, 1] = Field(
        default="Value",
        description="Value: one number per handler (per set with $pod_name); Group: label set -> value",
    )

    @field_validator("type", mode="before")
    @classmethod
    def _enum_number(cls, v: Any) -> Any:
        # Upstream's proto enum is accepted by number too (the lazyload samples write `type: 1`).
        if isinstance(v, int) and not isinstance(v, bool):
            return {0: "Value", 1: "Group"}.get(v, v)
        return v


class PrometheusConfig(SlimeModel):
    """A Prometheus and the queries read from it."""

    address: str = Field(min_length=1, description="Prometheus base URL, e.g. http://prometheus.istio-system:9090")
    handlers: dict[str, Handler] = Field(default_factory=dict, description="Named PromQL queries (the metric names)")


class K8sConfig(SlimeModel):
    """Metrics read from the Kubernetes API."""

    handlers: list[str] = Field(default_factory=list, description="legacy inline handlers, e.g. [pod]")


class MetricConfig(SlimeModel):
    prometheus: PrometheusConfig | None = Field(default=None, description="Metrics read from Prometheus")
    k8s: K8sConfig | None = Field(default=None, description="Metrics read from the Kubernetes API (pod counts)")


# ---------------------------------------------------------------------------
# Errors and retry pacing


class MetricsUnavailableError(Exception):
    """A metric query failed; ``reason`` is a short CamelCase word for a status condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass
class Backoff:
    """Exponential retry delays: initial, initial*factor, ... capped at ``cap``. No jitter, so tests
    can assert the exact sequence; callers with many limiters can add their own spread."""

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    attempts: int = 0

    def next_delay(self) -> float:
        # Stop growing the exponent once past the cap, so it never overflows.
        delay = min(self.cap, self.initial * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0


# ---------------------------------------------------------------------------
# Pods


def _matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    # Same as upstream's util.IsContain: every selector pair present; an empty selector matches all.
    return all(labels.get(k) == v for k, v in selector.items())


def _is_ready(pod: Mapping[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and not meta.get("deletionTimestamp")


def _labels(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return (pod.get("metadata") or {}).get("labels") or {}


def count_ready_pods(pods: Sequence[Mapping[str, Any]], selector: Mapping[str, str]) -> int:
    """Pods (Kubernetes API dicts) matching ``selector`` that are Running and not being deleted.

    An empty selector matches every pod, as upstream; a caller counting for a Service without a
    selector should not call this."""
    return sum(1 for p in pods if _is_ready(p) and _matches(_labels(p), selector))


def ready_pods(pods: Iterable[Mapping[str, Any]], selector: Mapping[str, str]) -> list[Mapping[str, Any]]:
    """The pods matching ``selector`` that are Running and not being deleted."""
    return [p for p in pods if _is_ready(p) and _matches(_labels(p), selector)]


def pods_by_set(
    pods: Sequence[Mapping[str, Any]],
    selector: Mapping[str, str],
    subsets: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, list[str]]:
    """Sorted names of ready pods per set: ``_base`` (the selector) and each subset (selector AND
    subset labels). Every set is present, possibly with an empty list."""
    ready = ready_pods(pods, selector)
    out: dict[str, list[str]] = {BASE_SET: sorted(_name(p) for p in ready)}
    for subset, labels in (subsets or {}).items():
        if subset == BASE_SET:
            continue  # `_base` is reserved for the whole service
        out[subset] = sorted(_name(p) for p in ready if _matches(_labels(p), labels))
    return out


def _name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name", ""))


def pod_metrics(
    pods: Sequence[Mapping[str, Any]],
    selector: Mapping[str, str],
    subsets: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """``{"_base.pod": "3", "<subset>.pod": "1", ...}``. Unlike upstream, a count of 0 is kept:
    it is a known value, not a missing one."""
    return {f"{s}.pod": str(len(names)) for s, names in pods_by_set(pods, selector, subsets).items()}


# ---------------------------------------------------------------------------
# Query building

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_PLACEHOLDER = re.compile(r"\$(namespace|pod_name|source_app)")


def _check_label(kind: str, value: str) -> str:
    if len(value) > 63 or not _DNS1123_LABEL.fullmatch(value):
        raise ValueError(f"{kind} {value!r} is not a DNS-1123 label")
    return value


def _check_subdomain(kind: str, value: str) -> str:
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(value):
        raise ValueError(f"{kind} {value!r} is not a DNS-1123 subdomain")
    return value


def _pod_regex(names: Sequence[str]) -> str:
    parts = []
    for n in names:
        _check_subdomain("pod name", n)
        # `.` is the only regex metacharacter a valid name can hold; `[.]` needs no backslash, so it
        # reads the same inside "..." and `...` PromQL strings.
        parts.append(n.replace(".", "[.]"))
    return "|".join(parts)


@dataclass(frozen=True)
class Query:
    promql: str
    group: bool = False


def build_queries(
    handlers: Mapping[str, Handler],
    *,
    namespace: str,
    name: str,
    pods: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Query]:
    """Expand handler templates into the queries to run, keyed by result key.

    * ``$namespace`` → ``namespace``; ``$source_app`` → ``name`` (the Service / CR name).
    * Value with ``$pod_name``: one query per set in ``pods`` (see ``pods_by_set``) with pods, key
      ``<set>.<handler>``, ``$pod_name`` → ``a|b|c``. Sets without pods get no query.
    * Value without ``$pod_name``: one query, key ``<handler>``.
    * Group: one query, key ``<handler>``; ``$pod_name`` (upstream left it literal) → the ``_base`` pods.
    Handlers with an empty query are skipped. Raises ValueError on a name that is not a valid
    Kubernetes name.
    """
    ns = _check_label("namespace", namespace)
    # Any object name (lazyload's workload fences have dots); it goes into exact matchers.
    app = _check_subdomain("name", name)
    sets = {s: list(p) for s, p in (pods or {}).items() if p}

    def fill(template: str, pod_names: Sequence[str] = ()) -> str:
        values = {"namespace": ns, "source_app": app, "pod_name": _pod_regex(pod_names)}
        # One pass, so a substituted value is never scanned again.
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)

    out: dict[str, Query] = {}
    for hname in sorted(handlers):
        h = handlers[hname]
        template = h.query.strip()
        if not template:
            continue
        uses_pods = "$pod_name" in template
        if h.type == "Group":
            if uses_pods and not sets.get(BASE_SET):
                continue
            out[hname] = Query(fill(template, sets.get(BASE_SET, ())), group=True)
        elif uses_pods:
            for set_name in sorted(sets, key=lambda s: (s != BASE_SET, s)):
                out[f"{set_name}.{hname}"] = Query(fill(template, sets[set_name]))
        else:
            out[hname] = Query(fill(template))
    return out


# ---------------------------------------------------------------------------
# Result conversion (pure; fed with the JSON `result` of /api/v1/query)


def format_value(raw: Any) -> str | None:
    """A sample value as upstream prints it (Go FormatFloat 'f', -1: shortest, no exponent, "2" not
    "2.0"). NaN and ±Inf give None: they carry no usable number (e.g. a quantile without traffic)."""
    v = float(raw)
    if not math.isfinite(v):
        return None
    return format(Decimal(repr(v)).normalize(), "f")


def label_string(metric: Mapping[str, str]) -> str:
    """Prometheus' label-set text as upstream keys group results: ``name{a="x", b="y"}`` with sorted
    labels; ``{}`` for no labels."""
    labels = sorted((k, v) for k, v in metric.items() if k != "__name__")
    name = metric.get("__name__", "")
    if not labels:
        return name or "{}"
    body = ", ".join(f'{k}="{_go_quote(v)}"' for k, v in labels)
    return f"{name}{{{body}}}"


def _go_quote(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _is_sample_pair(result: Any) -> bool:
    # Scalar and string results come as [timestamp, "value"]; vectors as a list of objects.
    return isinstance(result, list) and len(result) == 2 and isinstance(result[0], int | float)


def convert_value(key: str, result: Any) -> str | None:
    """One number from an instant-query result, or None when there is no data."""
    try:
        if _is_sample_pair(result):
            return format_value(result[1])
        if not isinstance(result, list):
            raise MetricsUnavailableError("BadResult", f"{key}: unexpected result {type(result).__name__}")
        if not result:
            return None  # no series: no data yet (upstream drops it as well)
        if any("value" not in s for s in result):
            raise MetricsUnavailableError("BadResult", f"{key}: range vector; use an instant query")
        if len(result) > 1:
            # Upstream refuses this too ("You need to sum up the monitoring data"); say it loudly.
            raise MetricsUnavailableError(
                "AmbiguousResult", f"{key}: returned {len(result)} series; aggregate to one (sum, max...)"
            )
        return format_value(result[0]["value"][1])
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise MetricsUnavailableError("BadResult", f"{key}: {e}") from e


def convert_group(key: str, result: Any) -> dict[str, str]:
    """Label-set text → value for each series, as upstream (``{destination_service="x"}`` → ``"3"``)."""
    try:
        if _is_sample_pair(result):
            v = format_value(result[1])
            return {} if v is None else {"{}": v}
        if not isinstance(result, list):
            raise MetricsUnavailableError("BadResult", f"{key}: unexpected result {type(result).__name__}")
        out: dict[str, str] = {}
        for s in result:
            if "value" not in s:
                raise MetricsUnavailableError("BadResult", f"{key}: range vector; use an instant query")
            v = format_value(s["value"][1])
            if v is not None:
                out[label_string(s.get("metric") or {})] = v
        return out
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise MetricsUnavailableError("BadResult", f"{key}: {e}") from e


# ---------------------------------------------------------------------------
# Prometheus client
