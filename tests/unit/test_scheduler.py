"""The evaluation scheduler: order, exclusion per key, concurrency, debounce, re-runs, forgetting."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from slime.framework.scheduler import Scheduler


class Recorder:
    """A job that records each run's start and end, and takes ``hold`` seconds per run."""

    def __init__(self, hold: float = 0.0, delay: float | None = None) -> None:
        self.hold = hold
        self.delay = delay
        self.started: list[str] = []
        self.ended: list[str] = []
        self.running: set[str] = set()
        self.max_parallel = 0
        self.overlapped: list[str] = []

    async def __call__(self, key: str) -> float | None:
        if key in self.running:
            self.overlapped.append(key)
        self.running.add(key)
        self.max_parallel = max(self.max_parallel, len(self.running))
        self.started.append(key)
        await asyncio.sleep(self.hold)
        self.running.discard(key)
        self.ended.append(key)
        return self.delay


async def with_scheduler(job: Callable[[str], Awaitable[float | None]],
                         body: Callable[[Scheduler[str]], Awaitable[Any]],
                         active: Callable[[], Awaitable[Any]] | None = None, **kw: Any) -> Any:
    scheduler: Scheduler[str] = Scheduler(job, **kw)
    loop = asyncio.create_task(scheduler.run(active=active))
    try:
        return await body(scheduler)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.005)


def test_urgent_pokes_run_before_due_work_and_without_a_free_slot() -> None:
    job = Recorder(hold=0.2)

    async def body(s: Scheduler[str]) -> None:
        for key in ("a", "b", "c"):
            s.poke(key)  # debounced, background
        await until(lambda: len(job.started) == 1)  # concurrency 1: one background run at a time
        s.poke("edited", urgent=True)
        await until(lambda: "edited" in job.started)
        assert job.started.index("edited") == 1  # ahead of b and c, while a still holds the slot
        await until(lambda: len(job.ended) == 4)

    asyncio.run(with_scheduler(job, body, concurrency=1, debounce=0.01))
    assert job.max_parallel == 2  # the background slot plus the urgent run


def test_a_key_never_runs_twice_at_once_and_a_poke_while_running_reruns_it() -> None:
    job = Recorder(hold=0.1)

    async def body(s: Scheduler[str]) -> None:
        s.poke("a", urgent=True)
        await until(lambda: job.started == ["a"])
        s.poke("a", urgent=True)
        s.poke("a")
        await until(lambda: len(job.ended) == 2)
        await asyncio.sleep(0.15)

    asyncio.run(with_scheduler(job, body, debounce=0.01))
    assert job.overlapped == []
    assert job.started == ["a", "a"]  # the pokes during the run fold into one re-run


def test_debounce_folds_a_burst_into_one_run() -> None:
    job = Recorder()

    async def body(s: Scheduler[str]) -> None:
        for _ in range(20):
            s.poke("a")
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.2)

    asyncio.run(with_scheduler(job, body, debounce=0.05))
    assert job.started == ["a"]


def test_concurrency_bounds_background_runs() -> None:
    job = Recorder(hold=0.05)

    async def body(s: Scheduler[str]) -> None:
        for i in range(12):
            s.poke(f"k{i}")
        await until(lambda: len(job.ended) == 12)

    asyncio.run(with_scheduler(job, body, concurrency=3, debounce=0.0))
    assert job.max_parallel == 3


def test_the_delay_a_job_returns_schedules_its_next_run() -> None:
    job = Recorder(delay=0.05)

    async def body(s: Scheduler[str]) -> None:
        s.poke("a", urgent=True)
        await until(lambda: len(job.started) >= 4)

    asyncio.run(with_scheduler(job, body))


def test_a_forgotten_key_stops_running() -> None:
    job = Recorder(delay=0.02)

    async def body(s: Scheduler[str]) -> None:
        s.poke("a", urgent=True)
        s.poke("b", urgent=True)
        await until(lambda: job.started.count("a") >= 2)
        s.forget("a")
        count = job.started.count("a")
        await asyncio.sleep(0.15)
        assert job.started.count("a") <= count + 1  # at most the run already under way
        assert job.started.count("b") >= 4
        assert s.keys == frozenset({"b"})

    asyncio.run(with_scheduler(job, body))


def test_a_crashing_job_is_retried_and_does_not_stop_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[str] = []

    async def job(key: str) -> float | None:
        runs.append(key)
        if key == "bad":
            raise RuntimeError("boom")
        return None

    async def body(s: Scheduler[str]) -> None:
        s.poke("bad", urgent=True)
        await until(lambda: "bad" in runs)
        s.poke("good", urgent=True)
        await until(lambda: "good" in runs)
        assert "bad" in s.scheduled  # retried later

    asyncio.run(with_scheduler(job, body))
    assert "boom" in caplog.text


def test_run_waits_while_paused() -> None:
    job = Recorder()
    active = asyncio.Event()

    async def body(s: Scheduler[str]) -> None:
        s.poke("a", urgent=True)
        await asyncio.sleep(0.1)
        assert job.started == []  # paused: nothing runs
        active.set()
        await until(lambda: job.started == ["a"])

    asyncio.run(with_scheduler(job, body, active=active.wait))
