"""One SSH connection per server per operation.

An operation's steps (and its children on the same server) share a
:class:`ConnectionPool` created by the job, so ten steps cost one handshake.
The pool lives inside the RQ job (a paramiko Transport is a thread plus a
socket and cannot cross the worker's fork) and is closed in its ``finally``.
``handshakes`` counts the handshakes it performed (the log-latency benchmark
reports it as ``ssh_handshakes``).
"""

from __future__ import annotations

import threading
from typing import Callable

from .connection import Connection
from .errors import HostKeyMismatch

Key = tuple[str, int, str]


class ConnectionPool:
    """Cache of connected :class:`Connection` objects keyed by (host, port, username)."""

    def __init__(self, factory: Callable[..., Connection] = Connection, **connection_kwargs):
        self._factory = factory
        self._kwargs = connection_kwargs
        self._connections: dict[Key, Connection] = {}
        self._lock = threading.Lock()
        self._connecting: dict[Key, threading.Lock] = {}
        self.handshakes = 0

    def get(
        self,
        host: str,
        port: int,
        username: str,
        private_key_pem: str,
        expected_fingerprint: str | None = None,
    ) -> Connection:
        """A connected Connection for that server, reused while it stays up.

        A dropped connection is replaced by a new one (a new handshake,
        checked against the same pin). Asking for a pooled server with a
        different pin than the one it presented raises :class:`HostKeyMismatch`.
        """
        key = (host, int(port), username)
        with self._lock:
            conn = self._connections.get(key)
            if conn is not None and conn.is_connected:
                return self._checked(conn, host, port, expected_fingerprint)
            connecting = self._connecting.setdefault(key, threading.Lock())
        # One handshake per server at a time, but servers side by side: a deploy's threads
        # (app.operations.fanout) connect to four servers at once, not one after another.
        with connecting:
            with self._lock:
                conn = self._connections.get(key)
                if conn is not None and conn.is_connected:
                    return self._checked(conn, host, port, expected_fingerprint)
                if conn is not None:
                    self._connections.pop(key, None)
            if conn is not None:
                conn.close()
                # Reconnect with the pin this pool already observed if the caller had none.
                expected_fingerprint = expected_fingerprint or conn.fingerprint
            conn = self._factory(host, int(port), username, private_key_pem, expected_fingerprint, **self._kwargs)
            with self._lock:
                self.handshakes += 1
            conn.connect()
            with self._lock:
                self._connections[key] = conn
            return conn

    @staticmethod
    def _checked(conn: Connection, host: str, port: int, expected: str | None) -> Connection:
        if expected is not None and conn.fingerprint != expected:
            raise HostKeyMismatch(host, int(port), expected, conn.fingerprint or "?")
        return conn

    def connections(self) -> list[Connection]:
        """The pooled connections (a snapshot)."""
        with self._lock:
            return list(self._connections.values())

    def close(self) -> None:
        with self._lock:
            for conn in self._connections.values():
                conn.close()
            self._connections.clear()

    def __enter__(self) -> "ConnectionPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._connections)
