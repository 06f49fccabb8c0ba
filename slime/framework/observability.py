"""Every ``slime_*`` Prometheus series the operator exports, declared in one place.

* ``slime_reconciles_total{kind, result}``: evaluations by result: ``ready``, ``not_ready`` (the
  CR's Ready condition is False: bad input, missing metrics, a conflict), ``error`` (an API write
  or an unexpected failure).
* ``slime_reconcile_errors_total{kind, reason}``: the ``not_ready`` and ``error`` ones by reason.
* ``slime_resource_condition{kind, namespace, name, condition, status}``: 1 for the current status
  of each condition of each CR (cert-manager style), removed with the CR.
* ``slime_build_info{version, python}``, ``slime_active_replica`` (1 in the replica that works).
No ``*_created`` series (``disable_created_metrics``).
"""

from __future__ import annotations

import platform

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()

RECONCILES = Counter("slime_reconciles_total", "Evaluations of Slime objects, by kind and result",
                     ["kind", "result"])
RECONCILE_ERRORS = Counter("slime_reconcile_errors_total",
                           "Evaluations that left an object not Ready or failed, by kind and reason",
                           ["kind", "reason"])
RECONCILE_SECONDS = Histogram("slime_reconcile_duration_seconds", "Time spent in one evaluation", ["kind"])
API_WRITES = Counter("slime_api_writes_total", "Writes sent to the Kubernetes API", ["verb", "kind"])
METRIC_QUERIES = Counter("slime_metric_queries_total", "Metric source queries, by source and result",
                         ["source", "result"])
CONDITION = Gauge("slime_resource_condition", "1 for the current status of each condition of each Slime object",
                  ["kind", "namespace", "name", "condition", "status"])
BUILD_INFO = Gauge("slime_build_info", "Always 1: the running version", ["version", "python"])
ACTIVE = Gauge("slime_active_replica", "1 while this replica is the active one (peering), else 0")
CACHED = Gauge("slime_cached_entries", "Per-object entries the operator keeps, by module and cache (0 once the "
               "objects are gone)", ["module", "cache"])
STATUSES = ("True", "False", "Unknown")


def set_build_info(version: str) -> None:
    BUILD_INFO.labels(version=version, python=platform.python_version()).set(1)


def set_conditions(kind: str, namespace: str, name: str, conditions: dict[str, str]) -> None:
    """``conditions``: type -> status text; the other statuses of each type go to 0."""
    for condition, status in conditions.items():
        for value in STATUSES:
            CONDITION.labels(kind, namespace, name, condition, value).set(1 if value == status else 0)


def forget(kind: str, namespace: str, name: str, conditions: list[str]) -> None:
    """Drop the series of a deleted object (their label sets would stay forever)."""
    for condition in conditions:
        for value in STATUSES:
            try:
                CONDITION.remove(kind, namespace, name, condition, value)
            except KeyError:
                pass
