"""Day-two command builders: a container's logs and the metrics probe, as values.

Pure, like the rest of app.shell: the container name is allowlisted and every choice a
user makes is looked up in a fixed table, never pasted.
"""
from __future__ import annotations

import re

from app.shell import Command, Part, cmd, end_of_options

LOG_SINCE = {"5m": "5m", "1h": "1h", "24h": "24h"}
"""The "since" choices of the live log pane (the value is ``docker logs --since``'s own syntax)."""
CONTAINER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def docker_logs(container: str, *, tail: int = 200, since: str | None = None,
                follow: bool = True) -> Command:
    """``docker logs [-f] --tail N [--since S] -- CONTAINER`` (stdout and stderr kept apart).

    The container name is allowlisted (Docker's own name rule) and ``since`` must be one of
    :data:`LOG_SINCE`: nothing a user typed reaches the line unchecked.
    """
    if not CONTAINER_NAME_RE.fullmatch(container or ""):
        raise ValueError(f"not a container name: {container!r}")
    tail = int(tail)
    if not 0 <= tail <= 10_000:
        raise ValueError("tail must be between 0 and 10000")
    parts: list[Part] = ["docker", "logs"]
    if follow:
        parts.append("--follow")
    parts += ["--tail", str(tail)]
    if since is not None:
        if since not in LOG_SINCE:
            raise ValueError(f"since must be one of {sorted(LOG_SINCE)}")
        parts += ["--since", LOG_SINCE[since]]
    parts += [end_of_options(), container]
    return cmd(*parts)


# One SSH round trip per server per minute: /proc/stat read before and after
# ``docker stats --no-stream`` (which itself samples for ~1-2 s), so the CPU figure is the
# busy share over that interval without a sleep of our own. Sections start with "==name".
# A constant script: no value is ever pasted in.
_METRICS_SH = (
    "echo ==stat; head -n 1 /proc/stat; "
    "echo ==meminfo; cat /proc/meminfo; "
    "echo ==loadavg; cat /proc/loadavg; "
    "echo ==df; df -P -k /; "
    "echo ==docker; docker stats --no-stream --format "
    "'{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}' 2>/dev/null; "
    "echo ==stat2; head -n 1 /proc/stat"
)


def metrics_probe() -> Command:
    """The metrics collector's one command (see app.metrics.parse_probe for its output)."""
    return cmd("sh", "-c", _METRICS_SH)
