"""Fixtures for the real-service integration tier (Prometheus part)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.integration.prom import PROMETHEUS_BIN, TestExporter, prometheus_available, run_prometheus


@dataclass
class PrometheusStack:
    url: str
    exporter: TestExporter


def require_prometheus() -> None:
    """Skip when the binary is missing, but fail in CI, where `make deps` must have installed it."""
    if prometheus_available():
        return
    msg = "prometheus binary missing: apt-get install -y --no-install-recommends prometheus"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """The prometheus binary, for tests that start their own server."""
    require_prometheus()
    return PROMETHEUS_BIN


@pytest.fixture(scope="session")
def prometheus_stack() -> Iterator[PrometheusStack]:
    """One exporter + one Prometheus (0.5 s scrapes) for the whole session; start-up takes ~6 s."""
    require_prometheus()
    with TestExporter() as exporter, run_prometheus([exporter.target]) as url:
        yield PrometheusStack(url=url, exporter=exporter)
