"""Issue 17 sections 2 and 5 on the sandbox: one-off commands and a pasted .env.

One bed, ONE deploy: the hostile .env is pasted (parsed by python-dotenv, saved through
the same diff the page shows) before the deploy, so the deployed web container proves
the values arrive byte for byte; then commands run in one-off containers of that build:
``migrate:status`` (its pending list read), a failing command (exit code recorded,
operation failed, output in the step log, container removed), argv that a shell would
have read as syntax, a command past its time limit (stopped, container removed), and
manual migration mode (a migration made pending is named, "Run migrations" runs it).
"""
from __future__ import annotations

import pytest

from tests.integration.testbeds import running_testbed

pytestmark = pytest.mark.integration

# Every hostile shape Laravel's .env allows: quotes of both kinds, $ (literal in single
# quotes, ${NAME} expanded from the lines above in double quotes), backslashes, a
# multi-line quoted value, unicode, export, comments (whole-line and inline).
HOSTILE_DOTENV = r"""# pasted from a Laravel project
export KS_EXPORTED=plain-value
KS_SINGLE='$HOME ${KS_EXPORTED} \\ `id` ; | & "dq"'
KS_DOUBLE="say \"hi\" \\ back $NOT_A_VAR"
KS_EXPANDED="${KS_EXPORTED}/suffix"
KS_MULTI="line one
line two\twith tab
  indented last"
KS_UNICODE=ünïcødé-€-日本  # inline comment
KS_HASH="#not a comment"
KS_EMPTY=
KS_TRAILING_BACKSLASH='ends with \\'
KS_DOLLARS='$$ $1 ${A:-b}'
"""
EXPECTED = {
    "KS_EXPORTED": "plain-value",
    "KS_SINGLE": "$HOME ${KS_EXPORTED} \\ `id` ; | & \"dq\"",
    "KS_DOUBLE": 'say "hi" \\ back $NOT_A_VAR',
    "KS_EXPANDED": "plain-value/suffix",
    "KS_MULTI": "line one\nline two\twith tab\n  indented last",
    "KS_UNICODE": "ünïcødé-€-日本",
    "KS_HASH": "#not a comment",
    "KS_EMPTY": "",
    "KS_TRAILING_BACKSLASH": "ends with \\",
    "KS_DOLLARS": "$$ $1 ${A:-b}",
}


@pytest.fixture(scope="module")
def bed(sandbox, provisioned_servers, tmp_path_factory, migrated_db_template, redis_url):
    from app import attachments as att
    from app import dotenv_bulk as bulk
    from app.extensions import db
    with running_testbed(sandbox, tmp_path_factory, migrated_db_template, redis_url,
                         "day-two-commands", server_count=1) as tb:
        env = tb.env
        parsed = bulk.parse(HOSTILE_DOTENV, att.effective_environment(env))
        assert parsed.errors == []
        current = {v.key: v.value for v in env.variables if v.source.value == "user"}
        d = bulk.diff(current, set(), parsed)
        for change in d.changes:
            if change.kind in ("added", "changed"):
                att.set_user_variable(env, change.key, change.new)
        db.session.commit()
        tb.parsed = parsed
        tb.deploy()
        yield tb


def _run(bed, argv, expect):
    from app.oneoff.service import start_command
    op = start_command(bed.env, argv, None, enqueue=False)
    return bed.run(op.id, expect=expect)


def _logs(op) -> str:
    return "\n".join(s.logs or "" for s in op.steps)


def test_pasted_env_arrives_in_the_container_byte_for_byte(bed):
    assert bed.parsed.values == EXPECTED          # python-dotenv read it as Laravel would
    (container,) = bed.containers(0)
    raw = bed.sandbox_servers[0].exec("docker", "exec", container, "env", "-0").stdout
    got = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
    for key, value in EXPECTED.items():
        assert got.get(key) == value, (key, value, got.get(key))


def test_migrate_status_runs_in_a_one_off_container(bed):
    op = _run(bed, ["php", "artisan", "migrate:status"], "succeeded")
    assert op.result["exit_code"] == 0
    assert op.result["pending_migrations"] == []          # the deploy ran them (auto mode)
    logs = _logs(op)
    assert "2024_01_01_000000_create_sample_items_table" in logs and "Ran" in logs
    assert op.result["artifact_id"] == bed.env.current_artifact_id
    from app.oneoff.service import migration_state
    state = migration_state(bed.env)
    assert state.check.id == op.id and state.pending == [] and not state.warn


def test_failing_command_records_exit_code_and_fails(bed):
    op = _run(bed, ["php", "artisan", "no:such-command"], "failed")
    assert op.result["exit_code"] == 1
    assert "is not defined" in _logs(op)
    assert "exited with 1" in (op.error or "")
    run_step = next(s for s in op.steps if s.name.startswith("Run "))
    assert run_step.exit_code == 1 and run_step.status.value == "failed"
    # The clean-up ran although the command failed: no one-off container is left.
    left = bed.sandbox_servers[0].exec("docker", "ps", "-a", "--filter", "name=ks-cmd-",
                                       "--format", "{{.Names}}", check=False).stdout.split()
    assert left == []


def test_argv_is_never_read_by_a_shell(bed):
    from app.oneoff.argv import parse_argv
    argv = parse_argv("php -r 'echo getenv(\"KS_EXPANDED\"), \"|\", $argv[1];' -- '$(id); `id` | x'")
    op = _run(bed, argv, "succeeded")
    assert "plain-value/suffix|$(id); `id` | x" in _logs(op)


def test_command_past_its_time_limit_is_stopped_and_its_container_removed(bed):
    from app.oneoff.service import MIN_TIMEOUT, start_command
    op = start_command(bed.env, ["php", "-r", "echo 'started', PHP_EOL; sleep(120);"], None,
                       timeout_seconds=MIN_TIMEOUT, enqueue=False)
    op = bed.run(op.id, expect="failed")
    assert "time limit" in (op.error or "")
    assert "started" in _logs(op)
    cleanup = [s for s in op.steps if s.is_cleanup]
    assert [s.status.value for s in cleanup] == ["succeeded"]
    left = bed.sandbox_servers[0].exec("docker", "ps", "-a", "--filter", "name=ks-cmd-",
                                       "--format", "{{.Names}}", check=False).stdout.split()
    assert left == []


def test_manual_mode_warns_about_a_pending_migration_and_runs_it(bed):
    from app.extensions import db
    from app.oneoff.service import migration_argv, migration_state
    name = "2024_01_01_000001_create_schedule_runs_table"     # CREATE ... IF NOT EXISTS
    web = next(s for s in bed.env.services if s.id == bed.web_id)
    web.config = {**(web.config or {}), "migration_mode": "manual"}
    db.session.commit()
    bed.psql(f"DELETE FROM migrations WHERE migration = '{name}'")
    check = _run(bed, ["php", "artisan", "migrate:status"], "succeeded")
    assert check.result["pending_migrations"] == [name]
    state = migration_state(bed.env)
    assert state.mode == "manual" and state.warn and state.pending == [name]
    migrate = _run(bed, migration_argv(bed.env), "succeeded")     # "Run migrations"
    assert name in _logs(migrate)
    assert not migration_state(bed.env).warn
    assert name in bed.psql("SELECT migration FROM migrations")


def test_history_shows_the_fetched_commits_author_and_subject(bed):
    from app.deploys.history import deploy_history
    (row,) = deploy_history(bed.env)
    assert row.result == "succeeded" and row.current and row.commit == bed.env.current_artifact.commit_sha
    assert row.author == "Keystone Sandbox" and row.message
    assert row.duration and row.duration > 0
