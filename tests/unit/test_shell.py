"""app.shell: exact rendered strings (Kamal style), masking, nesting, redaction,
and an injection corpus proven inert by running the rendered commands through
a real /bin/sh."""

import os
import subprocess
from pathlib import PurePosixPath

import pytest

from app.shell import (
    MASK,
    Command,
    Raw,
    Secret,
    and_then,
    cmd,
    concat,
    end_of_options,
    env,
    operand,
    or_else,
    pipe,
    redact,
    report_pgid_then,
    seq,
    sh_c,
)

# --------------------------------------------------------------- rendering


def test_plain_arguments_are_left_bare_when_safe():
    c = cmd("docker", "compose", "-f", "/srv/app/compose.yml", "up", "-d")
    assert c.render() == "docker compose -f /srv/app/compose.yml up -d"
    assert c.masked() == c.render()
    assert c.secrets() == []


def test_unsafe_arguments_are_single_quoted():
    c = cmd("git", "checkout", "feature/it's $(id)")
    assert c.render() == "git checkout 'feature/it'\"'\"'s $(id)'"


def test_empty_string_is_an_explicit_empty_argument():
    assert cmd("printf", "%s", "").render() == "printf %s ''"


def test_ints_and_paths_are_converted():
    assert cmd("chmod", "0600", PurePosixPath("/a b/c")).render() == "chmod 0600 '/a b/c'"
    assert cmd("sleep", 5).render() == "sleep 5"


@pytest.mark.parametrize("bad", [None, True, False, 1.5, b"bytes", object()])
def test_odd_types_are_refused(bad):
    with pytest.raises(TypeError):
        cmd("echo", bad)


def test_nul_is_refused():
    with pytest.raises(ValueError):
        cmd("echo", "a\x00b")
    with pytest.raises(ValueError):
        Secret("a\x00b")


def test_empty_command_is_refused():
    with pytest.raises(ValueError):
        cmd()


def test_lists_are_flattened_and_simple_commands_spliced():
    inner = cmd("php", "artisan", "migrate")
    assert cmd("docker", "exec", "web", inner).render() == "docker exec web php artisan migrate"
    assert cmd("ls", ["-l", "-a"]).render() == "ls -l -a"


def test_with_args():
    assert cmd("git", "fetch").with_args("origin", "main").render() == "git fetch origin main"


# ------------------------------------------------------------------ secrets


def test_secret_renders_quoted_and_masks():
    c = cmd("mysql", "-u", "root", concat("-p", Secret("s3 cr'et")))
    assert c.render() == "mysql -u root -p's3 cr'\"'\"'et'"
    assert c.masked() == "mysql -u root -p***"
    assert c.secrets() == ["s3 cr'et"]


def test_secret_never_leaks_through_str_or_repr():
    s = Secret("hunter2", name="DB_PASSWORD")
    c = cmd("echo", s)
    for text in (str(s), repr(s), str(c), repr(c), f"{c}", f"{s}"):
        assert "hunter2" not in text
    assert repr(s) == "Secret(name='DB_PASSWORD', value=***)"
    assert str(c) == "echo ***"
    assert s.value == "hunter2"


def test_secrets_are_deduplicated_in_order():
    a, b = Secret("a1"), Secret("b2")
    c = and_then(cmd("x", a, b), cmd("y", Secret("a1")))
    assert c.secrets() == ["a1", "b2"]


# --------------------------------------------------------------- raw / ops


def test_raw_allowlist():
    assert cmd("php", "artisan", Raw("2>&1"), Raw(">"), "/tmp/log").render() == "php artisan 2>&1 > /tmp/log"
    for bad in ["; rm -rf /", "$(id)", "&", "`id`", "&& id", "", " >"]:
        with pytest.raises(ValueError):
            Raw(bad)


def test_and_then_pipe_or_seq_render_exactly():
    a, b, c = cmd("a"), cmd("b", "x y"), cmd("c")
    assert and_then(a, b, c).render() == "a && b 'x y' && c"
    assert (a & b).render() == "a && b 'x y'"
    assert (a | c).render() == "a | c"
    assert or_else(a, c).render() == "a || c"
    assert seq(a, c).render() == "a ; c"


def test_composition_groups_where_precedence_would_change_meaning():
    a, b, c = cmd("a"), cmd("b"), cmd("c")
    # same operator flattens
    assert and_then(and_then(a, b), c).render() == "a && b && c"
    # a pipeline binds tighter than && so it needs no group
    assert and_then(a | b, c).render() == "a | b && c"
    # but an && list inside a pipe does
    assert pipe(a & b, c).render() == "{ a && b; } | c"
    # && and || have equal precedence: c && a || b would mean (c && a) || b
    assert and_then(c, or_else(a, b)).render() == "c && { a || b; }"
    assert seq(a & b, c).render() == "a && b ; c"
    assert and_then(seq(a, b), c).render() == "{ a ; b; } && c"


def test_compound_commands_cannot_be_spliced_as_arguments():
    with pytest.raises(ValueError, match="sh_c"):
        cmd("setsid", cmd("a") & cmd("b"))
    assert cmd("setsid", sh_c(cmd("a") & cmd("b"))).render() == "setsid sh -c 'a && b'"


# ---------------------------------------------------------------------- env


def test_env_prefix_quotes_values_and_masks_secrets():
    c = env(cmd("php", "artisan", "migrate"), APP_ENV="production", DB_PASSWORD=Secret("p w"))
    assert c.render() == "APP_ENV=production DB_PASSWORD='p w' php artisan migrate"
    assert c.masked() == "APP_ENV=production DB_PASSWORD=*** php artisan migrate"


def test_env_accepts_a_mapping():
    assert env(cmd("x"), {"A_1": "1"}, B="2").render() == "A_1=1 B=2 x"


@pytest.mark.parametrize("name", ["1A", "A-B", "A B", "A;id", "$(id)", "", "A=B", "Ä"])
def test_env_names_are_validated(name):
    with pytest.raises(ValueError, match="environment variable"):
        env(cmd("x"), {name: "v"})


def test_env_on_compound_command_wraps_it_so_every_part_sees_the_vars():
    c = env(cmd("a") & cmd("b"), X="1")
    assert c.render() == "X=1 sh -c 'a && b'"


# -------------------------------------------------------------------- sh -c


def test_sh_c_and_nested_masking():
    s = Secret("top secret")
    inner = and_then(cmd("cd", "/srv/my app"), cmd("echo", s))
    once = sh_c(inner)
    assert once.render() == "sh -c 'cd '\"'\"'/srv/my app'\"'\"' && echo '\"'\"'top secret'\"'\"''"
    assert once.masked() == "sh -c 'cd '\"'\"'/srv/my app'\"'\"' && echo ***'"
    twice = cmd("docker", "exec", "web", sh_c(once))
    assert "top secret" not in twice.masked()
    assert twice.masked().count(MASK) == 1
    assert twice.secrets() == ["top secret"]


def test_report_pgid_then():
    c = report_pgid_then(cmd("echo", Secret("x y")), "KPGID=")
    assert c.render() == "printf 'KPGID=%s\\n' \"$$\" ; exec sh -c 'echo '\"'\"'x y'\"'\"''"
    assert c.masked() == "printf 'KPGID=%s\\n' \"$$\" ; exec sh -c 'echo ***'"
    with pytest.raises(ValueError):
        report_pgid_then(cmd("x"), "bad marker'")


# ---------------------------------------------------------------- options


def test_end_of_options_and_operand():
    c = cmd("git", "checkout", end_of_options(), "--upload-pack=touch /tmp/x")
    assert c.render() == "git checkout -- '--upload-pack=touch /tmp/x'"
    assert operand("main") == "main"
    with pytest.raises(ValueError):
        operand("--upload-pack=x")


# -------------------------------------------------------------- redaction


def test_redact_bare_and_quoted_forms():
    s = Secret("it's $(id)")
    rendered = cmd("echo", s).render()
    assert redact(f"failed: {rendered}", [s]) == "failed: echo ***"
    assert redact("value it's $(id) here", ["it's $(id)"]) == "value *** here"


def test_redact_through_nested_sh_c():
    s = Secret("it's $(id)")
    deep = sh_c(sh_c(cmd("echo", s)))
    assert "$(id)" not in redact(deep.render(), deep.secrets())


def test_redact_multiline_secret_line_by_line():
    key = "-----BEGIN KEY-----\nAAAAbbbbCCCC\nddddEEEE\n-----END KEY-----\n"
    assert redact("got AAAAbbbbCCCC", [key]) == "got ***"
    assert redact("x\nddddEEEE\n", [key]) == "x\n***\n"


def test_redact_ignores_empty_secrets_and_prefers_longest():
    assert redact("abc", [""]) == "abc"
    assert redact("abcdef", ["abc", "abcdef"]) == "***"


# ----------------------------------------------------- injection corpus (real sh)

CORPUS = [
    ";id",
    "; touch {canary}",
    "$(touch {canary})",
    "`touch {canary}`",
    "a\ntouch {canary}",
    "\ntouch {canary}\n",
    "${HOME}",
    "$HOME",
    "'; touch {canary}; '",
    '"; touch {canary}; "',
    "\\'; touch {canary} #",
    "\\",
    "trailing backslash \\",
    "--upload-pack=touch {canary}",
    "-n",
    "-e",
    "&& touch {canary}",
    "| touch {canary}",
    "> {canary}",
    "< /etc/passwd",
    "*",
    "~",
    "!",
    "#comment",
    "a b\tc",
    "\r\n",
    "unicode ✓ ünï",
    "'",
    '"',
    "''",
    "$'\\x41'",
    "{a,b}",
    "x" * 10_000,
    ("$(touch {canary})'\"`;\n" * 500),
]


@pytest.fixture
def canary(tmp_path):
    path = tmp_path / "canary"
    yield path
    assert not path.exists(), "an injection payload executed"


def _sh(line: str, cwd) -> bytes:
    # An argv list, no shell=True: the only shell is the one under test.
    return subprocess.run(["/bin/sh", "-c", line], cwd=cwd, capture_output=True, check=True, timeout=20).stdout


def _payloads(canary):
    return [p.replace("{canary}", str(canary)) for p in CORPUS]


def test_corpus_plain_argument_is_byte_identical(canary, tmp_path):
    for value in _payloads(canary):
        out = _sh(cmd("printf", "%s\\n", value).render(), tmp_path)
        assert out == value.encode() + b"\n", value[:60]


def test_corpus_as_secret_and_concat(canary, tmp_path):
    for value in _payloads(canary):
        c = cmd("printf", "%s\\n", concat("pre-", Secret(value), "-post"))
        assert _sh(c.render(), tmp_path) == b"pre-" + value.encode() + b"-post\n"
        assert c.masked() == "printf '%s\\n' pre-***-post"


def test_corpus_through_nested_sh_c(canary, tmp_path):
    for value in _payloads(canary):
        c = sh_c(sh_c(and_then(cmd("true"), cmd("printf", "%s\\n", value))))
        assert _sh(c.render(), tmp_path) == value.encode() + b"\n", value[:60]


def test_corpus_as_env_value(canary, tmp_path):
    for value in _payloads(canary):
        c = env(cmd("printenv", "KS_VALUE"), KS_VALUE=Secret(value))
        assert _sh(c.render(), tmp_path) == value.encode() + b"\n", value[:60]


def test_corpus_through_report_pgid_then(canary, tmp_path):
    for value in _payloads(canary)[:12]:
        out = _sh(report_pgid_then(cmd("printf", "%s\\n", value), "PG=").render(), tmp_path)
        first, rest = out.split(b"\n", 1)
        assert first.startswith(b"PG=") and first[3:].isdigit()
        assert rest == value.encode() + b"\n"


def test_corpus_as_redirection_target_writes_only_that_file(canary, tmp_path):
    name = "out $(touch canary) `id`;x"
    _sh(cmd("printf", "%s", "data", Raw(">"), name).render(), tmp_path)
    assert (tmp_path / name).read_bytes() == b"data"


def test_end_of_options_makes_option_lookalike_an_operand(tmp_path):
    # ls -- -la  looks for a file called "-la" instead of listing with -l -a.
    result = subprocess.run(
        ["/bin/sh", "-c", cmd("ls", end_of_options(), "-la").render()],
        cwd=tmp_path,
        capture_output=True,
    )
    assert result.returncode != 0
    assert b"-la" in result.stderr


def test_every_rendered_command_is_a_command_value():
    assert isinstance(sh_c(cmd("x")), Command)
    assert isinstance(env(cmd("x"), A="1"), Command)
    assert os.sep == "/"


def test_report_pgid_then_tags_stderr_lines_and_keeps_the_exit_status(canary, tmp_path):
    c = report_pgid_then(cmd("sh", "-c", "echo out; echo err >&2; echo out2; exit 3"), "PG=",
                         stderr_marker="ERR7=")
    assert "exec bash -c" in c.render()
    proc = subprocess.run(["bash", "-c", c.render()], cwd=tmp_path, capture_output=True)
    assert proc.returncode == 3
    assert proc.stdout.split(b"\n")[1:] == [b"out", b"out2", b""]
    assert proc.stderr == b"ERR7=err\n"
    for value in _payloads(canary)[:12]:  # the command is still data, whatever it holds
        out = _sh(report_pgid_then(cmd("printf", "%s\\n", value), "PG=",
                                   stderr_marker="E=").render(), tmp_path)
        assert out.split(b"\n", 1)[1] == value.encode() + b"\n"
    with pytest.raises(ValueError):
        report_pgid_then(cmd("x"), "PG=", stderr_marker="bad/marker")
