"""Whether this replica is the active one, for background loops kopf does not pause by itself.

kopf pauses its own watches and daemons while a live peer of higher (or equal) priority is in the
peering object's status; a module's own loop (``slime.framework.scheduler``) must pause too, or a
standby would write from stale caches. This reads the same peering object with the same rule.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from slime.framework.kinds import CLUSTER_PEERING, NAMESPACED_PEERING, Kind
from slime.framework.kube import Kube

log = logging.getLogger("slime.peering")

POLL_SECONDS = 2.0


def peering_objects(namespaces: list[str]) -> list[tuple[Kind, str | None]]:
    """The peering objects kopf uses: one per watched namespace, or the cluster-wide one."""
    return [(NAMESPACED_PEERING, ns) for ns in namespaces] or [(CLUSTER_PEERING, None)]


def is_active(status: Mapping[str, Any] | None, identity: str, priority: int,
              now: datetime.datetime | None = None) -> bool:
    """kopf's rule: paused while any other live peer has a priority not lower than ours."""
    now = now or datetime.datetime.now(datetime.UTC)
    for peer_id, info in (status or {}).items():
        if peer_id == identity or not isinstance(info, Mapping):
            continue
        try:
            seen = info.get("lastseen")  # kopf counts a peer without one as just seen
            lastseen = datetime.datetime.fromisoformat(str(seen)) if seen is not None else now
            if lastseen.tzinfo is None:
                lastseen = lastseen.replace(tzinfo=datetime.UTC)
            alive = lastseen + datetime.timedelta(seconds=int(info.get("lifetime", 60))) > now
            if alive and int(info.get("priority", 0)) >= priority:
                return False
        except (TypeError, ValueError):
            continue  # not a peer record kopf would understand either
    return True


@dataclass
class PeeringGate:
    """``await gate.wait_active()`` returns at once in the active replica and blocks in a standby.
    Without peering (standalone) it never blocks."""

    identity: str = ""
    priority: int = 0
    namespaces: list[str] = field(default_factory=list)  # empty: the cluster-wide peering object
    name: str = "slime"
    standalone: bool = True
    kube_factory: Callable[[], Kube] | None = None
    _active: asyncio.Event | None = None
    _listeners: list[Callable[[bool], None]] = field(default_factory=list)

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """``listener(active)`` is called on the event loop whenever the state flips."""
        self._listeners.append(listener)

    async def wait_active(self) -> None:
        if self.standalone:
            return
        if self._active is None:
            self._active = asyncio.Event()
            self._active.set()  # kopf's handlers only run while active, and they feed our loops
            for listener in self._listeners:
                listener(True)
            asyncio.get_running_loop().create_task(self._poll(), name="peering gate")
        await self._active.wait()

    def _read_active(self) -> bool:
        assert self.kube_factory is not None
        kube = self.kube_factory()
        for kind, ns in peering_objects(self.namespaces):
            obj = kube.get(kind, ns, self.name)
            if obj is not None and not is_active(obj.get("status"), self.identity, self.priority):
                return False
        return True

    async def _poll(self) -> None:
        assert self._active is not None
        while True:
            try:
                active = await asyncio.to_thread(self._read_active)
            except Exception as e:  # keep the last state; kopf has the same object to go by
                log.warning("Could not read the peering object %s: %s", self.name, e)
            else:
                if active != self._active.is_set():
                    log.info("Peering: this replica is now %s", "active" if active else "paused")
                    (self._active.set if active else self._active.clear)()
                    for listener in self._listeners:
                        listener(active)
            await asyncio.sleep(POLL_SECONDS)
