"""Keep a thread's alternate signal stack across calls into a library that swaps it.

OpenVINO's CPU plugin installs an alternate signal stack of its own on the calling thread when it
loads for a ``Core`` (the first compile or device query), and puts back the one it saw then when that
``Core`` goes. Two runtimes open and the first closed first (auto timing every candidate, a stream
swapping models) leave the thread pointing at freed memory, and the next signal handled on it (a
SIGHUP reload, SIGTERM from systemd, Ctrl-C) kills the process with SIGSEGV instead of running
Python's handler. Wrapping each open, compile and close in :func:`keep_signal_stack` leaves the
thread with the stack it had (Python's faulthandler's, or none), whatever the order.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

#: ``ss_flags``: the stack is disabled (Linux)
SS_DISABLE = 2


class StackT(ctypes.Structure):
    """Linux ``stack_t`` (macOS orders the fields differently, so only Linux is handled)."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.sigaltstack.argtypes = [ctypes.POINTER(StackT), ctypes.POINTER(StackT)]
        return libc
    except (OSError, AttributeError):
        return None


def current() -> StackT | None:
    """The calling thread's alternate signal stack (None where it cannot be read)."""
    libc = _libc()
    if libc is None:
        return None
    now = StackT()
    return now if libc.sigaltstack(None, ctypes.byref(now)) == 0 else None


@contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Run the block, then give the calling thread back the alternate signal stack it had before."""
    saved = current()
    try:
        yield
    finally:
        libc = _libc()
        if saved is not None and libc is not None:
            saved.ss_flags &= SS_DISABLE  # never hand back SS_ONSTACK: only "in use" or "disabled"
            libc.sigaltstack(ctypes.byref(saved), None)


__all__ = ["keep_signal_stack", "current"]
