"""Run per-server work side by side: a bounded set of threads, stopped at the first failure.

:func:`run_limited` is the pure part (no database, no SSH): it runs ``work(item)`` for
each item in at most ``limit`` threads at once, starts nothing new once an item failed
or ``stop`` was set, and returns one :class:`Outcome` per item in the items' order with
its start and end times (the recorded proof of what overlapped). The operations layer
(:meth:`app.operations.context.OperationContext.run_children`) wraps each item in its
own app context, database session and child operation.

Why threads and not processes or RQ jobs: the per-server work of one deploy shares the
job's runtime (the SSH pool, the log recorder, the heartbeat that carries cancel), and
nearly all of its time is spent waiting on a remote command; a thread per server costs
one SSH channel on that server's connection and no new scheduler.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")



@dataclass(frozen=True)
class Child:
    """One child operation of :meth:`OperationContext.run_children` (run_child's arguments)."""

    kind: object                     # OperationKind
    target_type: str
    target_id: int
    handler: Callable | None = None
    params: dict | None = None
    lock_keys: tuple = ()
    summary: str | None = None
    server_id: int | None = None


@dataclass
class Outcome(Generic[T, R]):
    """What became of one item: ``started`` is False for an item never started (an earlier
    item failed first, or ``stop`` was set); ``error`` is what ``work`` raised."""

    item: T
    started: bool = False
    result: R | None = None
    error: BaseException | None = None
    started_at: float | None = None   # time.monotonic()
    ended_at: float | None = None
    failed_order: int | None = None   # 1 for the first item that failed, 2 for the next...

    @property
    def ok(self) -> bool:
        return self.started and self.error is None


def run_limited(items: Sequence[T], work: Callable[[T], R], limit: int, *,
                stop: threading.Event | None = None,
                on_failure: Callable[["Outcome[T, R]"], None] | None = None,
                on_abort: Callable[[], None] | None = None,
                name: str = "fanout") -> list[Outcome[T, R]]:
    """Run ``work(item)`` for every item, at most ``limit`` at a time; wait for all.

    The first failure (``work`` raised) sets ``stop``: items not yet started are never
    started, and ``on_failure(outcome)`` is called once per failure (in the failing
    thread) so the caller can stop the running ones (cancel their commands).
    ``work`` must end by itself (its commands have timeouts and watch cancel).
    An exception raised in the waiting thread (a job timeout, SIGTERM) sets ``stop``,
    calls ``on_abort()`` (the caller cancels the running items), waits for them to end
    (bounded) and propagates.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    stop = stop if stop is not None else threading.Event()
    outcomes = [Outcome(item) for item in items]
    slots = threading.Semaphore(limit)
    order_lock = threading.Lock()
    failures = [0]
    threads: list[threading.Thread] = []

    def body(outcome: Outcome) -> None:
        try:
            outcome.started_at = time.monotonic()
            try:
                outcome.result = work(outcome.item)
            except BaseException as exc:  # noqa: B902 - recorded, re-raised by the caller
                outcome.error = exc
                with order_lock:
                    failures[0] += 1
                    outcome.failed_order = failures[0]
                stop.set()
                if on_failure is not None:
                    try:
                        on_failure(outcome)
                    except Exception:  # noqa: BLE001 - stopping the others is best effort
                        pass
            finally:
                outcome.ended_at = time.monotonic()
        finally:
            slots.release()

    try:
        for index, outcome in enumerate(outcomes):
            # Wait for a free slot, but notice a failure meanwhile (never start after it).
            acquired = False
            while not stop.is_set():
                if slots.acquire(timeout=0.2):
                    acquired = True
                    break
            if acquired and stop.is_set():
                slots.release()
            if not acquired or stop.is_set():
                break
            outcome.started = True
            thread = threading.Thread(target=body, args=(outcome,), daemon=True,
                                      name=f"{name}-{index + 1}")
            threads.append(thread)
            thread.start()
        for thread in threads:
            thread.join()
    except BaseException:
        stop.set()
        if on_abort is not None:
            try:
                on_abort()
            except Exception:  # noqa: BLE001 - the original exception matters more
                pass
        for thread in threads:
            thread.join(timeout=120)
        raise
    return outcomes


class Background:
    """``work()`` in a thread of its own, started at once (work that overlaps the caller's:
    a deploy's migrations while its new replicas are created). :meth:`wait` waits (bounded
    when given a timeout) and says whether it ended; :meth:`join` waits for the end and
    returns the error ``work`` raised, if any. ``work`` must end by itself."""

    def __init__(self, work: Callable[[], object], name: str = "background"):
        self.error: BaseException | None = None
        self.started_at = time.monotonic()
        self.ended_at: float | None = None
        self._done = threading.Event()

        def body() -> None:
            try:
                work()
            except BaseException as exc:  # noqa: B902 - handed to whoever joins
                self.error = exc
            finally:
                self.ended_at = time.monotonic()
                self._done.set()

        self._thread = threading.Thread(target=body, daemon=True, name=name)
        self._thread.start()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def join(self) -> BaseException | None:
        self._thread.join()
        return self.error


def overlapping(intervals: Sequence[tuple[float, float]]) -> bool:
    """True when every interval shares one moment with every other (all ran at once):
    the latest start comes before the earliest end."""
    if len(intervals) < 2:
        return False
    return max(s for s, _ in intervals) < min(e for _, e in intervals)


def max_concurrency(intervals: Sequence[tuple[float, float]]) -> int:
    """The largest number of intervals running at one moment (ends before starts on ties)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda ev: (ev[0], ev[1]))
    running = best = 0
    for _, delta in events:
        running += delta
        best = max(best, running)
    return best
