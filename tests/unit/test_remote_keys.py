"""Key generation and OpenSSH fingerprints (checked against ssh-keygen when present)."""

import base64
import shutil
import subprocess

import paramiko
import pytest

from app.remote.keys import (
    InvalidKey,
    fingerprint_of_key_blob,
    fingerprint_of_public_key,
    generate_ed25519,
    public_key_of_private,
)


def test_generate_ed25519_shapes():
    private, public, fp = generate_ed25519("deploy@keystone")
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert private.rstrip().endswith("-----END OPENSSH PRIVATE KEY-----")
    kind, b64, comment = public.split(" ")
    assert kind == "ssh-ed25519" and comment == "deploy@keystone"
    assert fp.startswith("SHA256:") and not fp.endswith("=") and len(fp) == len("SHA256:") + 43
    assert fp == fingerprint_of_public_key(public)


def test_keys_are_unique():
    assert generate_ed25519()[2] != generate_ed25519()[2]


def test_private_key_matches_public_key_and_paramiko_reads_it():
    import io

    private, public, fp = generate_ed25519()
    assert public_key_of_private(private, "keystone") == public
    pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(private))
    assert fingerprint_of_key_blob(pkey.asbytes()) == fp


def test_fingerprint_matches_known_vector():
    # Blob of a fixed key: fingerprint computed independently with ssh-keygen -lf.
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH5xgqZBAJ6nTdtlZzuAipqAOF3684Td3zADf9lvvEnL t"
    assert fingerprint_of_public_key(line) == "SHA256:SyRg0Gv2D6OHwnqonnKfOovKqUVWbtGGKEEMLnEdkP8"


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
def test_fingerprint_agrees_with_ssh_keygen(tmp_path):
    _, public, fp = generate_ed25519("x")
    (tmp_path / "k.pub").write_text(public + "\n")
    out = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == fp


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
def test_rsa_keys_from_ssh_keygen_are_fingerprinted_too(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(tmp_path / "rsa")], check=True)
    public = (tmp_path / "rsa.pub").read_text()
    out = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "rsa.pub")], capture_output=True, text=True, check=True)
    assert fingerprint_of_public_key(public) == out.stdout.split()[1]
    assert public_key_of_private((tmp_path / "rsa").read_text()) == " ".join(public.split()[:2])


@pytest.mark.parametrize(
    "line",
    [
        "",
        "ssh-ed25519",
        "ssh-ed25519 not-base64!!",
        "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIH5xgqZBAJ6nTdtlZzuAipqAOF3684Td3zADf9lvvEnL",  # type mismatch
        "ssh-ed25519 " + base64.b64encode(b"\x00").decode(),
    ],
)
def test_bad_public_keys_are_refused(line):
    with pytest.raises(InvalidKey):
        fingerprint_of_public_key(line)


def test_bad_private_key_is_refused():
    with pytest.raises(InvalidKey):
        public_key_of_private("-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n-----END OPENSSH PRIVATE KEY-----\n")


def test_comment_must_be_one_line():
    with pytest.raises(ValueError):
        generate_ed25519("a\nb")
