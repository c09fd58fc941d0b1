"""SSH keys and fingerprints, with ``cryptography`` only (no paramiko, no I/O).

Keystone needs keypairs for its management key (authorised on every server)
and for per-application deploy keys (read access to a git repository), and it
pins servers' host keys by fingerprint. Fingerprints use OpenSSH's format,
``SHA256:`` + unpadded base64 of the SHA-256 of the key blob, so what the UI
shows matches ``ssh-keygen -lf`` and the "host key changed" warnings users
already know.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

__all__ = [
    "generate_ed25519",
    "fingerprint_of_public_key",
    "fingerprint_of_key_blob",
    "public_key_of_private",
    "InvalidKey",
]


class InvalidKey(ValueError):
    """A key or public-key line could not be parsed."""


def fingerprint_of_key_blob(blob: bytes) -> str:
    """OpenSSH SHA256 fingerprint of a raw public key blob (the wire format)."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def fingerprint_of_public_key(openssh_line: str) -> str:
    """Fingerprint of an ``ssh-ed25519 AAAA... comment`` line (authorized_keys / .pub).

    The key type written before the blob must match the type inside it, so a
    truncated or pasted-wrong key is refused rather than fingerprinted.
    """
    fields = (openssh_line or "").strip().split()
    if len(fields) < 2:
        raise InvalidKey("expected '<type> <base64> [comment]'")
    key_type, b64 = fields[0], fields[1]
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidKey(f"public key is not valid base64: {exc}") from None
    if len(blob) < 4:
        raise InvalidKey("public key blob is too short")
    (n,) = struct.unpack(">I", blob[:4])
    inner_type = blob[4 : 4 + n]
    if inner_type != key_type.encode("ascii", "replace"):
        raise InvalidKey(f"key type {key_type!r} does not match the key data")
    return fingerprint_of_key_blob(blob)


def generate_ed25519(comment: str = "keystone") -> tuple[str, str, str]:
    """A new ed25519 keypair: ``(private_openssh_pem, public_openssh_line, fingerprint)``.

    The private key is unencrypted OpenSSH format (``-----BEGIN OPENSSH
    PRIVATE KEY-----``), which both paramiko and ssh/git accept; the caller
    stores it encrypted at rest.
    """
    if any(c in comment for c in "\r\n"):
        raise ValueError("comment must be a single line")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode(
        "ascii"
    )
    if comment:
        public = f"{public} {comment}"
    return private_pem, public, fingerprint_of_public_key(public)


def public_key_of_private(private_pem: str, comment: str = "") -> str:
    """The OpenSSH public line for a private key (OpenSSH or PEM format)."""
    try:
        data = private_pem.encode("ascii") if isinstance(private_pem, str) else private_pem
    except UnicodeEncodeError:
        raise InvalidKey("cannot read private key: it contains characters that are not ASCII") from None
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidKey(f"cannot read private key: {exc}") from None
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode(
        "ascii"
    )
    return f"{public} {comment}" if comment else public
