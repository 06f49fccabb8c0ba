"""Run `slime run` as a real subprocess for integration tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slime.devtools import stop_process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - keep polling; report the last failure
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class Operator:
    def __init__(self, kubeconfig: Path, log_path: Path, priority: int | None = None,
                 modules: str = "plugin,lazyload,boot", extra: list[str] | None = None) -> None:
        self.liveness = free_port()
        self.metrics = free_port()
        self.log_path = log_path
        self.log = log_path.open("w")
        cmd = [sys.executable, "-m", "slime.cli", "run", "--kubeconfig", str(kubeconfig), "--modules", modules,
               "--liveness", f"http://127.0.0.1:{self.liveness}/healthz",
               "--metrics-addr", f"127.0.0.1:{self.metrics}", "--log-format", "json",
               *(["--priority", str(priority)] if priority is not None else ["--standalone"]), *(extra or [])]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_alive(self, timeout: float = 60.0) -> Operator:
        wait_until(self.alive, timeout, f"liveness endpoint (log: {self.log_path})")
        return self

    def get(self, port: int, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return str(r.read().decode())

    def alive(self) -> bool:
        return self.get(self.liveness, "/healthz") is not None

    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout: float = 20.0) -> int:
        stop_process(self.proc, timeout)
        self.log.close()
        return self.proc.returncode
