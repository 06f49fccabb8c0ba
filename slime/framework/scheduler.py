"""One evaluation loop for many objects: each runs soon after it is poked and again when its last
run asks, never twice at once, at most ``concurrency`` at a time, and urgent work goes first.

Why not a kopf daemon per object: daemons need a finalizer and progress bookkeeping on every object
(patches, each another watch event), and a thousand independent tasks give no way to put a user's
edit ahead of a thousand periodic refreshes. Here, an object edited by its user is *urgent*: it runs
before anything merely due, and without waiting for a free slot.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger("slime.scheduler")

K = TypeVar("K", bound=Hashable)
RETRY_AFTER_CRASH_SECONDS = 10.0

# A job returns the seconds until its next run, or None for "only when poked".
Job = Callable[[K], Awaitable[float | None]]


class Scheduler(Generic[K]):
    def __init__(self, job: Job[K], concurrency: int = 6, debounce: float = 0.3,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._job = job
        self._concurrency = concurrency
        self._debounce = debounce
        self._clock = clock
        self._due: dict[K, float] = {}  # the next run of each scheduled key
        self._heap: list[tuple[float, int, K]] = []  # (due, seq, key); stale entries are skipped
        self._urgent: dict[K, None] = {}  # insertion-ordered set: run first, in poke order
        self._running: set[K] = set()
        self._poked_while_running: dict[K, bool] = {}  # key -> urgent
        self._known: set[K] = set()
        self._seq = itertools.count()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._background = 0  # running non-urgent jobs

    # --- called from the event loop by watch handlers

    def poke(self, key: K, urgent: bool = False) -> None:
        """Run ``key`` soon: at once when urgent, else after the debounce (events come in bursts)."""
        self._known.add(key)
        if key in self._running:
            self._poked_while_running[key] = self._poked_while_running.get(key, False) or urgent
        elif urgent:
            self._urgent[key] = None
        else:
            self._schedule(key, self._clock() + self._debounce)
        self._changed.set()

    def forget(self, key: K) -> None:
        """Stop running ``key`` (its object is gone). A run in progress finishes."""
        self._known.discard(key)
        self._due.pop(key, None)
        self._urgent.pop(key, None)
        self._poked_while_running.pop(key, None)

    def forget_all(self) -> None:
        for key in list(self._known):
            self.forget(key)

    @property
    def keys(self) -> frozenset[K]:
        return frozenset(self._known)

    @property
    def scheduled(self) -> frozenset[K]:
        """Keys waiting to run (due or urgent), not counting stale heap entries."""
        return frozenset(self._due) | frozenset(self._urgent)

    # --- the loop

    async def run(self, active: Callable[[], Awaitable[None]] | None = None) -> None:
        """Dispatch until cancelled. ``active``, if given, is awaited before each dispatch (it
        blocks while this replica is paused)."""
        try:
            while True:
                if active is not None:
                    await active()
                key, urgent = self._next_ready()
                if key is None:
                    await self._wait_for_change(self._seconds_to_next())
                    continue
                self._start(key, urgent)
        finally:
            for task in list(self._tasks):
                task.cancel()

    def _next_ready(self) -> tuple[K | None, bool]:
        while self._urgent:
            key = next(iter(self._urgent))
            del self._urgent[key]
            if key not in self._running:
                self._due.pop(key, None)
                return key, True
            self._poked_while_running[key] = True
        if self._background >= self._concurrency:
            return None, False
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            due, _, key = heapq.heappop(self._heap)
            if self._due.get(key) != due or key in self._running:
                continue  # rescheduled or forgotten since
            del self._due[key]
            return key, False
        return None, False

    def _seconds_to_next(self) -> float | None:
        if self._background >= self._concurrency:
            return None  # a finishing job wakes us
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # drop stale entries
        return max(0.0, self._heap[0][0] - self._clock()) if self._heap else None

    async def _wait_for_change(self, timeout: float | None) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    def _schedule(self, key: K, at: float) -> None:
        if key in self._urgent:
            return
        current = self._due.get(key)
        if current is None or at < current:
            self._due[key] = at
            heapq.heappush(self._heap, (at, next(self._seq), key))

    def _start(self, key: K, urgent: bool) -> None:
        self._running.add(key)
        if not urgent:
            self._background += 1
        task = asyncio.create_task(self._run_one(key, urgent), name=f"evaluate {key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_one(self, key: K, urgent: bool) -> None:
        delay: float | None = None
        try:
            delay = await self._job(key)
        except asyncio.CancelledError:
            raise
        except Exception:  # the job reports its own errors; this keeps the loop alive regardless
            log.exception("Evaluation of %s failed", key)
            delay = RETRY_AFTER_CRASH_SECONDS
        finally:
            self._running.discard(key)
            if not urgent:
                self._background -= 1
            if key in self._known:
                repoke = self._poked_while_running.pop(key, None)
                if repoke is not None:
                    self.poke(key, urgent=repoke)
                elif delay is not None:
                    self._schedule(key, self._clock() + delay)
            self._changed.set()
