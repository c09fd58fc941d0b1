"""A stand-in for a module's ``time.monotonic`` / ``time.sleep``: sleeping advances it, so a
polling loop's waits are counted, not spent."""
from __future__ import annotations


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.slept = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        self.slept += seconds
