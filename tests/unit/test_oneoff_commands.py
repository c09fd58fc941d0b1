"""One-off commands (issue 17.2): typed text -> argv, presets, the docker command built
from quoted parts, and migrate:status read in both Laravel formats."""
from __future__ import annotations

import shlex

import pytest

from app.deploys import commands as dc
from app.oneoff.argv import (PRESETS, CommandError, display, is_migrate, is_migrate_status,
                             parse_argv, pending_migrations, validate_argv)


def test_typed_text_is_split_like_a_shell_but_never_run_by_one():
    assert parse_argv("php artisan tinker --execute='dump(1); echo $HOME'") == \
        ["php", "artisan", "tinker", "--execute=dump(1); echo $HOME"]
    assert parse_argv('php artisan db:seed --class="Database\\\\Seeders\\\\X"') == \
        ["php", "artisan", "db:seed", "--class=Database\\Seeders\\X"]
    assert parse_argv("php artisan about ; rm -rf /") == \
        ["php", "artisan", "about", ";", "rm", "-rf", "/"]       # ';' is only an argument
    assert parse_argv("php -r 'echo 1;' # not a comment") == \
        ["php", "-r", "echo 1;", "#", "not", "a", "comment"]


@pytest.mark.parametrize("text, says", [
    ("", "Type a command"), ("   ", "Type a command"), (None, "Type a command"),
    ("php 'unclosed", "cannot be split"), ("php artisan\nrm -rf /", "One line only"),
    ("php \x00", "NUL"), ("x" * 2001, "too long"),
    ("--help", "not a program name"), ("$(id)", "not a program name"),
    ("; id", "not a program name"), ("|x", "not a program name"),
])
def test_bad_text_is_refused_with_a_reason(text, says):
    with pytest.raises(CommandError, match=says):
        parse_argv(text)


def test_stored_argv_is_checked_again():
    assert validate_argv(("php", "artisan")) == ["php", "artisan"]
    for bad in ([], "php artisan", [1], ["php", "a\x00b"], ["-x"], ["a"] * 101):
        with pytest.raises(CommandError):
            validate_argv(bad)


def test_presets_are_the_common_artisan_commands():
    argvs = {p.argv for p in PRESETS.values()}
    assert ("php", "artisan", "migrate", "--force") in argvs
    assert {("php", "artisan", c) for c in ("migrate:status", "optimize:clear",
                                           "queue:restart", "storage:link")} <= argvs
    assert [p.key for p in PRESETS.values() if p.migrates] == ["migrate"]
    assert is_migrate(["php", "artisan", "migrate", "--force"])
    assert not is_migrate(["php", "artisan", "migrate:status"])
    assert is_migrate_status(["php", "artisan", "migrate:status", "--pending"])


def test_the_docker_command_carries_hostile_argv_as_separate_quoted_words():
    argv = ["php", "-r", "echo 1; $(id) `id` | x > /tmp/y", "it's", "a\nb", "ü"]
    command = dc.one_off_run("/home/keystone/operations/h/cmd-3", "ks-cmd-3-op9", "worker",
                             "ks-cmd-3-op9", argv)
    words = shlex.split(command.render())
    assert words[-len(argv):] == argv
    assert words[:2] == ["docker", "compose"] and "run" in words and "--rm" in words
    assert words[words.index("--name") + 1] == "ks-cmd-3-op9"
    assert display(argv) == shlex.join(argv)


LARAVEL_10 = """
  Migration name .............................................. Batch / Status
  2014_10_12_000000_create_users_table ................................ [1] Ran
  2019_12_14_000001_create_personal_access_tokens_table ............... Pending
  \x1b[32m2024_01_01_000000_x\x1b[39m .................................. [2] Ran
"""
LARAVEL_8 = """+------+------------------------------------------------+-------+
| Ran? | Migration                                      | Batch |
+------+------------------------------------------------+-------+
| Yes  | 2014_10_12_000000_create_users_table           | 1     |
| No   | 2019_08_19_000000_create_failed_jobs_table     |       |
+------+------------------------------------------------+-------+
"""


def test_pending_migrations_in_both_laravel_formats():
    assert pending_migrations(LARAVEL_10) == ["2019_12_14_000001_create_personal_access_tokens_table"]
    assert pending_migrations(LARAVEL_8) == ["2019_08_19_000000_create_failed_jobs_table"]
    assert pending_migrations(LARAVEL_10.replace("Pending", "[3] Ran")) == []
    assert pending_migrations("   INFO  No migrations found.") == []


def test_unknown_output_is_unknown_not_none_pending():
    assert pending_migrations("   ERROR  Migration table not found.") is None
    assert pending_migrations("") is None
