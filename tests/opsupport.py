"""Helpers to run operations in-process against app.remote's RecordingConnection."""
from __future__ import annotations

import contextlib

from app.operations import context as op_context
from app.remote import RecordingConnection


class FakeServers:
    """A connection factory for the pool: one RecordingConnection per host, scripted."""

    def __init__(self, fingerprint: str = "SHA256:fakefakefakefakefakefakefakefakefakefakefak"):
        self.fingerprint = fingerprint
        self.rules: list[tuple[tuple, dict]] = []
        self.connections: list[RecordingConnection] = []

    def script(self, *args, **kwargs) -> "FakeServers":
        self.rules.append((args, kwargs))
        return self

    def __call__(self, host, port, username, key, expected=None, **kwargs):
        conn = RecordingConnection(host, port, username, key, expected, fingerprint=self.fingerprint)
        for args, kwargs_ in self.rules:
            conn.script(*args, **kwargs_)
        self.connections.append(conn)
        return conn

    @property
    def calls(self):
        return [c for conn in self.connections for c in conn.calls]


@contextlib.contextmanager
def fake_servers(**kwargs):
    fake = FakeServers(**kwargs)
    previous = op_context.connection_factory
    op_context.connection_factory = fake
    try:
        yield fake
    finally:
        op_context.connection_factory = previous
