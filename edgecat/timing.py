"""The one clock and timing loop of bench and ``--backend auto``: both time a call the same way, so
a figure auto chose by and one bench reports are measured alike."""

from __future__ import annotations

import time
from collections.abc import Callable

#: without iters/seconds: stop a measurement at DEFAULT_ITERS or DEFAULT_SECONDS, whichever first
DEFAULT_ITERS = 100
DEFAULT_SECONDS = 10.0
MIN_ITERS = 5


def ms_per_item(call: Callable[[], object], items: int = 1) -> float:
    """Wall time of one ``call`` in milliseconds, divided over the ``items`` it handled."""
    t0 = time.perf_counter()
    call()
    return (time.perf_counter() - t0) * 1000.0 / items


class Budget:
    """Stop after ``iters`` runs, or ``seconds``, or (neither given) whichever of
    :data:`DEFAULT_ITERS` runs / :data:`DEFAULT_SECONDS` comes first (at least :data:`MIN_ITERS`)."""

    def __init__(self, iters: int | None = None, seconds: float | None = None) -> None:
        if iters is None and seconds is None:
            iters, seconds, self.floor = DEFAULT_ITERS, DEFAULT_SECONDS, MIN_ITERS
        else:
            self.floor = 1
        self.iters, self.seconds = iters, seconds
        self.t0 = time.perf_counter()

    def done(self, n: int) -> bool:
        if self.iters is not None and n >= self.iters:
            return True
        return self.seconds is not None and n >= self.floor and time.perf_counter() - self.t0 >= self.seconds

    def fraction(self, n: int) -> float:
        parts = []
        if self.iters:
            parts.append(n / self.iters)
        if self.seconds:
            parts.append((time.perf_counter() - self.t0) / self.seconds)
        return min(1.0, max(parts) if parts else 1.0)


def repeat(step: Callable[[], float], budget: Budget,
           tick: Callable[[float], None] | None = None) -> list[float]:
    """``step()`` (which returns the milliseconds it measured) until ``budget`` is spent; the figures."""
    out: list[float] = []
    while not budget.done(len(out)):
        out.append(step())
        if tick:
            tick(budget.fraction(len(out)))
    return out


__all__ = ["DEFAULT_ITERS", "DEFAULT_SECONDS", "MIN_ITERS", "Budget", "ms_per_item", "repeat"]
