"""Process helpers the benchmarks share (no Keystone imports)."""
from __future__ import annotations

import subprocess
from typing import Iterable


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` from /proc, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def owner_of(horse_pid: int, workers: Iterable[subprocess.Popen]) -> subprocess.Popen | None:
    """The RQ worker among ``workers`` whose work horse is ``horse_pid``."""
    ppid = parent_pid(horse_pid)
    if ppid is None:
        return None
    return next((p for p in workers if p.pid == ppid), None)
