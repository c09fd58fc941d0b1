"""Running operations in-process against recording connections: steps, failures,
cancel, time limits, children, host keys, lost connections and the reaper."""
import datetime as dt
import threading
import time

import sqlalchemy as sa

from app.extensions import db
from app.jobs import run_operation
from app.models import Operation, OperationLock, Server
from app.models.enums import OperationKind, OperationStatus as S, StepStatus as T
from app.operations import cancel_operation, start_operation
from app.operations.lifecycle import claim
from app.operations.reaper import reap
from app.remote import ConnectionLost
from app.shell import cmd
from tests.conftest import sign_in
from tests.factories import build_org
from tests.opsupport import clean_streams, fake_servers, handlers, slow_servers  # noqa: F401

K = OperationKind.CONFIG_CHANGE


def _start(g, **kw):
    kw.setdefault("lock_keys", [f"environment:{g.environment.id}"])
    return start_operation(K, target_type="environment", target_id=g.environment.id,
                           organisation_id=g.org.id, enqueue=False, **kw)


def _run(op):
    status = run_operation(op.id)
    db.session.expire_all()
    return status


def test_three_steps_succeed_and_share_one_connection(app, clean_streams, handlers):
    g = build_org()

    @handlers(K)
    def handler(ctx):
        assert ctx.target.id == g.environment.id
        for n in range(3):
            with ctx.step(f"step {n}", server=g.server) as step:
                step.run(cmd("echo", f"hello {n}"))
        ctx.result["done"] = True

    with fake_servers() as fake:
        fake.script("echo", output="out\n")
        op = _start(g)
        assert _run(op) == "succeeded"
    op = db.session.get(Operation, op.id)
    assert op.status is S.SUCCEEDED and op.started_at <= op.finished_at
    assert [s.status for s in op.steps] == [T.SUCCEEDED] * 3
    assert [s.order for s in op.steps] == [1, 2, 3]
    assert op.steps[0].script == "echo 'hello 0'"
    assert "out" in op.steps[0].logs
    assert op.result == {"done": True}
    assert len(fake.connections) == 1 and fake.connections[0].handshakes == 1
    assert db.session.get(Server, g.server.id).host_key_fingerprint == fake.fingerprint  # pinned
    assert db.session.execute(sa.select(OperationLock)).first() is None


def test_warm_up_opens_the_connection_once_and_the_first_step_reuses_it(app, clean_streams,
                                                                         handlers):
    g = build_org()
    seen = {}

    @handlers(K)
    def handler(ctx):
        ctx.runtime.warm_up([g.server.id])
        deadline = time.monotonic() + 10
        while not ctx.runtime.pool.connections() and time.monotonic() < deadline:
            time.sleep(0.01)  # connected in the background, before any step asked
        seen["warmed"] = len(ctx.runtime.pool.connections())
        with ctx.step("after the warm-up", server=g.server) as step:
            step.run(cmd("echo", "hi"))
        seen["handshakes"] = ctx.runtime.handshakes

    with fake_servers() as fake:
        fake.script("echo", output="hi\n")
        op = _start(g)
        assert _run(op) == "succeeded"
    assert seen == {"warmed": 1, "handshakes": 1}
    assert len(fake.connections) == 1 and fake.connections[0].handshakes == 1
    # The warm-up thread pinned the host key like any first contact.
    assert db.session.get(Server, g.server.id).host_key_fingerprint == fake.fingerprint


def test_warm_up_failure_is_left_for_the_first_real_use(app, clean_streams, handlers):
    g = build_org()

    @handlers(K)
    def handler(ctx):
        ctx.runtime.warm_up([987654])  # no such server: nothing raised here
        with ctx.step("still runs", server=g.server) as step:
            step.run(cmd("echo", "ok"))

    with fake_servers() as fake:
        fake.script("echo", output="ok\n")
        op = _start(g)
        assert _run(op) == "succeeded"


def test_nonzero_exit_fails_step_and_operation(app, clean_streams, handlers):
    g = build_org()
    ran_after = []

    @handlers(K)
    def handler(ctx):
        with ctx.step("bad", server=g.server) as step:
            step.run(cmd("false"))
        ran_after.append(True)

    with fake_servers() as fake:
        fake.script("false", exit_code=3)
        op = _start(g)
        assert _run(op) == "failed"
    op = db.session.get(Operation, op.id)
    assert not ran_after
    assert op.steps[0].status is T.FAILED and op.steps[0].exit_code == 3
    assert "exited with 3" in op.error and "exited with 3" in op.steps[0].error_logs


def test_stderr_is_kept_apart_and_shown_first_when_a_step_fails(app, client, clean_streams,
                                                                   handlers):
    """SPEC 3: error_logs keeps what the commands wrote to stderr (redacted), the reason last;
    the merged log still has every line; the operation page shows it above the script."""
    g = build_org()

    @handlers(K)
    def handler(ctx):
        ctx.secret("hunter2-secret")
        with ctx.step("ok", server=g.server) as step:
            step.run(cmd("compose", "pull"))
        with ctx.step("migrate", server=g.server) as step:
            step.run(cmd("php", "artisan", "migrate"))

    with fake_servers() as fake:
        fake.script("compose", output="pulled\n", stderr="Pulling web ... done\n")
        fake.script("artisan", exit_code=1, output="Migrating: 2026_01_01_create_users\n",
                    stderr="SQLSTATE[42P07]: relation users already exists\n"
                           "password hunter2-secret rejected\n")
        op = _start(g)
        assert _run(op) == "failed"
    op = db.session.get(Operation, op.id)
    ok, bad = op.steps
    assert ok.error_logs == "Pulling web ... done" and "pulled" in ok.logs
    assert bad.error_logs.startswith("SQLSTATE[42P07]: relation users already exists\n"
                                     "password *** rejected\n")
    assert "exited with 1: SQLSTATE" in bad.error_logs.splitlines()[-1]
    assert "Migrating: 2026_01_01_create_users" not in bad.error_logs
    assert "Migrating" in bad.logs and "SQLSTATE" in bad.logs
    assert "hunter2-secret" not in bad.error_logs + bad.logs
    sign_in(client, g.user)
    html = client.get(f"/operations/{op.id}").get_data(as_text=True)
    failed_row = html.split(f'id="step-{bad.id}"')[1].split("</tr>")[0]
    assert failed_row.index("data-step-stderr") < failed_row.index("script</summary>")
    ok_row = html.split(f'id="step-{ok.id}"')[1].split("</tr>")[0]
    assert "<summary class=\"muted\">stderr</summary>" in ok_row


def test_a_failed_command_s_last_words_are_the_step_s_reason(app, clean_streams, handlers):
    g = build_org()

    @handlers(K)
    def handler(ctx):
        with ctx.step("upload", server=g.server) as step:
            step.run(cmd("tar", "-xf", "source.tar"))

    with fake_servers() as fake:
        fake.script("tar", exit_code=2, output="x app/\n\x1b[31mtar: app/x: Cannot write: "
                    "No space left on device\x1b[0m\n")
        op = _start(g)
        assert _run(op) == "failed"
    op = db.session.get(Operation, op.id)
    assert op.steps[0].error_logs.endswith(
        "exited with 2: x app/ | tar: app/x: Cannot write: No space left on device")


def test_check_false_and_unchanged(app, clean_streams, handlers):
    g = build_org()

    @handlers(K)
    def handler(ctx):
        with ctx.step("probe", server=g.server) as step:
            if step.run(cmd("test", "-f", "/x"), check=False).exit_code != 0:
                step.unchanged("nothing to do")

    with fake_servers() as fake:
        fake.script("test", exit_code=1)
        op = _start(g)
        assert _run(op) == "succeeded"
    step = db.session.get(Operation, op.id).steps[0]
    assert step.status is T.SKIPPED and step.changed is False


def test_missing_handler_fails_clearly(app, clean_streams, handlers):
    g = build_org()
    from app.operations import registry
    registry._HANDLERS.pop(K, None)
    op = _start(g)
    assert _run(op) == "failed"
    assert "No handler" in db.session.get(Operation, op.id).error


def test_cancel_terminates_the_command_and_cleanup_runs(app, clean_streams, handlers):
    g = build_org()

    @handlers(K)
    def handler(ctx):
        def cleanup():
            with ctx.step("clean up", server=g.server) as step:
                step.run(cmd("rm", "-rf", ctx.workdir()))
        ctx.on_cleanup(cleanup)
        with ctx.step("long", server=g.server) as step:
            step.run(cmd("sleep", "600"))

    op = _start(g)
    op_id = op.id

    def cancel_soon():
        time.sleep(0.8)
        with app.app_context():
            cancel_operation(db.session.get(Operation, op_id))
            db.session.remove()

    threading.Thread(target=cancel_soon).start()
    with slow_servers(forever=True, interval=0.05, match="sleep") as conns:
        started = time.monotonic()
        assert _run(op) == "cancelled"
        assert time.monotonic() - started < 5
    op = db.session.get(Operation, op_id)
    assert conns[0].terminated.is_set()
    assert [(s.name, s.status, s.is_cleanup) for s in op.steps] == [
        ("long", T.CANCELLED, False), ("clean up", T.SUCCEEDED, True)]
    assert op.finished_at is not None
    assert db.session.execute(sa.select(OperationLock)).first() is None


def test_time_limit_ends_the_operation(app, clean_streams, handlers):
    g = build_org()

    @handlers(K)
    def handler(ctx):
        with ctx.step("forever", server=g.server) as step:
            step.run(cmd("sleep", "600"))

    op = _start(g, timeout_seconds=2)
    with slow_servers(forever=True, interval=0.05, match="sleep"):
        assert _run(op) == "failed"
    op = db.session.get(Operation, op.id)
    assert "time limit" in op.error
    assert op.steps[0].status is T.FAILED


def test_failed_child_fails_the_parent_even_if_caught(app, clean_streams, handlers):
    g = build_org()

    def child_handler(ctx):
        with ctx.step("child step", server=g.server) as step:
            step.run(cmd("false"))

    @handlers(K)
    def handler(ctx):
        ok = ctx.run_child(OperationKind.SLICE_CONFIGURE, "service_slice", g.slice.id,
                           lambda c: None, lock_keys=[f"gateway:{g.server.id}"])
        assert ok.status is S.SUCCEEDED
        try:
            ctx.run_child(OperationKind.SLICE_CONFIGURE, "service_slice", g.slice.id, child_handler,
                          lock_keys=[f"environment:{g.environment.id}"])  # inherited from parent
        except Exception:
            pass

    with fake_servers() as fake:
        fake.script("false", exit_code=1)
        op = _start(g)
        assert _run(op) == "failed"
    op = db.session.get(Operation, op.id)
    assert [c.status for c in op.children] == [S.SUCCEEDED, S.FAILED]
    assert all(c.finished_at <= op.finished_at for c in op.children)
    assert all(c.parent_id == op.id for c in op.children)
    assert "did not succeed" in op.error
    assert db.session.execute(sa.select(OperationLock)).first() is None


def test_changed_host_key_is_refused_naming_both(app, clean_streams, handlers):
    g = build_org()
    g.server.host_key_fingerprint = "SHA256:pinnedpinnedpinnedpinnedpinnedpinnedpinned"
    db.session.commit()

    @handlers(K)
    def handler(ctx):
        with ctx.step("connect", server=g.server) as step:
            step.run(cmd("true"))

    with fake_servers(fingerprint="SHA256:otherotherotherotherotherotherotherotherot"):
        op = _start(g)
        assert _run(op) == "failed"
    op = db.session.get(Operation, op.id)
    assert "SHA256:pinnedpinned" in op.error and "SHA256:otherother" in op.error
    assert db.session.get(Server, g.server.id).host_key_fingerprint.startswith("SHA256:pinned")


def test_lost_connection_says_so(app, clean_streams, handlers):
    g = build_org()

    @handlers(K)
    def handler(ctx):
        with ctx.step("upload", server=g.server) as step:
            step.run(cmd("cat"))

    with fake_servers() as fake:
        fake.script("cat", raises=ConnectionLost("The SSH connection to fake:22 was lost during the step."))
        op = _start(g)
        assert _run(op) == "failed"
    op = db.session.get(Operation, op.id)
    assert "SSH connection was lost" in op.error
    assert op.steps[0].status is T.FAILED


def test_reaper_interrupts_dead_workers_and_starts_the_next(app, clean_streams):
    g = build_org()
    op = _start(g)
    claim(op, "elsewhere.example/4242")  # another host: judged by heartbeat age
    queued = _start(g)
    assert queued.status is S.QUEUED
    assert reap() == []  # fresh heartbeat: alive
    op.heartbeat_at = op.heartbeat_at - dt.timedelta(seconds=45)
    db.session.commit()
    assert reap() == [op.id]
    db.session.expire_all()
    assert db.session.get(Operation, op.id).status is S.INTERRUPTED
    assert "heartbeat" in db.session.get(Operation, op.id).error
    assert db.session.get(Operation, queued.id).status is S.PENDING
    assert db.session.execute(sa.select(OperationLock)).first() is None


def test_a_step_cut_short_by_the_reaper_carries_the_reason(app, clean_streams):
    from app.models import OperationStep
    from app.models.enums import StepStatus
    g = build_org()
    op = _start(g)
    claim(op, "elsewhere.example/4243")
    step = OperationStep(operation_id=op.id, name="Build image", order=1,
                         status=StepStatus.RUNNING, logs="", error_logs="")
    done = OperationStep(operation_id=op.id, name="Fetch source", order=0,
                         status=StepStatus.SUCCEEDED, logs="", error_logs="")
    db.session.add_all([step, done])
    op.heartbeat_at = op.heartbeat_at - dt.timedelta(seconds=45)
    db.session.commit()
    assert reap() == [op.id]
    db.session.expire_all()
    step, done = db.session.get(OperationStep, step.id), db.session.get(OperationStep, done.id)
    assert step.status is StepStatus.INTERRUPTED
    assert "heartbeat" in step.error_logs and step.error_logs.startswith("Interrupted")
    assert done.status is StepStatus.SUCCEEDED and done.error_logs == ""
    assert len(db.session.get(Operation, op.id).steps) == 2  # no step of its own: one took it


def test_a_worker_that_died_between_steps_leaves_the_reason_on_a_step_of_its_own(
        app, clean_streams):
    """make test, issue 15's scenario 2: Redis restarted, the work horse died right after
    "Plan the deploy" ended and before the next step began; the reason was only on the
    operation. Now a last step says it (and only then: a step that was running takes it)."""
    from app.models import OperationStep
    from app.models.enums import StepStatus
    g = build_org()
    op = _start(g)
    claim(op, "elsewhere.example/4244")
    db.session.add_all([
        OperationStep(operation_id=op.id, name="Resolve main", order=0,
                      status=StepStatus.SUCCEEDED, logs="", error_logs=""),
        OperationStep(operation_id=op.id, name="Plan the deploy", order=1,
                      status=StepStatus.SUCCEEDED, logs="", error_logs="")])
    op.heartbeat_at = op.heartbeat_at - dt.timedelta(seconds=45)
    db.session.commit()
    assert reap() == [op.id]
    db.session.expire_all()
    steps = sorted(db.session.get(Operation, op.id).steps, key=lambda s: s.order)
    assert [(s.name, s.status) for s in steps] == [
        ("Resolve main", StepStatus.SUCCEEDED), ("Plan the deploy", StepStatus.SUCCEEDED),
        ("Interrupted between steps", StepStatus.INTERRUPTED)]
    assert steps[-1].error_logs == db.session.get(Operation, op.id).error
    assert "heartbeat" in steps[-1].error_logs and steps[-1].finished_at is not None
    reap()  # ended: a second pass adds nothing
    db.session.expire_all()
    assert len(db.session.get(Operation, op.id).steps) == 3


def test_reaper_notices_a_dead_local_pid_at_once(app, clean_streams):
    import socket
    import subprocess
    g = build_org()
    proc = subprocess.Popen(["true"])
    proc.wait()
    op = _start(g)
    claim(op, f"{socket.gethostname()}/{proc.pid}")
    assert reap() == [op.id]


def test_duplicate_job_does_nothing(app, clean_streams, handlers):
    g = build_org()
    calls = []

    @handlers(K)
    def handler(ctx):
        calls.append(ctx.id)

    op = _start(g)
    assert _run(op) == "succeeded"
    assert _run(op) == "succeeded"
    assert calls == [op.id]


def test_every_top_level_operation_kind_has_a_handler(app):
    """What the worker loads covers every kind a view or handler can start; the kinds run only
    inline by a parent (ctx.run_child with the parent's function) are never started alone."""
    import pathlib
    import re
    from app.operations import registry
    registry.load_handlers()  # a listed module that is missing or broken fails loudly here
    top_level = set(OperationKind) - registry.CHILD_KINDS - registry.RESERVED_KINDS
    assert top_level, "no operation kind left to check"
    missing = sorted(k.value for k in top_level if registry.handler_for(k) is None)
    assert missing == []
    assert "scheduler" in registry._CONFIG_CHANGES  # config_change dispatches by params
    started = set()
    for path in pathlib.Path("app").rglob("*.py"):
        started |= set(re.findall(r"start_operation\(\s*OperationKind\.([A-Z_]+)",
                                  path.read_text()))
    assert started, "no start_operation call found in app/"
    started_kinds = {OperationKind[name] for name in started}
    assert started_kinds <= top_level
    assert not started_kinds & (registry.CHILD_KINDS | registry.RESERVED_KINDS)


def test_keystone_reap_command(app, clean_streams):
    g = build_org()
    op = _start(g)
    claim(op, "elsewhere.example/1")
    op.heartbeat_at = op.heartbeat_at - dt.timedelta(seconds=120)
    db.session.commit()
    result = app.test_cli_runner().invoke(args=["reap"])
    assert result.exit_code == 0 and f"[{op.id}]" in result.output
    db.session.expire_all()
    assert db.session.get(Operation, op.id).status is S.INTERRUPTED


def test_every_handler_module_registers_a_handler(app):
    """No stale entry in HANDLER_MODULES: each listed module registers at least one handler
    (an operation kind or a config_change)."""
    import importlib
    from app.operations import registry
    registry.load_handlers()
    registered = {fn.__module__ for fn in registry._HANDLERS.values()} | \
        {fn.__module__ for fn in registry._CONFIG_CHANGES.values()}
    for name in registry.HANDLER_MODULES:
        importlib.import_module(name)
    assert sorted(set(registry.HANDLER_MODULES) - registered) == []
    assert registry.handler_for(OperationKind.CREDENTIAL_ROTATION).__name__ == "rotate_credentials"
