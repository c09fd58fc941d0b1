"""Shell command values of a deploy (PURE: builders return commands, the handler runs them).

Every value is a part of an :mod:`app.shell` command (quoted); the few
scripts run with ``sh -c`` are constants of this module and get their data
as positional arguments, never pasted in.
"""
from __future__ import annotations

import shlex

from app.deploys.slots import (ARMED_MARKER, DRAIN_MARKER, READY_PATH, SCHEDULER_BUSY,
                               SCHEDULER_FLAG)
from app.drivers.compose import compose_cmd, ensure_network_cmd, unpack_project_cmd
from app.shell import Command, and_then, cmd, end_of_options, seq

# Prints the HTTP status of GET http://127.0.0.1:<port><path> from inside a container
# (php is in every Laravel image; curl may not be). 000 when nothing answers.
_PROBE_PHP = ('ini_set("default_socket_timeout", $argv[3]);'
              ' $h = @get_headers("http://127.0.0.1:" . $argv[1] . $argv[2]);'
              ' echo $h ? substr($h[0], 9, 3) : "000", "\\n";')

# Remove the scheduler flag, then wait (bounded) until no schedule:run is in flight.
# The replica's loop (image/scheduler.sh) wakes on the epoch's multiples of
# KEYSTONE_SCHEDULER_INTERVAL (the container's own environment, which docker exec inherits),
# up to a second late (its sleep is whole seconds). Removed from the old replica just before
# its wake and set on the new one just after the new one's wake, the flag would be on neither
# at that wake and the tick would be lost. So a release within $4 seconds of a wake, either
# side, waits until $4 seconds after it: the old replica has run that tick (the wait below
# sees it through) and the new one gets the flag long before its next wake. Intervals under
# a minute (the test beds' 5 s) go without the guard.
_RELEASE_SH = (
    'n=${KEYSTONE_SCHEDULER_INTERVAL:-60}; case "$n" in ""|*[!0-9]*) n=60 ;; esac; '
    '[ "$n" -ge 1 ] || n=60; g=$4; [ "$n" -ge 60 ] || g=0; '
    'now=$(date +%s); left=$(( n - now % n )); since=$(( now % n )); w=0; '
    'if [ "$left" -le "$g" ]; then w=$(( left + g )); '
    'elif [ "$since" -lt "$g" ]; then w=$(( g - since )); fi; '
    'if [ "$w" -gt 0 ]; then echo "the scheduler ticks about now: releasing ${w}s later"; '
    'sleep "$w"; fi; '
    'rm -f "$1"; i=0; while [ -e "$2" ] && [ "$i" -lt "$3" ]; do sleep 1; i=$((i+1)); done; '
    'if [ -e "$2" ]; then echo "schedule:run still running after $3s"; exit 3; fi; '
    'echo "scheduler released"'
)

# Seconds either side of the scheduler loop's wake within which a release waits.
SCHEDULER_WAKE_GUARD = 2


def probe(container: str, path: str, port: int = 8080, timeout: float = 3.0) -> Command:
    """HTTP status of ``path`` answered by the replica itself (from inside it)."""
    return cmd("docker", "exec", container, "php", "-r", _PROBE_PHP, str(int(port)), path,
               f"{float(timeout):g}")


def ready_probe(container: str, port: int = 8080) -> Command:
    return probe(container, READY_PATH, port)


# Print the server's clock (what the gateway's log lines are stamped with), then touch a
# marker file in the container: the time tells which gateway log lines came after it.
_STAMP_TOUCH_SH = 'date +%s.%N; docker exec "$1" touch "$2"'


# The same, then the ready path's status asked from inside the container: one round trip
# and one `docker exec` (the stamp on the first line, the status on the last; exit 1 and no
# question asked when the touch failed).
_ARM_SH = ('date +%s.%N; exec docker exec "$1" sh -c '
           '\'touch "$1" || exit 1; exec php -r "$2" "$3" "$4" "$5"\' '
           'sh "$2" "$3" "$4" "$5" "$6"')


def arm(container: str, port: int = 8080) -> Command:
    """Touch the armed marker: /.keystone/ready answers 200, gateways may mark it up.

    Prints the server's time just before, as ``<epoch seconds>``, and last the ready
    path's HTTP status once armed (200 expected)."""
    return cmd("sh", "-c", _ARM_SH, "sh", container, ARMED_MARKER, _PROBE_PHP, str(int(port)),
               READY_PATH, "3")


def disarm(container: str) -> Command:
    return cmd("docker", "exec", container, "rm", "-f", ARMED_MARKER)


def drain(container: str) -> Command:
    """Touch the drain marker: /.keystone/ready answers 503, the gateway stops sending.

    Prints the server's time just before, as ``<epoch seconds>``."""
    return cmd("sh", "-c", _STAMP_TOUCH_SH, "sh", container, DRAIN_MARKER)


def server_time() -> Command:
    return cmd("date", "+%s.%N")


def gateway_log_since(container: str, since: float) -> Command:
    """The gateway container's log (Caddy logs JSON on stderr) since ``since`` (epoch s)."""
    return cmd("sh", "-c", 'docker logs --since "$1" "$2" 2>&1', "sh", f"{float(since):.3f}",
               container)


def undrain(container: str) -> Command:
    return cmd("docker", "exec", container, "rm", "-f", DRAIN_MARKER)


def scheduler_claim(container: str) -> Command:
    return cmd("docker", "exec", container, "touch", SCHEDULER_FLAG)


def scheduler_release(container: str, wait_seconds: int = 300) -> Command:
    return cmd("docker", "exec", container, "sh", "-c", _RELEASE_SH, "sh", SCHEDULER_FLAG,
               SCHEDULER_BUSY, str(int(wait_seconds)), str(SCHEDULER_WAKE_GUARD))


def scheduler_state(container: str) -> Command:
    """``flag`` when this replica runs the scheduler, ``none`` otherwise."""
    return cmd("docker", "exec", container, "sh", "-c",
               'if [ -e "$1" ]; then echo flag; else echo none; fi', "sh", SCHEDULER_FLAG)


def inspect(container: str) -> Command:
    """``<id> <image id> <running> <health> <restart count> <exit code>`` of one container."""
    return cmd("docker", "inspect", "--format",
               "{{.Id}} {{.Image}} {{.State.Running}} "
               "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} "
               "{{.RestartCount}} {{.State.ExitCode}}",
               container)


INSPECT_MANY_FORMAT = ("{{.Name}} {{.Id}} {{.Image}} {{.State.Running}} "
                       "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} "
                       "{{.RestartCount}} {{.State.ExitCode}}")


def inspect_many(containers: list[str]) -> Command:
    """One ``docker inspect`` of several containers (one SSH round trip for all of them):
    a line ``/<name> <id> <image id> <running> <health> <restart count> <exit code>`` per
    container that exists (a missing one is only on stderr, and the exit code is 1)."""
    return cmd("docker", "inspect", "--format", INSPECT_MANY_FORMAT, *containers)


def parse_inspect_many(text: str) -> dict[str, list[str]]:
    """``{container name: [id, image id, running, health, restarts, exit code]}``."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0].startswith("/"):
            out[parts[0][1:]] = parts[1:]
    return out


def logs_tail(container: str, lines: int = 40) -> Command:
    return cmd("docker", "logs", "--tail", str(int(lines)), container)


def stop(container: str, timeout: int) -> Command:
    """SIGTERM, then SIGKILL after ``timeout`` seconds (>= the drain window)."""
    return cmd("docker", "stop", "--time", str(int(timeout)), container)


def remove(container: str) -> Command:
    return cmd("docker", "rm", "-f", "-v", container)


def teardown(container: str, timeout: int, directory: str | None = None) -> Command:
    """Stop ``container`` (SIGTERM, SIGKILL after ``timeout`` s), remove it with its anonymous
    volumes, then its project directory: one round trip. A replica's compose project is this
    one container on the external network with an explicitly named volume (kept), so
    ``compose down`` would remove nothing more and costs a Compose start-up."""
    steps = [stop(container, timeout), remove(container)]
    if directory:
        steps.append(cmd("rm", "-rf", end_of_options(), directory))
    return seq(*steps)


def remove_one_off(container: str, directory: str) -> Command:
    """After a one-off run: its container (if a cut-short run left it) and its files."""
    return seq(remove(container), cmd("rm", "-rf", end_of_options(), directory))


def start(container: str) -> Command:
    """Start a container Compose created (``up --no-start``)."""
    return cmd("docker", "start", container)


STARTED_AT = "keystone-started-at"
"""The line prefix :func:`start_slot` stamps the server's clock with."""


def start_slot(container: str, directory: str, compose_up: Command) -> Command:
    """A new replica in one round trip: the server's network (created if missing, see
    :func:`app.drivers.compose.ensure_network_cmd`; nothing else runs when it cannot be
    made), a crash's leftover container of that name removed, the project's directory made and its
    files unpacked from the tar on standard input (:func:`app.drivers.compose.project_archive`),
    the server's clock printed as ``keystone-started-at <epoch seconds>`` (what the gateways'
    log lines after the start are told by), then ``compose_up``. Each part runs only when
    the one before it succeeded, the leftover's removal excepted (there usually is none)."""
    stamp = cmd("date", f"+{STARTED_AT} %s.%N")
    made = and_then(unpack_project_cmd(directory), stamp, compose_up)
    return and_then(ensure_network_cmd(), seq(remove(container), made))


def parse_started_at(text: str) -> float | None:
    """The stamp :func:`start_slot` printed (None when it never got that far)."""
    for line in text.splitlines():
        word, _, value = line.strip().partition(" ")
        if word == STARTED_AT:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def container_exists(container: str) -> Command:
    return cmd("docker", "container", "inspect", "--format", "{{.Name}}", container)


def migration_argv(command: str) -> list[str]:
    """The configured migration command as argv (never run through a shell)."""
    argv = shlex.split(command)
    if not argv:
        raise ValueError("migration_command is empty")
    return argv


def one_off_run(directory: str, project: str, service_key: str, name: str,
                argv: list[str]) -> Command:
    """``docker compose run --rm`` of a rendered one-off project (migrations, pre-switch).

    Compose reads the project's ``.env``/``environment:`` exactly as for the
    replicas (``docker run --env-file`` would keep the quotes), and the
    command is argv, never a shell line.
    """
    return compose_cmd(directory, project, "run", "--rm", "--no-deps", "-T", "--name", name,
                       "-e", "KEYSTONE_SCHEDULER_LOOP=0", service_key, *argv)
