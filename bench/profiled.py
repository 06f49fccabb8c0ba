"""``python -m bench.profiled STATS -- <slime args>``: the operator under cProfile.

The main thread (kopf's event loop) is written to STATS, every other thread (``asyncio.to_thread``
work: Prometheus queries, API writes; kopf's sync handlers) merged into STATS.threads. Threads are
timed in CPU time (``time.thread_time``): their wall time is mostly waiting for I/O and the GIL. SIGUSR1
writes both: a saturated operator may not exit cleanly on SIGTERM, so the benchmark asks for the
stats first, then stops it. SIGUSR2 clears what was collected so far (the benchmark sends it when a
phase starts, so that the stats cover that phase, not the set-up).
"""

from __future__ import annotations

import cProfile
import marshal
import os
import signal
import sys
import threading
import time
from typing import Any

from slime.cli import main

_threads: list[cProfile.Profile] = []


def _profile_this_thread(*_: Any) -> None:
    sys.setprofile(None)
    profiler = cProfile.Profile(time.thread_time)
    _threads.append(profiler)
    profiler.enable()


def _write(path: str, profilers: list[cProfile.Profile]) -> None:
    """Merge the profilers' stats into one pstats file (written whole: the rename makes it appear complete)."""
    merged: dict[Any, Any] = {}
    for p in list(profilers):
        p.snapshot_stats()  # reads the stats without stopping the profiler (its thread may still run)
        for func, (cc, nc, tt, ct, callers) in p.stats.items():
            if func in merged:
                occ, onc, ott, oct_, ocallers = merged[func]
                callers = {**ocallers, **{k: tuple(a + b for a, b in zip(v, ocallers.get(k, (0,) * len(v)),
                                                                        strict=True))
                                          for k, v in callers.items()}}
                cc, nc, tt, ct = cc + occ, nc + onc, tt + ott, ct + oct_
            merged[func] = (cc, nc, tt, ct, callers)
    with open(path + ".tmp", "wb") as f:
        marshal.dump(merged, f)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    path, args = sys.argv[1], sys.argv[3:]  # argv[2] is "--"
    main_profiler = cProfile.Profile()

    def dump(*_: object) -> None:  # a signal handler: runs in the main thread
        _write(path + ".threads", _threads)
        _write(path, [main_profiler])

    def clear(*_: object) -> None:
        for p in [main_profiler, *_threads]:
            p.clear()

    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGUSR2, clear)
    threading.setprofile(_profile_this_thread)  # each new thread starts its own profiler
    main_profiler.enable()
    sys.exit(main(args))
