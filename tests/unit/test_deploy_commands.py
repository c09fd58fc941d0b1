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
    assert dc.drain("a;b").render() == "docker exec 'a;b' touch /tmp/keystone-drain"
    assert dc.stop("x", 12).render() == "docker stop --time 12 x"


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
    assert not is_frankenphp("keystone-sandbox/php-base:8.3")
    fp = dockerfile_lines("serversideup/php:8.3-frankenphp")
    assert 'CADDY_SERVER_EXTRA_DIRECTIVES="import /opt/keystone/ready.caddy"' in fp
    assert "ENTRYPOINT" not in fp and "/etc/entrypoint.d/" in fp
    sb = dockerfile_lines("keystone-sandbox/php-base:8.3", "web")
    assert 'ENTRYPOINT ["/opt/keystone/entry.sh"]' in sb
    assert 'CMD ["php", "-S", "0.0.0.0:8080", "-t", "web", "/opt/keystone/router.php"]' in sb
    assert sb.rstrip().splitlines()[-3] == "USER www-data"


def test_scheduler_loop_marks_busy_before_reading_the_flag():
    loop = image_files()["scheduler.sh"][0].decode()
    body = loop.split("while :; do", 1)[1]
    assert body.index(': > "$BUSY"') < body.index('[ -e "$FLAG" ]') < body.index('rm -f "$BUSY"')
