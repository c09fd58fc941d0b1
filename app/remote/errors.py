"""Errors raised by app.remote: one hierarchy, messages written for the user.

Why a hierarchy of our own: callers (the operations engine, the UI) must be
able to tell "server unreachable" from "key refused" from "host key changed"
without importing paramiko or parsing socket errors, and every message names
the host:port so it can be shown as is. No message ever contains a command
line (it could carry a secret); the caller has the masked form.
"""

from __future__ import annotations


class RemoteError(Exception):
    """Base class of every error raised by app.remote."""


class ConnectError(RemoteError):
    """Could not establish an authenticated SSH connection."""


class Unreachable(ConnectError):
    """The TCP connection could not be made (DNS, routing, firewall)."""


class ConnectTimeout(Unreachable):
    """No answer within the connect timeout: host down, black-holed or filtered."""


class ConnectionRefused(Unreachable):
    """The host answered but nothing listens on that port (wrong port, sshd down)."""


class ProtocolError(ConnectError):
    """Something answered, but the SSH handshake failed (not an SSH server?)."""


class AuthenticationFailed(ConnectError):
    """The server did not accept Keystone's key for that user."""


class HostKeyMismatch(ConnectError):
    """The server presented a host key other than the pinned one.

    ``expected`` and ``presented`` are OpenSSH ``SHA256:...`` fingerprints.
    """

    def __init__(self, host: str, port: int, expected: str, presented: str):
        self.host = host
        self.port = port
        self.expected = expected
        self.presented = presented
        super().__init__(
            f"Host key for {host}:{port} does not match the pinned key: expected {expected}, "
            f"the server presented {presented}. Keystone refused to connect. This happens when the "
            f"server was reinstalled, or when someone is intercepting the connection. If you know "
            f"why the key changed, re-pin it explicitly (trust the new host key in the server's "
            f"settings); Keystone never does that on its own."
        )


class ConnectionLost(RemoteError):
    """The SSH connection dropped while a command or transfer was in progress."""


class CommandTimeout(RemoteError):
    """The command ran longer than its timeout and was terminated."""

    def __init__(self, message: str, timeout: float):
        self.timeout = timeout
        super().__init__(message)


class CommandCancelled(RemoteError):
    """The command was cancelled (the cancel event was set) and was terminated."""


class CommandFailed(RemoteError):
    """Raised by :meth:`Result.check` when a command exited non-zero."""

    def __init__(self, message: str, result):
        self.result = result
        super().__init__(message)


class TransferFailed(RemoteError):
    """An SFTP upload or download failed (permissions, missing directory, disk full)."""
