"""Helpers that run real services locally, for the demo and the integration tests (not the operator)."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def _set_pdeathsig() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


# A subprocess ``preexec_fn``: the kernel SIGKILLs the child when its parent dies (Linux only), so
# a killed demo or test run leaves no server behind.
die_with_parent = _set_pdeathsig if sys.platform.startswith("linux") else None
