"""Helpers to run operations in-process against app.remote's RecordingConnection."""
from __future__ import annotations

import contextlib

from app.operations import runtime as op_context
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


# --------------------------------------------------------------------------- fixtures

import threading  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from app.operations import registry  # noqa: E402
from app.remote import CommandCancelled, CommandTimeout, Result  # noqa: E402


@pytest.fixture()
def handlers():
    """Register handlers for a test only: ``handlers(kind)(fn)``; restored afterwards.

    The handler modules are imported first: one first imported during the test would
    register inside the snapshot's lifetime, be dropped by the restore and, being
    imported already, never register again in this process.
    """
    registry.load_handlers()
    saved = dict(registry._HANDLERS)
    yield registry.operation_handler
    registry._HANDLERS.clear()
    registry._HANDLERS.update(saved)


@pytest.fixture()
def clean_streams(app):
    """Drop this test app's operation streams from Redis (its keys have their own prefix)."""
    from app import redis_keys
    from app.operations import logstream
    client = logstream.redis_client()
    for key in client.scan_iter(redis_keys.key("op", "*")):
        client.delete(key)
    yield client


class SlowConnection(RecordingConnection):
    """Emits ``lines`` lines ``interval`` apart, honouring cancel and timeout like the real one."""

    def __init__(self, *args, lines: int = 3, interval: float = 0.2, text: str = "line",
                 forever: bool = False, match: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.lines, self.interval, self.text, self.forever = lines, interval, text, forever
        self.match = match  # only commands containing this are slow; others return at once
        self.terminated = threading.Event()

    def run(self, command, *, on_line=None, timeout=None, cancel=None, pty=True, stdin=None):
        from app.remote import Call
        self.calls.append(Call(command.render(), command.masked(), command.secrets()))
        if self.match not in command.masked():
            return Result(exit_code=0)
        started = time.monotonic()
        n = 0
        while (self.forever and time.monotonic() - started < 60) or n < self.lines:
            if cancel is not None and cancel.wait(self.interval):
                self.terminated.set()
                raise CommandCancelled(f"The command on {self.address} was cancelled and terminated.")
            if cancel is None:
                time.sleep(self.interval)
            if timeout is not None and time.monotonic() - started > timeout:
                self.terminated.set()
                raise CommandTimeout(f"The command on {self.address} did not finish within "
                                     f"{timeout:g}s and was terminated.", timeout)
            n += 1
            if on_line is not None:
                on_line("stdout", f"{self.text} {n}")
        return Result(exit_code=0)


@contextlib.contextmanager
def slow_servers(**kwargs):
    made: list[SlowConnection] = []

    def factory(host, port, username, key, expected=None, **_):
        conn = SlowConnection(host, port, username, key, expected, **kwargs)
        made.append(conn)
        return conn

    previous = op_context.connection_factory
    op_context.connection_factory = factory
    try:
        yield made
    finally:
        op_context.connection_factory = previous


def started_operation(kind, target_type: str, target_id: int):
    """The newest operation, checked: of ``kind`` on the target, and its RQ job carries its id
    and nothing else (what a view that only starts an operation leaves behind)."""
    import sqlalchemy as sa
    from rq.job import Job

    from app.extensions import db
    from app.models import Operation
    from app.operations import logstream

    op = db.session.execute(sa.select(Operation).order_by(Operation.id.desc()).limit(1)
                            ).scalar_one()
    assert (op.kind, op.target_type, op.target_id) == (kind, target_type, target_id)
    assert op.rq_job_id, "the operation was not enqueued"
    job = Job.fetch(op.rq_job_id, connection=logstream.redis_client())
    assert job.func_name == "app.jobs.run_operation"
    assert job.args == (op.id,) and job.kwargs == {}
    return op
