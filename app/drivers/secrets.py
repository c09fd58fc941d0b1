"""Credential generation and hashing shared by drivers.

Generated passwords are 32 characters of [A-Za-z0-9]: ~190 bits, nothing a
URL, a DSN, a shell or an env file needs to escape.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets as _secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def generate_password(length: int = 32) -> str:
    return "".join(_secrets.choice(_ALPHABET) for _ in range(length))


def scram_sha256_verifier(password: str, *, salt: bytes | None = None,
                          iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 secret Postgres stores for ``password`` (RFC 5802 / 7677).

    Sending this instead of the password means the plaintext never reaches
    the server's process list, logs or ``pg_stat_statements``: Postgres
    recognises the format in ``ALTER ROLE ... PASSWORD '<verifier>'``.
    Generated passwords are ASCII, so SASLprep is the identity for them.
    """
    salt = salt if salt is not None else _secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def valkey_password_hash(password: str) -> str:
    """The ``#<sha256 hex>`` form an ACL file accepts instead of a plaintext password."""
    return "#" + hashlib.sha256(password.encode("utf-8")).hexdigest()


_IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def sql_identifier_name(text: str, max_len: int = 63) -> str:
    """A lowercase [a-z0-9_] name from free text ("Shop / Production" -> "shop_production")."""
    s = re.sub(r"[^a-z0-9]+", "_", (text or "").lower()).strip("_")
    if not s or s[0].isdigit():
        s = "ks_" + s
    return s[:max_len].rstrip("_") or "ks"


def validate_identifier(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _IDENT_RE.fullmatch(name):
        raise ValueError(f"{kind} {name!r}: use 1-63 lowercase letters, digits and "
                         "underscores, starting with a letter or underscore")
    return name
