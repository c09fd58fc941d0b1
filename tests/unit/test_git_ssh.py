"""Git over SSH: GIT_SSH_COMMAND construction, the 0600/O_EXCL key file that is gone after
every session, the exact git commands, and proof that injected values stay inert when run."""
import os
import stat
import uuid

import pytest

from app.remote.keys import generate_ed25519
from app.repositories import git as g
from app.repositories.local import argv_of, run_local
from app.repositories.validation import ValidationError


@pytest.fixture()
def keypair():
    private, public, _fp = generate_ed25519("test")
    return private, public


@pytest.fixture()
def known_hosts(keypair):
    return "[127.0.0.1]:1 " + " ".join(keypair[1].split()[:2]) + "\n"


def test_git_ssh_command_is_exact_and_quoted():
    value = g.git_ssh_command("/work/op dir/deploy_key", "/work/op dir/known_hosts")
    assert value == (
        "ssh -F /dev/null -i '/work/op dir/deploy_key' -o IdentitiesOnly=yes "
        "-o IdentityAgent=none -o UserKnownHostsFile='/work/op dir/known_hosts' "
        "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes "
        "-o PasswordAuthentication=no -o ClearAllForwardings=yes -o PermitLocalCommand=no "
        "-o ConnectTimeout=15")


def test_git_ssh_command_cannot_be_broken_by_a_path():
    import shlex
    value = g.git_ssh_command("/tmp/x'; touch /tmp/pwned; '", "/tmp/k h")
    argv = shlex.split(value)
    assert argv[argv.index("-i") + 1] == "/tmp/x'; touch /tmp/pwned; '"
    assert "UserKnownHostsFile=/tmp/k h" in argv


def test_git_commands_disable_other_transports_and_end_options():
    command = g.ls_remote_command("ssh://git@h:2/r.git", "refs/heads/main")
    assert argv_of(command) == [
        "git", "-c", "protocol.allow=never", "-c", "protocol.ssh.allow=always",
        "-c", "submodule.recurse=false", "-c", "core.hooksPath=/dev/null",
        "-c", "core.fsmonitor=false", "-c", "credential.helper=",
        "-c", "advice.detachedHead=false",
        "ls-remote", "--heads", "--", "ssh://git@h:2/r.git", "refs/heads/main"]
    init, fetch = g.fetch_commands("git@h:r.git", "a" * 40, "main")
    assert argv_of(fetch)[-4:] == ["--depth=1", "--", "git@h:r.git", "a" * 40]
    assert "--no-recurse-submodules" in argv_of(fetch)
    assert argv_of(g.fetch_branch_command("git@h:r.git", "main"))[-3:] == [
        "--", "git@h:r.git", "+refs/heads/main:refs/remotes/origin/main"]
    assert argv_of(g.archive_command("b" * 40))[-3:] == ["--format=tar", "--", "b" * 40]


def test_key_file_is_0600_exclusive_and_removed_after_the_session(tmp_path, keypair, known_hosts):
    private, _ = keypair
    session = g.GitSSH(tmp_path, private, known_hosts)
    with session as git:
        mode = stat.S_IMODE(os.stat(git.key_path).st_mode)
        assert mode == 0o600
        assert git.key_path.read_text() == private if private.endswith("\n") else private + "\n"
        assert str(git.key_path) in git.env["GIT_SSH_COMMAND"]
        assert stat.S_IMODE(os.stat(git.known_hosts_path).st_mode) == 0o600
    assert not session.key_path.exists()


def test_key_is_removed_when_the_session_raises(tmp_path, keypair, known_hosts):
    session = g.GitSSH(tmp_path, keypair[0], known_hosts)
    with pytest.raises(RuntimeError):
        with session:
            assert session.key_path.exists()
            raise RuntimeError("git failed")
    assert not session.key_path.exists()


def test_key_file_refuses_an_existing_file_or_symlink(tmp_path, keypair, known_hosts):
    target = tmp_path / "elsewhere"
    target.write_text("do not overwrite")
    (tmp_path / g.KEY_FILE_NAME).symlink_to(target)
    with pytest.raises(FileExistsError):
        with g.GitSSH(tmp_path, keypair[0], known_hosts):
            pass
    assert target.read_text() == "do not overwrite"


def test_no_session_without_trusted_host_key(tmp_path, keypair):
    with pytest.raises(g.GitAccessError, match="verify repository access first"):
        g.GitSSH(tmp_path, keypair[0], "")
    assert not (tmp_path / g.KEY_FILE_NAME).exists()


def test_parse_ls_remote_and_known_hosts(keypair):
    out = ("a" * 40 + "\trefs/heads/main\n" + "b" * 40 + "\trefs/heads/feature/x\n"
           + "c" * 40 + "\trefs/tags/v1\nnoise\n")
    assert g.parse_ls_remote(out) == {"main": "a" * 40, "feature/x": "b" * 40}
    line = "[h]:22 " + keypair[1]
    keys = g.parse_known_hosts(line + "\n# comment\ngarbage\n")
    assert len(keys) == 1 and keys[0].key_type == "ssh-ed25519"
    assert keys[0].fingerprint.startswith("SHA256:")


@pytest.mark.parametrize("output,kind", [
    ("git@h: Permission denied (publickey).\nfatal: Could not read from remote repository.", "not_authorised"),
    ("keystone-githost: access denied: key not authorised for sample.git", "not_authorised"),
    ("ERROR: Repository not found.\nfatal: Could not read from remote repository.", "not_found"),
    ("Host key verification failed.\nfatal: Could not read from remote repository.", "host_key"),
    ("ssh: connect to host h port 2: Connection refused", "unreachable"),
    ("something else", "error"),
])
def test_git_errors_become_clear_messages(output, kind):
    err = g.classify_git_error(output)
    assert err.kind == kind
    if kind == "not_authorised":
        assert "read-only deploy key" in str(err)


INJECTIONS = [
    "--upload-pack=touch {canary}",
    "--upload-pack=touch {canary};",
    "ext::sh -c touch% {canary}",
    "ext::sh -c 'touch {canary}'",
    "ssh://-oProxyCommand=touch {canary}/x.git",
    "ssh://-oProxyCommand=touch%20{canary}/x.git",
    "file:///tmp;touch {canary}",
    "git@h:x.git;touch {canary}",
    "$(touch {canary})",
    "`touch {canary}`",
    "git@h:x.git\ntouch {canary}",
]


@pytest.mark.parametrize("template", INJECTIONS)
def test_injected_urls_are_inert_even_if_validation_were_bypassed(tmp_path, keypair, known_hosts,
                                                                  template):
    """Run the real git command with the raw value (no validator): nothing gets executed."""
    canary = tmp_path / f"canary-{uuid.uuid4().hex}"
    url = template.format(canary=canary)
    with g.GitSSH(tmp_path / "work", keypair[0], known_hosts) as git:
        result = git.run(g.ls_remote_command(url), timeout=30)
    assert not result.ok
    assert not canary.exists()
    for ref in ("main;touch {canary}", "$(touch {canary})", "--upload-pack=touch {canary}"):
        with g.GitSSH(tmp_path / "work", keypair[0], known_hosts) as git:
            git.run(g.ls_remote_command("ssh://git@127.0.0.1:1/x.git", ref.format(canary=canary)),
                    timeout=30)
        assert not canary.exists()
    assert not (tmp_path / "work" / g.KEY_FILE_NAME).exists()


def test_fetch_validates_before_running_anything(tmp_path, keypair, known_hosts):
    canary = tmp_path / "canary"
    for branch in ("main;touch " + str(canary), "--upload-pack=touch " + str(canary), "$(id)"):
        with pytest.raises(ValidationError):
            g.fetch_and_archive(tmp_path, keypair[0], known_hosts, "git@h:r.git", "a" * 40,
                                branch, tmp_path / "out.tar")
    with pytest.raises(ValidationError):
        g.fetch_and_archive(tmp_path, keypair[0], known_hosts, "ext::sh -c touch% " + str(canary),
                            "a" * 40, "main", tmp_path / "out.tar")
    with pytest.raises(ValidationError):
        g.fetch_and_archive(tmp_path, keypair[0], known_hosts, "git@h:r.git", "HEAD;id", "main",
                            tmp_path / "out.tar")
    assert not canary.exists()
    assert not (tmp_path / "repo").exists()


def test_run_local_uses_no_shell_and_redacts(tmp_path):
    from app import shell
    canary = tmp_path / "canary"
    result = run_local(shell.cmd("echo", f"; touch {canary}", shell.Secret("s3cret")))
    assert result.stdout == f"; touch {canary} ***"
    assert not canary.exists()
    with pytest.raises(ValueError):
        run_local(shell.and_then(shell.cmd("true"), shell.cmd("true")))


def test_local_archive_round_trip(tmp_path):
    """git archive of a local commit through the same commands (no network)."""
    import subprocess
    import tarfile
    repo = tmp_path / "src"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "composer.json").write_text("{}")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "x"], check=True, env=env)
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    out = tmp_path / "out.tar"
    result = run_local(g.archive_command(sha), cwd=repo, stdout_path=out)
    assert result.ok
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    with tarfile.open(out) as tar:
        assert tar.getnames() == ["composer.json"]
