"""Deploy command values (pure): quoting, the scheduler hand-over script, one-off runs."""
import os
import shlex
import subprocess
import time

import pytest

from app.deploys import commands as dc
from app.shell import cmd
from app.deploys.image import dockerfile_lines, image_files, is_frankenphp


def test_scheduler_release_passes_data_as_arguments_not_code():
    command = dc.scheduler_release("ks-web-1-blue-op2", 300)
    rendered = command.render()
    assert rendered.startswith("docker exec ks-web-1-blue-op2 sh -c ")
    assert rendered.endswith("sh /tmp/keystone-scheduler /tmp/keystone-scheduler.running 300 2")
    # The flag is removed BEFORE waiting for the busy marker.
    script = rendered.split("sh -c ", 1)[1]
    assert script.index('rm -f "$1"') < script.index('-e "$2"')


def test_container_names_are_quoted():
    # Drain and arm stamp the server's clock first (gateway log lines are read from then
    # on); the container name and the marker are arguments of a constant script.
    assert dc.drain("a;b").render() == (
        "sh -c 'date +%s.%N; docker exec \"$1\" touch \"$2\"' sh 'a;b' /tmp/keystone-drain")
    armed = shlex.split(dc.arm("a;b", 8080).render())
    assert armed[:2] == ["sh", "-c"]
    assert armed[2].startswith('date +%s.%N; exec docker exec "$1" sh -c ')
    assert armed[3:6] == ["sh", "a;b", "/tmp/keystone-armed"]
    assert armed[-3:] == ["8080", "/.keystone/ready", "3"]
    assert dc.stop("x", 12).render() == "docker stop --time 12 x"
    assert dc.gateway_log_since("gw;x", 1700000000.5).render() == (
        "sh -c 'docker logs --since \"$1\" \"$2\" 2>&1' sh 1700000000.500 'gw;x'")


def test_migration_command_is_argv_never_a_shell_line():
    assert dc.migration_argv("php artisan migrate --force") == ["php", "artisan", "migrate",
                                                                 "--force"]
    argv = dc.migration_argv("php artisan migrate; rm -rf /")
    rendered = dc.one_off_run("/d", "p", "worker", "n", argv).render()
    # The ; is quoted: the shell sees artisan's arguments, never a second command.
    import shlex
    assert "'migrate;'" in rendered
    assert shlex.split(rendered)[-5:] == ["php", "artisan", "migrate;", "rm", "-rf"] or \
        shlex.split(rendered)[-6:] == ["php", "artisan", "migrate;", "rm", "-rf", "/"]
    assert "run --rm --no-deps -T --name n -e KEYSTONE_SCHEDULER_LOOP=0 worker php" in rendered
    with pytest.raises(ValueError):
        dc.migration_argv("   ")


def test_image_pieces_for_both_bases():
    files = image_files()
    assert set(files) == {"router.php", "ready.caddy", "entry.sh", "scheduler.sh"}
    assert is_frankenphp("serversideup/php:8.3-frankenphp")
    # The sandbox stand-in is laid out like serversideup/php FrankenPHP (Caddy + php-fpm).
    assert is_frankenphp("keystone-sandbox/php-base:8.3-fpm")
    assert is_frankenphp("127.0.0.1:5055/keystone-sandbox/php-base:8.3-fpm")
    assert not is_frankenphp("php:8.3-cli")
    fp = dockerfile_lines("serversideup/php:8.3-frankenphp")
    assert 'CADDY_SERVER_EXTRA_DIRECTIVES="import /opt/keystone/ready.caddy"' in fp
    assert "ENTRYPOINT" not in fp and "/etc/entrypoint.d/" in fp
    sb = dockerfile_lines("php:8.3-cli", "web")
    assert 'ENTRYPOINT ["/opt/keystone/entry.sh"]' in sb
    assert 'CMD ["php", "-S", "0.0.0.0:8080", "-t", "web", "/opt/keystone/router.php"]' in sb
    assert sb.rstrip().splitlines()[-3] == "USER www-data"


def test_scheduler_loop_marks_busy_before_reading_the_flag():
    loop = image_files()["scheduler.sh"][0].decode()
    body = loop.split("while :; do", 1)[1]
    assert body.index(': > "$BUSY"') < body.index('[ -e "$FLAG" ]') < body.index('rm -f "$BUSY"')


def _release(tmp_path, now: int, interval: str | None, busy: bool = False):
    """Run the release script here (as ``docker exec`` would in the replica) with a fake
    clock: ``date +%s`` answers ``now``, ``sleep`` logs its seconds and returns at once."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    slept = tmp_path / "slept.log"
    (bin_dir / "date").write_text(f"#!/bin/sh\necho {now}\n")
    (bin_dir / "sleep").write_text(f'#!/bin/sh\necho "$1" >> {slept}\n')
    for tool in ("date", "sleep"):
        (bin_dir / tool).chmod(0o755)
    flag, marker = tmp_path / "flag", tmp_path / "busy"
    flag.touch()
    if busy:
        marker.touch()
    argv = shlex.split(dc.scheduler_release("c", 2).render())
    assert argv[:5] == ["docker", "exec", "c", "sh", "-c"]
    assert argv[-4:] == [dc.SCHEDULER_FLAG, dc.SCHEDULER_BUSY, "2", "2"]
    argv[-4:-2] = [str(flag), str(marker)]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    if interval is not None:
        env["KEYSTONE_SCHEDULER_INTERVAL"] = interval
    out = subprocess.run(argv[3:], env=env, capture_output=True, text=True, timeout=30)
    sleeps = slept.read_text().split() if slept.exists() else []
    return out, flag.exists(), sleeps


_MINUTE = 1_700_000_000 - 1_700_000_000 % 60  # a wake of the loop (every 60 s)


@pytest.mark.parametrize("now, interval, expected_sleeps", [
    (_MINUTE + 30, "60", []),        # mid-minute: at once
    (_MINUTE + 57, "60", []),        # 3 s before the wake: at once
    (_MINUTE + 58, "60", ["4"]),     # 2 s before: until 2 s after it
    (_MINUTE + 59, "60", ["3"]),     # 1 s before
    (_MINUTE + 60, "60", ["2"]),     # the wake's second (the loop may not have looked yet)
    (_MINUTE + 61, "60", ["1"]),     # a second after
    (_MINUTE + 62, "60", []),        # 2 s after: the old replica has looked
    (_MINUTE + 59, None, ["3"]),     # the loop's default is 60
    (_MINUTE + 59, "x;y", ["3"]),    # read as the loop reads it
    (1_700_000_000 - 1_700_000_000 % 300 + 299, "300", ["3"]),  # any interval of 60 s or more
    (_MINUTE + 4, "5", []),          # the test beds' 5 s: no guard
])
def test_scheduler_release_lets_an_imminent_tick_happen_before_the_flag_moves(
        tmp_path, now, interval, expected_sleeps):
    """Released just before the loop's wake and claimed on the new replica just after it,
    the flag would be on neither replica at that wake: that tick would be lost."""
    out, flag_left, sleeps = _release(tmp_path, now, interval)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("scheduler released")
    assert not flag_left
    assert sleeps == expected_sleeps
    assert ("releasing" in out.stdout) == bool(expected_sleeps)


def test_scheduler_release_waits_for_a_run_in_flight_then_gives_up_with_3(tmp_path):
    out, flag_left, sleeps = _release(tmp_path, _MINUTE + 30, "60", busy=True)
    assert out.returncode == 3 and "still running after 2s" in out.stdout
    assert not flag_left and sleeps == ["1", "1"]


def _fake_docker(tmp_path, touch_exit: int = 0):
    """``docker``, ``touch`` and ``php`` on PATH that log their argv: ``docker exec C ...``
    runs the rest here (as the container would), ``php`` answers 200."""
    log = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = f"printf '%s\\n' \"$(basename \"$0\") $*\" >> {shlex.quote(str(log))}\n"
    fakes = {
        "docker": 'case "$1" in exec) shift 2; exec "$@";; esac\n',
        "touch": f"exit {int(touch_exit)}\n",
        "php": "echo 200\n",
    }
    for name, body in fakes.items():
        script = bin_dir / name
        script.write_text("#!/bin/sh\n" + record + body)
        script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return log, env


def test_arm_stamps_the_clock_then_touches_then_asks_the_ready_path(tmp_path):
    log, env = _fake_docker(tmp_path)
    out = subprocess.run(dc.arm("ks-web-1", 8080).render(), shell=True, env=env,
                         capture_output=True, text=True, check=False)
    lines = out.stdout.split()
    assert out.returncode == 0, out.stderr
    float(lines[0])  # the server's clock comes first ...
    assert lines[-1] == "200"  # ... the ready path's status last
    calls = log.read_text().splitlines()
    assert calls[0].startswith("docker exec ks-web-1 sh -c ")  # one docker exec
    assert calls[1] == "touch /tmp/keystone-armed"
    assert calls[2].startswith("php -r ini_set(")
    assert calls[2].endswith(" 8080 /.keystone/ready 3")
    assert len(calls) == 3


def test_arm_fails_without_asking_when_the_marker_cannot_be_made(tmp_path):
    log, env = _fake_docker(tmp_path, touch_exit=1)
    out = subprocess.run(dc.arm("ks-web-1").render(), shell=True, env=env,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 1
    assert [c.split()[0] for c in log.read_text().splitlines()] == ["docker", "touch"]


def test_teardown_is_one_round_trip_in_order_with_the_directory_as_an_operand():
    rendered = dc.teardown("ks;x", 30, "/home/keystone/services/4/replicas/-p").render()
    assert rendered == ("docker stop --time 30 'ks;x' ; docker rm -f -v 'ks;x' ; "
                        "rm -rf -- /home/keystone/services/4/replicas/-p")
    assert dc.teardown("ks", 5).render() == "docker stop --time 5 ks ; docker rm -f -v ks"


def _start_slot(tmp_path, network_ok: bool = True, leftover: bool = False):
    """Run :func:`dc.start_slot` in a local shell, its archive on stdin, with ``flock`` and
    ``docker`` stand-ins on PATH that log their arguments (``docker compose`` also lists the
    project's files with their modes, as it would find them)."""
    from app.drivers.base import RenderedCompose
    from app.drivers.compose import project_archive
    directory = tmp_path / "services" / "4" / "p"
    rendered = RenderedCompose(project_name="p", directory=str(directory), compose={},
                               compose_yaml="services: {}\n", env_file="SECRET='s;$(x)'\n")
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    (bin_dir / "flock").write_text(f'#!/bin/sh\necho "flock $*" >> {log}\n'
                                   + ("exit 0\n" if network_ok else "exit 1\n"))
    (bin_dir / "docker").write_text(
        f'#!/bin/sh\necho "docker $*" >> {log}\n'
        f'if [ "$1" = rm ]; then {"exit 0" if leftover else "echo no such container >&2; exit 1"}; fi\n'
        f'if [ "$1" = compose ]; then stat -c "%a %n" {directory}/* {directory}/.env >> {log}; fi\n')
    for tool in ("flock", "docker"):
        (bin_dir / tool).chmod(0o755)
    command = dc.start_slot("ks;web", str(directory), cmd("docker", "compose", "up", "-d"))
    out = subprocess.run(["sh", "-c", command.render()], input=project_archive(rendered),
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True,
                         timeout=30)
    calls = log.read_text().splitlines() if log.exists() else []
    return out, calls, directory


def test_start_slot_unpacks_the_files_0600_stamps_the_clock_then_starts(tmp_path):
    out, calls, directory = _start_slot(tmp_path)
    assert out.returncode == 0, out.stderr
    assert [c.split()[:2] for c in calls[:2]] == [["flock", "-w"], ["docker", "rm"]]
    assert calls[1] == "docker rm -f -v ks;web"            # one argument, never shell syntax
    assert calls[2] == "docker compose up -d"              # after the files were there:
    assert sorted(calls[3:]) == sorted(f"600 {directory}/{n}"
                                       for n in ("compose.yml", "compose.env", ".env"))
    assert (directory / ".env").read_text() == "SECRET='s;$(x)'\n"
    stamp = dc.parse_started_at(out.stdout.decode())
    assert stamp is not None and abs(stamp - time.time()) < 60


def test_start_slot_stops_when_the_network_cannot_be_made(tmp_path):
    out, calls, directory = _start_slot(tmp_path, network_ok=False)
    assert out.returncode != 0
    assert [c.split()[0] for c in calls] == ["flock"]
    assert not directory.exists() and dc.parse_started_at(out.stdout.decode()) is None


def test_the_project_archive_holds_only_the_project_s_own_files():
    from app.drivers.base import RenderedCompose
    from app.drivers.compose import project_archive
    import io
    import tarfile
    rendered = RenderedCompose(project_name="p", directory="/home/keystone/services/4/p",
                               compose={}, compose_yaml="x: 1\n", env_file="A=b\n")
    with tarfile.open(fileobj=io.BytesIO(project_archive(rendered))) as archive:
        members = archive.getmembers()
    assert sorted(m.name for m in members) == [".env", "compose.env", "compose.yml"]
    assert all(m.isfile() and m.mode == 0o600 and not m.uname for m in members)


def test_a_stamp_is_read_only_from_its_own_line():
    assert dc.parse_started_at("Creating x ... done\nkeystone-started-at 1700000000.25\n") \
        == 1700000000.25
    assert dc.parse_started_at("1700000000.25\n") is None
    assert dc.parse_started_at("keystone-started-at soon\n") is None