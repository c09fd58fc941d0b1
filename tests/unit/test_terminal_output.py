"""Terminal output in operation logs: ANSI codes, Docker's harmless warnings, expected probes."""
from app.operations import terminal


def test_cursor_and_colour_codes_are_removed():
    assert terminal.strip_ansi("\x1b[1A\x1b[2Kabc123: Pushed") == "abc123: Pushed"
    assert terminal.strip_ansi("\x1b[32mok\x1b[0m done") == "ok done"
    assert terminal.strip_ansi("\x1b]0;title\x07text") == "text"
    assert terminal.strip_ansi("Waiting\rPushing 10%\rPushing 100%") == "Pushing 100%"


def test_a_line_of_only_cursor_movement_is_dropped_plain_blank_lines_kept():
    assert terminal.clean("\x1b[1A\x1b[2K") is None
    assert terminal.clean("") == ""
    assert terminal.clean("\x1b[1A\x1b[2Klatest: digest: sha256:ab size: 1 ") == "latest: digest: sha256:ab size: 1"


def test_docker_credential_warning_for_the_operation_private_config_is_dropped():
    lines = ["WARNING! Your password will be stored unencrypted in "
             "/home/keystone/operations/0f3a/docker/config.json.",
             "Configure a credential helper to remove this warning. See",
             "https://docs.docker.com/engine/reference/commandline/login/#credential-stores",
             "https://docs.docker.com/go/credential-store/",
             "Login Succeeded"]
    assert [terminal.clean(x) for x in lines] == [None, None, None, None, "Login Succeeded"]
    # the same warning about a user's own ~/.docker is not hidden
    own = "WARNING! Your password will be stored unencrypted in /root/.docker/config.json."
    assert terminal.clean(own) == own


def test_not_found_answers_of_probes_are_marked_expected():
    for line in ("Error: No such container: ks-web-1", "Error: No such object: ks-web-1",
                 "Error response from daemon: No such container: shop-web"):
        assert terminal.mark_expected(line) == line + terminal.EXPECTED_SUFFIX
    assert terminal.mark_expected("Error: permission denied") is None
    assert terminal.mark_expected("ks-web-1 is running") is None
