"""An in-memory copy of one kind of cluster object: list, then watch from the list's resourceVersion.

Why not kopf's indexes: while kopf builds them at start, every object of every indexed kind holds
a toggle that wakes every waiting object when it flips. Measured with the limiter: 1,000 pods ->
the first evaluation after 4 s, 3,000 -> 30 s, 6,000 -> 160 s. This copy costs one list.

A thread does the network I/O; each change is applied on the event loop, so code on the loop
reads ``by_namespace`` without locks. After a 410 Gone (the watch fell too far behind) or any
error, it lists again and reports what changed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from slime.framework.kinds import Kind
from slime.framework.kube import Kube, short_error

log = logging.getLogger("slime.informer")

Obj = dict[str, Any]
# changed(namespace, name, object): object is the new one, or the last one known when deleted.
Changed = Callable[[str, str, Obj], None]
RETRY_SECONDS = 1.0  # first retry after a failure; doubles up to MAX_RETRY_SECONDS
MAX_RETRY_SECONDS = 30.0
ABSENT_RETRY_SECONDS = 60.0


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class Informer:
    def __init__(self, kube: Kube, kind: Kind, namespaces: list[str] | None = None,
                 slim: Callable[[Obj], Obj] = lambda obj: obj, changed: Changed | None = None) -> None:
        self.kube = kube
        self.kind = kind
        self.namespaces: list[str | None] = list(namespaces) if namespaces else [None]
        self.slim = slim
        self.changed = changed
        self.by_namespace: dict[str, dict[str, Obj]] = {}
        self._synced: asyncio.Event | None = None
        self._lists_done: set[str | None] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()

    # --- on the event loop

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._synced = asyncio.Event()
        for ns in self.namespaces:
            threading.Thread(target=self._run, args=(ns,), daemon=True,
                             name=f"informer {self.kind.plural} {ns or '*'}").start()

    def stop(self) -> None:
        self._stop.set()  # the threads are daemons: one blocked in a watch does not hold up exit

    async def wait_synced(self) -> None:
        assert self._synced is not None, "start() first"
        await self._synced.wait()

    def _replace(self, namespace: str | None, objects: list[Obj]) -> None:
        """A (re)list of ``namespace`` (None: all): keep it, report what differs from before."""
        old = {(ns, name): obj for ns, objs in self.by_namespace.items() for name, obj in objs.items()
               if namespace is None or ns == namespace}
        new = {(o["metadata"].get("namespace") or "", o["metadata"]["name"]): o for o in objects}
        for ns in [ns for ns in self.by_namespace if namespace is None or ns == namespace]:
            del self.by_namespace[ns]
        for (ns, name), obj in new.items():
            self.by_namespace.setdefault(ns, {})[name] = obj
        first = namespace not in self._lists_done
        self._lists_done.add(namespace)
        if self._synced is not None and self._lists_done >= set(self.namespaces):
            self._synced.set()
        if first or self.changed is None:
            return  # nothing was read from this copy yet
        for key in old.keys() | new.keys():
            before, after = old.get(key), new.get(key)
            if before is None or after is None or _rv(before) != _rv(after):
                self.changed(key[0], key[1], after or before)  # type: ignore[arg-type]

    def _event(self, kind: str, obj: Obj) -> None:
        ns, name = obj["metadata"].get("namespace") or "", obj["metadata"]["name"]
        if kind == "DELETED":
            gone = self.by_namespace.get(ns, {}).pop(name, None)
            obj = gone or obj
        else:
            self.by_namespace.setdefault(ns, {})[name] = obj
        if self.changed is not None:
            self.changed(ns, name, obj)

    # --- in the thread

    def _run(self, namespace: str | None) -> None:
        """List and watch until stopped. A failure is logged once when it starts and once when it
        ends (one line per outage, not one per retry); retries back off to MAX_RETRY_SECONDS."""
        retry, failing_since = RETRY_SECONDS, 0.0
        where = f"{self.kind.plural}{' in ' + namespace if namespace else ''}"
        while not self._stop.is_set():
            try:
                try:
                    version = self._list(namespace)
                    if failing_since:
                        log.info("Watch of %s restored after %.0fs", where, time.monotonic() - failing_since)
                    retry, failing_since = RETRY_SECONDS, 0.0
                except ApiException as e:
                    if e.status != 404:
                        raise
                    # The kind is not served (its CRD is not installed): none of it exists. Ready,
                    # empty; look again now and then, as the CRD may come later.
                    log.warning("%s are not served by the apiserver; taking none", self.kind.plural)
                    self._call(self._replace, namespace, [])
                    self._stop.wait(ABSENT_RETRY_SECONDS)
                    continue
                while not self._stop.is_set():
                    version = self._watch(namespace, version)
            except _Gone:
                log.info("Watch of %s expired; listing again", self.kind.plural)
            except Exception as e:  # the copy stays as it is; list again shortly
                if self._stop.is_set():
                    return  # stopped while the connection went away: nothing to report
                if not failing_since:
                    failing_since = time.monotonic()
                    log.warning("Watch of %s failed (%s); retrying with backoff, the copy kept as it is",
                                where, short_error(e))
                self._stop.wait(retry)
                retry = min(retry * 2, MAX_RETRY_SECONDS)

    def _list(self, namespace: str | None) -> str:
        objects, version = self.kube.list_versioned(self.kind, namespace)
        self._call(self._replace, namespace, [self.slim(o) for o in objects])
        return version

    def _watch(self, namespace: str | None, version: str) -> str:
        """Follow changes until the server ends the watch; returns the resourceVersion reached."""
        for event in self.kube.watch(self.kind, namespace, version):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Gone()
                raise ApiException(status=obj.get("code"), reason=obj.get("message"))
            version = obj.get("metadata", {}).get("resourceVersion") or version
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._call(self._event, kind, self.slim(obj))
            if self._stop.is_set():
                break
        return version

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the operator is exiting
            self._stop.set()


def _rv(obj: Obj) -> Any:
    return obj["metadata"].get("resourceVersion")


class ByNamespace(Mapping[str, list[Obj]]):
    """A read view shaped like a kopf index keyed by namespace: ``view[ns]`` lists its objects."""

    def __init__(self, informer: Informer) -> None:
        self._informer = informer

    def __getitem__(self, namespace: str) -> list[Obj]:
        return list(self._informer.by_namespace[namespace].values())

    def __iter__(self) -> Iterator[str]:
        return iter(self._informer.by_namespace)

    def __len__(self) -> int:
        return len(self._informer.by_namespace)


class ByName(Mapping[tuple[str, str], list[Obj]]):
    """A read view shaped like a kopf index keyed by (namespace, name): ``view[key]`` is ``[obj]``."""

    def __init__(self, informer: Informer) -> None:
        self._informer = informer

    def __getitem__(self, key: tuple[str, str]) -> list[Obj]:
        return [self._informer.by_namespace[key[0]][key[1]]]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((ns, name) for ns, objs in self._informer.by_namespace.items() for name in objs)

    def __len__(self) -> int:
        return sum(len(objs) for objs in self._informer.by_namespace.values())
