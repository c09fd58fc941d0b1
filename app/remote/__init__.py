"""Remote execution over SSH: the only package in Keystone that imports paramiko.

It knows nothing about the database: callers pass host, port, user, key and
the pinned fingerprint as plain values and store what :meth:`Connection.connect`
returns themselves. Commands come from :mod:`app.shell`.
"""

from .connection import Connection, LineCallback
from .files import make_mkdir_p
from .errors import (
    AuthenticationFailed,
    CommandCancelled,
    CommandFailed,
    CommandTimeout,
    ConnectError,
    ConnectionLost,
    ConnectionRefused,
    ConnectTimeout,
    HostKeyMismatch,
    ProtocolError,
    RemoteError,
    TransferFailed,
    Unreachable,
)
from .fake import Call, RecordingConnection
from .keys import InvalidKey, fingerprint_of_key_blob, fingerprint_of_public_key, generate_ed25519, public_key_of_private
from .pool import ConnectionPool
from .result import NO_EXIT_STATUS, Result

__all__ = [
    "Connection",
    "ConnectionPool",
    "RecordingConnection",
    "Call",
    "Result",
    "NO_EXIT_STATUS",
    "LineCallback",
    "make_mkdir_p",
    "generate_ed25519",
    "fingerprint_of_public_key",
    "fingerprint_of_key_blob",
    "public_key_of_private",
    "InvalidKey",
    "RemoteError",
    "ConnectError",
    "Unreachable",
    "ConnectTimeout",
    "ConnectionRefused",
    "ProtocolError",
    "AuthenticationFailed",
    "HostKeyMismatch",
    "ConnectionLost",
    "CommandTimeout",
    "CommandCancelled",
    "CommandFailed",
    "TransferFailed",
]
