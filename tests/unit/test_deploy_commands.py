"""Deploy command values (pure): quoting, the scheduler hand-over script, one-off runs."""
import pytest

from app.deploys import commands as dc
from app.deploys.image import dockerfile_lines, image_files, is_frankenphp


def test_scheduler_release_passes_data_as_arguments_not_code():
    command = dc.scheduler_release("ks-web-1-blue-op2", 300)
    rendered = command.render()
    assert rendered.startswith("docker exec ks-web-1-blue-op2 sh -c ")
    assert rendered.endswith("sh /tmp/keystone-scheduler /tmp/keystone-scheduler.running 300")
    # The flag is removed BEFORE waiting for the busy marker.
    script = rendered.split("sh -c ", 1)[1]
    assert script.index('rm -f "$1"') < script.index('-e "$2"')


def test_container_names_are_quoted():
    # Drain and arm stamp the server's clock first (gateway log lines are read from then
    # on); the container name and the marker are arguments of a constant script.
    assert dc.drain("a;b").render() == (
        "sh -c 'date +%s.%N; docker exec \"$1\" touch \"$2\"' sh 'a;b' /tmp/keystone-drain")
    assert dc.arm("a;b").render() == (
        "sh -c 'date +%s.%N; docker exec \"$1\" touch \"$2\"' sh 'a;b' /tmp/keystone-armed")
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
