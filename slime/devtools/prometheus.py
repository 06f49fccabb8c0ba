"""A real Prometheus and a small exporter whose values the caller moves.

Used by ``make demo`` and the integration tests. Everything listens on 127.0.0.1 on ports
chosen at run time and is stopped on exit (also at interpreter exit, as a last resort).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from slime.devtools import die_with_parent, stop_process

PROMETHEUS_BIN = shutil.which("prometheus") or "/usr/bin/prometheus"
# Prometheus throttles target updates to every 5 s, so the first sample needs ~5.5 s whatever the
# scrape interval; leave room for a busy 2-core machine.
FIRST_SAMPLE_TIMEOUT = 30.0

_running: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_running):
        if proc.poll() is None:
            proc.kill()


def prometheus_available() -> bool:
    return os.access(PROMETHEUS_BIN, os.X_OK)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def prom_query(url: str, promql: str, timeout: float = 2.0) -> list[dict[str, Any]]:
    """The `result` list of an instant query (plain urllib: independent of the operator's client)."""
    q = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=timeout) as r:
        body = json.load(r)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_until(check: Any, timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll ``check()`` until it returns something truthy; its last exception is shown on timeout."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # polling a service that may not be up yet
            last = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:g}s (last error: {last})")
        time.sleep(interval)


def prom_duration(value: str | float) -> str:
    """Prometheus 2.x durations have no fractions: "0.5s" / 0.5 -> "500ms"; others pass through."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)s?", str(value).strip())
    if not m:
        return str(value)
    return f"{round(float(m.group(1)) * 1000)}ms"


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextmanager
def run_prometheus(
    targets: Sequence[str], scrape_interval: str | float = "0.5s", wait_for_samples: bool = True,
    port: int | None = None, host: str = "127.0.0.1",
) -> Iterator[str]:
    """Start /usr/bin/prometheus scraping ``targets`` (``host:port``); yield its URL.

    It listens on ``host`` (127.0.0.1; the mesh test bed uses its node address so that Pods can query it).

    With ``wait_for_samples`` it returns only once ``up`` has a sample for every target, so queries
    see data at once. The server, its config and its TSDB are removed on exit."""
    if not prometheus_available():
        raise FileNotFoundError(f"{PROMETHEUS_BIN} not found (apt-get install prometheus)")
    with tempfile.TemporaryDirectory(prefix="slime-prom-") as tmp:
        cfg = Path(tmp) / "prometheus.yml"
        interval = prom_duration(scrape_interval)
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval},
            "scrape_configs": [{"job_name": "test", "static_configs": [{"targets": list(targets)}]}],
        }
        cfg.write_text(yaml.safe_dump(config))
        log = Path(tmp) / "prometheus.log"
        proc, url = _start(cfg, Path(tmp) / "data", log, port, host)
        try:
            if wait_for_samples and targets:
                wait_until(
                    lambda: proc.poll() is None and len(prom_query(url, "up")) >= len(targets),
                    FIRST_SAMPLE_TIMEOUT,
                    what="first sample of `up`",
                )
            yield url
        finally:
            _stop(proc)


def _start(cfg: Path, data: Path, log: Path, fixed_port: int | None = None,
           host: str = "127.0.0.1") -> tuple[subprocess.Popen[bytes], str]:
    # The port is picked free then bound by Prometheus: retry if another process took it meanwhile.
    for _ in range(1 if fixed_port else 3):
        port = fixed_port or free_port(host)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [
                    PROMETHEUS_BIN,
                    f"--config.file={cfg}",
                    f"--storage.tsdb.path={data}",
                    f"--web.listen-address={host}:{port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own session: a terminal's Ctrl-C reaches only our process, which stops this one;
                # and the kernel kills it if our process dies without cleaning up.
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        _running.add(proc)
        url = f"http://{host}:{port}"

        def ready(proc: subprocess.Popen[bytes] = proc, url: str = url) -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {proc.returncode}")
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                return bool(r.status == 200)

        try:
            wait_until(ready, 15, interval=0.1, what="prometheus ready")
            return proc, url
        except (TimeoutError, RuntimeError):
            _stop(proc)
            if "address already in use" not in _log_tail(log).lower():
                raise RuntimeError(f"prometheus did not start:\n{_log_tail(log)}") from None
    raise RuntimeError(f"prometheus could not bind a port:\n{_log_tail(log)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, 10)
    _running.discard(proc)


class Exporter:
    """A /metrics endpoint on 127.0.0.1 whose values the caller moves.

    ``set_cpu(ns, pod, v)`` sets ``container_cpu_usage_seconds_total{namespace, pod}`` (a gauge
    here, so it can move either way); ``gauge(name, labels)`` declares any other series."""

    CPU = "container_cpu_usage_seconds_total"

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._gauges: dict[str, Gauge] = {}
        self.cpu = self.gauge(self.CPU, ("namespace", "pod"), "CPU seconds per pod (made-up values)")
        # Port 0: the OS picks a free port and the server holds it, so there is no race.
        self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port = int(self._server.server_port)
        self.target = f"127.0.0.1:{self.port}"

    def gauge(self, name: str, labelnames: Sequence[str], doc: str = "test series") -> Gauge:
        if name not in self._gauges:
            self._gauges[name] = Gauge(name, doc, list(labelnames), registry=self.registry)
        return self._gauges[name]

    def set_cpu(self, namespace: str, pod: str, value: float) -> None:
        self.cpu.labels(namespace=namespace, pod=pod).set(value)

    def remove_cpu(self, namespace: str, pod: str) -> None:
        try:
            self.cpu.remove(namespace, pod)
        except KeyError:
            pass

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
