"""Custom servers: a machine the user already has, reached with a login given once.

The user gives a host, an SSH port and a root (or passwordless-sudo) login with
a private key. Before Keystone trusts the machine it shows the host key's
fingerprint and the user confirms it (compare with ``ssh-keygen -lf
/etc/ssh/ssh_host_ed25519_key.pub`` on the server, or the provider's console).
Only the confirmed fingerprint is pinned; every later connection must present
exactly that key.

:func:`probe_host_key` reads the fingerprint WITHOUT logging in: it connects
with an impossible pin, so :class:`app.remote.Connection` stops right after
the key exchange (the host key is checked before any credential is sent) and
reports what the server presented. No credential reaches a server that the
user has not confirmed.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.providers.base import ProviderError

_IMPOSSIBLE_PIN = "SHA256:keystone-probe-no-key-has-this-fingerprint"
# A syntactically valid key that is never used: the handshake stops at the pin check.
_UNUSED_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nunused\n-----END OPENSSH PRIVATE KEY-----\n"


@dataclass(frozen=True)
class ProbeResult:
    fingerprint: str


def probe_host_key(host: str, port: int, timeout: float = 10) -> ProbeResult:
    """The SHA256 fingerprint of the host key ``host:port`` presents (no login attempted).

    Raises ProviderError with one message whatever went wrong (no answer, refused,
    something other than SSH on the port): a form anyone signed up can submit must not
    tell a closed port from an open one, or it is a port scanner.
    """
    from app.remote import Connection, ConnectError, HostKeyMismatch

    conn = Connection(host, int(port), "keystone-probe", _UNUSED_KEY,
                      expected_fingerprint=_IMPOSSIBLE_PIN, connect_timeout=timeout)
    try:
        conn.connect()
    except HostKeyMismatch as exc:
        return ProbeResult(exc.presented)
    except ConnectError:
        raise ProviderError(no_ssh_message(host, port), "unreachable") from None
    finally:
        conn.close()
    raise ProviderError(no_ssh_message(host, port), "unreachable")


def no_ssh_message(host: str, port: int) -> str:
    return (f"Keystone could not read an SSH host key from {host}:{port}. Check the address, "
            f"the SSH port and that the firewall lets Keystone in, then try again.")


def check_private_key(pem: str) -> str:
    """The public key line of ``pem``; ProviderError if it cannot be read (or has a passphrase)."""
    from app.remote.keys import InvalidKey, public_key_of_private

    try:
        return public_key_of_private(pem.strip() + "\n")
    except InvalidKey:
        raise ProviderError("This private key cannot be read. Paste the whole key, from "
                            "-----BEGIN to -----END, without a passphrase.", "invalid_input") from None
