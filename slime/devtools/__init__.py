"""Helpers that run real services locally, for the demo and the integration tests (not the operator)."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _set_pdeathsig() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


# A subprocess ``preexec_fn``: the kernel SIGKILLs the child when its parent dies (Linux only), so
# a killed demo or test run leaves no server behind.
die_with_parent = _set_pdeathsig if sys.platform.startswith("linux") else None


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; True if it had to be killed."""
    if proc.poll() is not None:
        return False
    proc.terminate()
    try:
        proc.wait(timeout)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True


def process_rss(pid: int) -> int:
    """Resident memory of a running process, from /proc (0 once it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
