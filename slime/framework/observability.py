"""Every ``slime_*`` Prometheus series the operator exports, declared in one place."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECONCILES = Counter("slime_reconciles_total", "Reconciles run, by kind and result", ["kind", "result"])
RECONCILE_ERRORS = Counter("slime_reconcile_errors_total", "Reconciles that failed, by kind and reason",
                           ["kind", "reason"])
RECONCILE_SECONDS = Histogram("slime_reconcile_duration_seconds", "Time spent in one reconcile", ["kind"])
API_WRITES = Counter("slime_api_writes_total", "Writes sent to the Kubernetes API", ["verb", "kind"])
METRIC_QUERIES = Counter("slime_metric_queries_total", "Metric source queries, by source and result",
                         ["source", "result"])
