"""A real Prometheus and a test exporter for integration tests.

The helpers live in ``slime.devtools.prometheus`` (the demo uses them too); this module keeps the
names the tests import.
"""

from __future__ import annotations

from slime.devtools.prometheus import (
    FIRST_SAMPLE_TIMEOUT,
    PROMETHEUS_BIN,
    Exporter,
    free_port,
    prom_duration,
    prom_query,
    prometheus_available,
    run_prometheus,
    wait_until,
)

__all__ = [
    "FIRST_SAMPLE_TIMEOUT", "PROMETHEUS_BIN", "TestExporter", "free_port", "prom_duration", "prom_query",
    "prometheus_available", "run_prometheus", "wait_until",
]


class TestExporter(Exporter):
    """The exporter tests move values of (see ``Exporter``)."""

    __test__ = False  # not a pytest test class
