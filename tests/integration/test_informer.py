"""The informer on the real apiserver: it lists (across pages), follows creates, updates and deletes
through the watch, reports each change on the event loop, and lists again when its watch breaks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s

from slime.framework import informer as informer_module
from slime.framework import kube as kube_module
from slime.framework.informer import ByName, ByNamespace, Informer
from slime.framework.kinds import CONFIG_MAP, Kind
from slime.framework.kube import Kube

NOT_OURS = "kube-root-ca.crt"  # the controller-manager's ConfigMap in every namespace: not the test's


def names(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objects if o["metadata"]["name"] != NOT_OURS)


def make(api: k8s.ApiClient, ns: str, name: str, value: str = "1") -> None:
    k8s.CoreV1Api(api).create_namespaced_config_map(ns, {"metadata": {"name": name}, "data": {"v": value}})


async def until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_informer_lists_then_follows_changes(k8s_api: k8s.ApiClient, namespace: str,
                                             monkeypatch: Any) -> None:
    monkeypatch.setattr(kube_module, "LIST_PAGE", 2)  # several pages
    core = k8s.CoreV1Api(k8s_api)
    for i in range(5):
        make(k8s_api, namespace, f"before-{i}")
    seen: list[tuple[str, str, str | None]] = []
    on_loop: list[bool] = []

    def changed(ns: str, name: str, obj: dict[str, Any]) -> None:
        on_loop.append(asyncio.get_running_loop() is not None)
        if ns == namespace and name != NOT_OURS:
            seen.append((name, (obj.get("data") or {}).get("v"), obj["metadata"].get("resourceVersion")))

    async def main() -> None:
        inf = Informer(Kube(k8s_api), CONFIG_MAP, [namespace], changed=changed)
        inf.start()
        await asyncio.wait_for(inf.wait_synced(), 30)
        view, by_name = ByNamespace(inf), ByName(inf)
        assert names(view[namespace]) == [f"before-{i}" for i in range(5)]
        assert seen == []  # the first list is the starting point, not a change

        make(k8s_api, namespace, "later")
        await until(lambda: by_name.get((namespace, "later")) is not None)
        core.patch_namespaced_config_map("later", namespace, {"data": {"v": "2"}})
        await until(lambda: by_name[(namespace, "later")][0]["data"] == {"v": "2"})
        core.delete_namespaced_config_map("before-0", namespace)
        await until(lambda: by_name.get((namespace, "before-0")) is None)
        assert [name for name, _, _ in seen][:3] == ["later", "later", "before-0"], seen

        inf.stop()

    asyncio.run(main())
    assert all(on_loop)


def test_informer_lists_again_after_a_broken_watch_and_reports_the_gap(k8s_api: k8s.ApiClient, namespace: str,
                                                                        monkeypatch: Any) -> None:
    monkeypatch.setattr(informer_module, "RETRY_SECONDS", 0.1)
    make(k8s_api, namespace, "kept")
    make(k8s_api, namespace, "dropped")
    kube = Kube(k8s_api)
    real_watch = kube.watch
    calls: list[int] = []

    def watch_breaking_once(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # while nobody watches, things change; then the connection drops
            make(k8s_api, namespace, "added-in-the-gap")
            k8s.CoreV1Api(k8s_api).delete_namespaced_config_map("dropped", namespace)
            raise RuntimeError("connection reset")
        return real_watch(*args, **kw)

    kube.watch = watch_breaking_once  # type: ignore[method-assign]
    seen: list[str] = []

    async def main() -> None:
        inf = Informer(kube, CONFIG_MAP, [namespace],
                       changed=lambda ns, name, obj: None if name == NOT_OURS else seen.append(name))
        inf.start()
        await asyncio.wait_for(inf.wait_synced(), 30)
        await until(lambda: len(calls) >= 2 and {"added-in-the-gap", "dropped"} <= set(seen))
        assert names(ByNamespace(inf)[namespace]) == ["added-in-the-gap", "kept"]
        inf.stop()

    asyncio.run(main())
    assert "kept" not in seen  # unchanged between the lists: not reported


def test_a_kind_the_apiserver_does_not_serve_is_empty_and_ready(k8s_api: k8s.ApiClient) -> None:
    # kopf skipped kinds without a CRD; the limiter must not wait forever for, say, ServiceEntries.
    absent = Kind("example.com/v1", "Gadget", "gadgets")

    async def main() -> None:
        inf = Informer(Kube(k8s_api), absent)
        inf.start()
        await asyncio.wait_for(inf.wait_synced(), 15)
        assert dict(ByNamespace(inf)) == {}
        inf.stop()

    asyncio.run(main())
