"""The module's learning loop with a real Envoy: access log -> LazyloadHooks -> wake -> render -> Sidecar.

A small stand-in for the generic reconciler (issue 7) plays its part exactly as the hooks expect it:
it keeps the objects (a ClusterView), and on ``wake`` renders the fence through ``hooks.view``, stores
the status it would write and calls ``hooks.applied``. The Envoy plays the global-sidecar's proxy
inbound with the rendered access-log settings. Measured: first call -> Sidecar rendered with the
dependency, and how many status writes a burst of calls makes per fence.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import pytest

from slime.framework.config import load_module_configs
from slime.framework.kinds import Kind
from slime.framework.module import NO_METRICS, Settings
from slime.modules.lazyload import MODULE
from slime.modules.lazyload.config import Fence
from slime.modules.lazyload.controller import LazyloadHooks
from slime.modules.lazyload.globalsidecar import render_fallback
from tests.integration.test_lazyload_accesslog import gs_inbound
from tests.integration.test_lazyload_helpers import EchoServer, free_port, http_get, run_envoy

pytestmark = pytest.mark.envoy
INTERVAL = 0.5


class Store:
    """A ClusterView over a dict that the stand-in reconciler writes statuses into."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects}

    def list(self, kind: Kind, namespace: str | None = None) -> list[dict[str, Any]]:
        return [o for (k, ns, _), o in self.objects.items() if k == kind.kind and namespace in (None, ns)]

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind.kind, namespace or "", name))


class Runtime:
    def __init__(self, settings: Settings, store: Store, hooks_ref: list[LazyloadHooks]) -> None:
        self.settings = settings
        self.cluster = store
        self.hooks_ref = hooks_ref
        self.wakes: list[tuple[float, tuple[str, str]]] = []
        self.sidecars: dict[tuple[str, str], list[tuple[float, list[str]]]] = {}

    def wake(self, namespace: str, name: str) -> None:
        hooks = self.hooks_ref[0]
        self.wakes.append((time.monotonic(), (namespace, name)))
        cr = self.cluster.get(Kind("microservice.slime.io/v1alpha1", "ServiceFence", "servicefences"), namespace, name)
        assert cr is not None
        rendered = MODULE.render(cr, MODULE.context(cr, hooks.view(cr, self.cluster, {}), self.settings))
        cr["status"] = {**(cr.get("status") or {}), **rendered.status}
        for obj in rendered.objects or []:
            hosts = obj["spec"]["egress"][0]["hosts"]
            self.sidecars.setdefault((namespace, name), []).append((time.monotonic(), hosts))
        hooks.next_run(cr, rendered, NO_METRICS)


def objects() -> list[dict[str, Any]]:
    fence = {"apiVersion": "microservice.slime.io/v1alpha1", "kind": "ServiceFence",
             "metadata": {"name": "productpage", "namespace": "default"},
             "spec": {"enable": True, "workloadSelector": {"fromService": True}}}
    return [fence,
            {"kind": "Service", "metadata": {"name": "productpage", "namespace": "default"},
             "spec": {"selector": {"app": "productpage"}}},
            {"kind": "Endpoints", "metadata": {"name": "productpage", "namespace": "default"},
             "subsets": [{"addresses": [{"ip": "127.0.0.1"}]}]}]


async def _run(tmp_path: Path, calls: int) -> tuple[Runtime, float, float]:
    cfg = load_module_configs({"name": "lazyload", "kind": "lazyload", "enable": True,
                               "general": {"wormholePort": ["9080"], "learnInterval": f"{INTERVAL}s"},
                               "global": {"misc": {"logSourcePort": "127.0.0.1:0"}}})[0]
    settings = Settings(name=cfg.name, general=Fence.model_validate(cfg.general), globals=cfg.globals)
    ref: list[LazyloadHooks] = []
    runtime = Runtime(settings, Store(objects()), ref)
    hooks = LazyloadHooks(runtime)
    ref.append(hooks)
    await hooks.start()
    try:
        assert hooks.server is not None
        listen = free_port()
        with EchoServer("app") as app:
            config = gs_inbound(render_fallback(settings), listen, app.port, hooks.server.port, free_port())
            with run_envoy(config, tmp_path, "gs-inbound"):
                first = time.monotonic()
                await asyncio.to_thread(http_get, listen, "/", {"Host": "details:9080"})
                for i in range(calls):
                    await asyncio.to_thread(http_get, listen, "/", {"Host": f"svc{i % 50}:9080"})
                burst_end = time.monotonic()
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and len(hooks.buffer):
                    await asyncio.sleep(0.05)
                await asyncio.sleep(INTERVAL * 2)
        return runtime, first, burst_end
    finally:
        await hooks.stop()


def test_calls_become_sidecar_hosts_with_at_most_one_write_per_interval(tmp_path: Path) -> None:
    runtime, first, burst_end = asyncio.run(_run(tmp_path, 300))
    renders = runtime.sidecars[("default", "productpage")]
    learned_at = next(t for t, hosts in renders if "*/details.default.svc.cluster.local" in hosts)
    latency = learned_at - first
    final = renders[-1][1]
    assert {f"*/svc{i}.default.svc.cluster.local" for i in range(50)} <= set(final)
    assert latency < 1.5, f"first call -> Sidecar: {latency:.3f}s"
    times = [t for t, key in runtime.wakes if key == ("default", "productpage")]
    allowed = math.ceil((times[-1] - times[0]) / INTERVAL) + 1
    assert len(times) <= allowed, (len(times), allowed)
    assert all(b - a >= INTERVAL * 0.95 for a, b in zip(times, times[1:], strict=False)), times
    print(f"\nlearning latency {latency * 1000:.0f} ms; {len(times)} status writes for 301 calls over "
          f"{burst_end - first:.1f}s (interval {INTERVAL}s)")


class Gate:
    """The peering gate's part the hooks use: listeners told when this replica turns active or standby."""

    def __init__(self) -> None:
        self.listeners: list[Any] = []

    def on_change(self, listener: Any) -> None:
        self.listeners.append(listener)

    def flip(self, active: bool) -> None:
        for listener in self.listeners:
            listener(active)


def test_only_the_active_replica_serves_the_access_log() -> None:
    """A standby closes its port: the global-sidecar's stream (one Service over every replica) cannot
    stay on a replica that drops what it hears."""
    async def run() -> list[bool]:
        port = free_port()
        cfg = load_module_configs({"name": "lazyload", "kind": "lazyload", "enable": True,
                                   "general": {"wormholePort": ["9080"]},
                                   "global": {"misc": {"logSourcePort": f"127.0.0.1:{port}"}}})[0]
        runtime = Runtime(Settings(name=cfg.name, general=Fence.model_validate(cfg.general), globals=cfg.globals),
                          Store(objects()), [])
        gate = Gate()
        runtime.peering = gate  # type: ignore[attr-defined]
        hooks = LazyloadHooks(runtime)
        seen = []

        async def listening() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.close()
            return True

        async def settle(want: bool) -> bool:
            for _ in range(100):
                if await listening() == want:
                    break
                await asyncio.sleep(0.05)
            return await listening()

        await hooks.start()
        try:
            seen.append(await listening())
            gate.flip(False)
            seen.append(await settle(False))
            gate.flip(True)
            seen.append(await settle(True))
        finally:
            await hooks.stop()
        seen.append(await listening())
        return seen

    assert asyncio.run(run()) == [True, False, True, False]
