"""The `keystone` command as an operator meets it: --version, a --help that builds no app
and writes nothing, developer commands out of the operator's help but still there, and
one logging set-up whose level comes from KEYSTONE_LOG_LEVEL."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from importlib.metadata import version

import pytest

from app.cli import DEVELOPER_COMMANDS, OPERATOR_DB_COMMANDS, main
from app.config import SettingError
from app.logsetup import configure_logging, log_level


def _keystone(args, instance, **env):
    """The console script's entry point in a fresh interpreter (DEFAULT_INSTANCE is read
    at import), with the instance folder in a temporary directory."""
    full_env = {**os.environ, "KEYSTONE_INSTANCE_PATH": str(instance), **env}
    for name in ("KEYSTONE_SECRET_KEY", "KEYSTONE_ENCRYPTION_KEYS", "DATABASE_URL"):
        full_env.pop(name, None)
    return subprocess.run([sys.executable, "-c", "from app.cli import main; main()", *args],
                          capture_output=True, text=True, env=full_env, timeout=120)


def _listed(help_text: str) -> set[str]:
    lines = help_text.split("Commands:", 1)[1].splitlines()
    return {line.split()[0] for line in lines if line.startswith("  ") and line.split()}


def test_version_prints_keystones_version(tmp_path):
    result = _keystone(["--version"], tmp_path / "instance")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"keystone {version('keystone')}"
    assert not (tmp_path / "instance").exists()


def test_help_writes_no_files_and_lists_operator_commands_only(tmp_path):
    instance = tmp_path / "instance"
    result = _keystone(["--help"], instance)
    assert result.returncode == 0, result.stderr
    assert not instance.exists()  # no instance folder, no generated secret_key
    assert list(tmp_path.iterdir()) == []
    listed = _listed(result.stdout)
    assert {"create-user", "db", "dev", "reap", "rotate-keys", "sandbox", "worker"} <= listed
    assert not listed & set(DEVELOPER_COMMANDS)
    assert "keystone run | shell | routes" in " ".join(result.stdout.split())

    db_help = _keystone(["db", "--help"], instance)
    assert db_help.returncode == 0, db_help.stderr
    assert _listed(db_help.stdout) == OPERATOR_DB_COMMANDS
    assert not instance.exists()


def test_developer_commands_still_resolve():
    from click import Context
    ctx = Context(main)
    for name in DEVELOPER_COMMANDS:
        command = main.get_command(ctx, name)
        assert command is not None and command.hidden
    db = main.get_command(ctx, "db")
    assert db.get_command(ctx, "revision").hidden and not db.get_command(ctx, "upgrade").hidden


def test_operator_commands_are_on_the_apps_cli_too(app):
    names = set(app.cli.list_commands(None))
    assert {"create-user", "rotate-keys", "worker", "dev", "reap", "sandbox", "db"} <= names
    result = app.test_cli_runner().invoke(args=["reap"])
    assert result.exit_code == 0 and "interrupted 0 operation(s)" in result.output


def test_log_level_from_the_environment(monkeypatch):
    monkeypatch.setenv("KEYSTONE_LOG_LEVEL", "warning")
    assert log_level() == logging.WARNING
    monkeypatch.setenv("KEYSTONE_LOG_LEVEL", "chatty")
    with pytest.raises(SettingError, match="KEYSTONE_LOG_LEVEL"):
        log_level()
    monkeypatch.delenv("KEYSTONE_LOG_LEVEL")
    assert log_level() == logging.INFO


def test_logging_is_configured_once(monkeypatch):
    root = logging.getLogger()
    saved_level, saved = root.level, list(root.handlers)
    try:
        monkeypatch.setenv("KEYSTONE_LOG_LEVEL", "DEBUG")
        configure_logging()
        configure_logging()
        ours = [h for h in root.handlers if h.get_name() == "keystone"]
        assert len(ours) == 1 and root.level == logging.DEBUG
        assert ours[0].stream is sys.stderr
    finally:
        root.handlers[:] = saved
        root.setLevel(saved_level)


@pytest.mark.parametrize("raw", ["30,abc", "0", "30,-5", "100000", "²", " , ", "30\n"])
def test_notify_retry_delays_refuse_what_is_not_seconds(monkeypatch, raw):
    from app.config import seconds_list_setting
    monkeypatch.setenv("KEYSTONE_NOTIFY_RETRY_DELAYS", raw)
    if raw == "30\n":  # surrounding whitespace is trimmed: a plain value
        assert seconds_list_setting("KEYSTONE_NOTIFY_RETRY_DELAYS", "1") == [30]
        return
    with pytest.raises(SettingError, match="KEYSTONE_NOTIFY_RETRY_DELAYS"):
        seconds_list_setting("KEYSTONE_NOTIFY_RETRY_DELAYS", "30")


def test_notify_retry_delays_default_and_list(monkeypatch):
    from app.config import seconds_list_setting
    monkeypatch.delenv("KEYSTONE_NOTIFY_RETRY_DELAYS", raising=False)
    assert seconds_list_setting("KEYSTONE_NOTIFY_RETRY_DELAYS", "30,120") == [30, 120]
    monkeypatch.setenv("KEYSTONE_NOTIFY_RETRY_DELAYS", "5, 10 ,20")
    assert seconds_list_setting("KEYSTONE_NOTIFY_RETRY_DELAYS", "30") == [5, 10, 20]
