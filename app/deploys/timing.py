"""Where a deploy's time goes, per phase (PURE: a clock and arithmetic, no I/O).

A deploy records ``result["phases"]`` (seconds per phase) and ``result["timing"]`` on its
operation, so the operation page and ``bench.deploy_phases`` read the same figures:

* the *work* a deploy cannot skip once something changed: fetching and building the image,
  pulling it, the migrations and the new replicas' health checks (``WORK_PHASES``);
* everything else is what Keystone itself *adds*: resolving the branch, looking for a
  reusable artifact, planning, starting replicas (SSH round trips, compose uploads),
  routing, waiting for the gateways, the drain, stopping the old replicas, recording.

Phases nest: time spent in an inner phase (``health`` inside ``start``) counts for the inner
one only. Each thread has its own nesting (per-server work may run in threads); a phase's
time is wall time in that thread, so phases of servers worked on side by side add up to more
than the deploy's wall time. Time outside every phase is ``other``.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator

# Fetching and building the image, pulling it, migrating, health-checking the new replicas.
BUILD_PHASES = ("fetch", "upload_source", "build", "push")
WORK_PHASES = (*BUILD_PHASES, "pull", "migrate", "health")
# What Keystone adds (in the order a deploy passes them).
OVERHEAD_PHASES = ("resolve", "artifact", "plan", "dependencies", "routes", "pre_switch",
                   "start", "gateway", "scheduler", "drain", "drain_window", "stop", "record",
                   "other")


class PhaseClock:
    """Exclusive wall time per named phase (thread-safe)."""

    def __init__(self, now: Callable[[], float] = time.monotonic):
        self._now = now
        self._lock = threading.Lock()
        self._local = threading.local()
        self.totals: dict[str, float] = {}
        self.started = now()
        self.ended: float | None = None

    def _stack(self) -> list[list]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        stack = self._stack()
        frame = [name, self._now(), 0.0]  # name, start, time spent in nested phases
        stack.append(frame)
        try:
            yield
        finally:
            stack.pop()
            elapsed = self._now() - frame[1]
            with self._lock:
                self.totals[name] = self.totals.get(name, 0.0) + max(0.0, elapsed - frame[2])
            if stack:
                stack[-1][2] += elapsed

    def stop(self) -> None:
        if self.ended is None:
            self.ended = self._now()

    def report(self) -> tuple[dict[str, float], dict[str, float]]:
        """``(phases, timing)`` as recorded on the operation: see :func:`summarize`."""
        end = self.ended if self.ended is not None else self._now()
        with self._lock:
            totals = dict(self.totals)
        return summarize(totals, end - self.started)


def summarize(totals: dict[str, float], total: float) -> tuple[dict[str, float], dict[str, float]]:
    """Round the phases, add ``other`` (time outside every phase) and the totals:

    ``timing = {"total_s", "work_s", "overhead_s", "overhead_without_drain_window_s"}``
    where ``overhead_s = total_s - work_s`` (what the deploy adds beyond the build, the
    pulls, the migrations and the health wait) and the drain window is the configured
    pause for in-flight requests (``drain_seconds``), a wait the user chose.
    """
    phases = {k: round(v, 3) for k, v in totals.items() if v > 0}
    accounted = sum(totals.values())
    other = total - accounted
    if other > 0.0005:
        phases["other"] = round(other, 3)
    work = sum(totals.get(k, 0.0) for k in WORK_PHASES)
    overhead = max(0.0, total - work)
    timing = {"total_s": round(total, 3), "work_s": round(work, 3),
              "overhead_s": round(overhead, 3),
              "overhead_without_drain_window_s":
                  round(max(0.0, overhead - totals.get("drain_window", 0.0)), 3)}
    return phases, timing


class NullClock:
    """A clock that records nothing (callers outside a deploy)."""

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield


NULL_CLOCK = NullClock()
