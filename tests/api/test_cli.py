"""The deploy command line against the live server: login stores the token 0600, deploy
--wait streams "step n of m" and the log from the API's SSE and exits with the result,
status lists the environments.

No worker runs in this tier (no Docker): a stand-in plays the worker's part on the real
database and the real Redis stream (what app.operations' recorder writes), so what is
tested is the CLI and the API between them; the deploy itself is the integration tier's.
"""
from __future__ import annotations

import json
import os
import stat
import threading
import time

import sqlalchemy as sa
from click.testing import CliRunner

from app.cli import main
from app.extensions import db
from app.models import Operation, OperationStep
from app.models.enums import OperationKind, OperationStatus, StepStatus
from app.operations import logstream
from tests.api.conftest import deployable
from tests.factories import build_org

STEPS = ["Resolve main", "Build", "Cut over"]


def _seed(live):
    with live.app.app_context():
        graph = deployable(build_org())
        # A previous successful deploy: its steps are the plan ("of 3").
        previous = Operation(organisation_id=graph.org.id, kind=OperationKind.ENVIRONMENT_DEPLOY,
                             target_type="environment", target_id=graph.environment.id,
                             status=OperationStatus.SUCCEEDED)
        db.session.add(previous)
        for order, name in enumerate(STEPS, 1):
            db.session.add(OperationStep(operation=previous, name=name, order=order,
                                         status=StepStatus.SUCCEEDED))
        db.session.commit()
        return graph.token, graph.environment.id, previous.id


def _stand_in_worker(app, env_id: int, after_id: int, fail_at: str | None, done: dict):
    """Run the deploy the CLI starts as a worker would record it, failing at ``fail_at``."""
    with app.app_context():
        op = None
        deadline = time.monotonic() + 120  # until the CLI's POST has created it (a wide
        while time.monotonic() < deadline:  # bound: a loaded 2-core machine is slow)
            op = db.session.execute(sa.select(Operation).where(
                Operation.target_id == env_id, Operation.id > after_id,
                Operation.kind == OperationKind.ENVIRONMENT_DEPLOY)).scalars().first()
            if op is not None:
                break
            db.session.remove()
            time.sleep(0.02)
        assert op is not None, "the CLI started no deploy"
        stream = logstream.LogStream(logstream.redis_client(), [op.id])
        op.status = OperationStatus.RUNNING
        db.session.commit()
        stream.status("running")
        final = OperationStatus.SUCCEEDED
        for order, name in enumerate(STEPS, 1):
            step = OperationStep(operation=op, name=name, order=order, status=StepStatus.RUNNING)
            db.session.add(step)
            db.session.commit()
            stream.step(step.id, "running")
            stream.line(step.id, f"==> {name}")
            if name == fail_at:
                stream.line(step.id, "composer install: syntax error in app/Http/Kernel.php",
                            stderr=True)
                step.status, final = StepStatus.FAILED, OperationStatus.FAILED
                op.error = f"{name} failed"
            else:
                stream.line(step.id, f"{name.lower()} done")
                step.status = StepStatus.SUCCEEDED
            db.session.commit()
            stream.step(step.id, step.status.value)
            if final is OperationStatus.FAILED:
                break
        op.status = final
        db.session.commit()
        stream.end(final.value)
        done["id"] = op.id
        db.session.remove()


def _deploy(live, token, env_id, after_id, fail_at=None, args=()):
    done: dict = {}
    worker = threading.Thread(target=_stand_in_worker,
                              args=(live.app, env_id, after_id, fail_at, done))
    worker.start()
    result = CliRunner().invoke(main, ["deploy", "shop/production", "--wait", *args],
                                env={"KEYSTONE_URL": live.url, "KEYSTONE_TOKEN": token})
    worker.join(timeout=120)
    return result, done


def test_deploy_wait_streams_steps_and_exits_0_on_success(live):
    token, env_id, previous = _seed(live)
    sha = "e" * 40
    result, done = _deploy(live, token, env_id, previous, args=["--commit", sha])
    out = result.output
    assert result.exit_code == 0, out
    assert f"Deploy #{done['id']} of shop/production" in out and sha[:12] in out
    assert "--- step 1 of 3: Resolve main" in out
    assert "--- step 3 of 3: Cut over" in out
    assert "build done" in out and out.rstrip().endswith(f"Deploy #{done['id']} succeeded.")
    assert out.index("step 2 of 3") < out.index("build done") < out.index("step 3 of 3")
    with live.app.app_context():
        assert db.session.get(Operation, done["id"]).params["commit_sha"] == sha


def test_deploy_wait_exits_non_zero_when_the_deploy_fails(live):
    token, env_id, previous = _seed(live)
    result, done = _deploy(live, token, env_id, previous, fail_at="Build")
    assert result.exit_code == 1, result.output
    assert "syntax error in app/Http/Kernel.php" in result.output
    assert f"Deploy #{done['id']} failed: Build failed." in result.output
    assert "step 3" not in result.output


def test_login_stores_the_token_0600_and_status_uses_it(live, tmp_path):
    token, env_id, _previous = _seed(live)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "KEYSTONE_URL": None,
           "KEYSTONE_TOKEN": None}
    bad = CliRunner().invoke(main, ["login", live.url, "--token-stdin"], input="kst_nope\n",
                             env=env)
    assert bad.exit_code == 2 and "token" in bad.output.lower()
    assert not (tmp_path / "config" / "keystone" / "credentials.json").exists()
    ok = CliRunner().invoke(main, ["login", live.url + "/", "--token-stdin"],
                            input=token + "\n", env=env)
    assert ok.exit_code == 0, ok.output
    assert token not in ok.output and "b@example.com" in ok.output
    path = tmp_path / "config" / "keystone" / "credentials.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert json.loads(path.read_text()) == {"url": live.url, "token": token}
    status = CliRunner().invoke(main, ["status"], env=env)
    assert status.exit_code == 0, status.output
    lines = status.output.splitlines()
    assert lines[0].split() == ["ENVIRONMENT", "STATUS", "COMMIT", "LAST", "DEPLOY", "URL"]
    assert lines[1].split()[:2] == ["shop/production", "new"]
    assert "succeeded" in lines[1]


def test_cli_errors_are_messages_with_exit_code_2(live, tmp_path):
    token, _env_id, _previous = _seed(live)
    env = {"KEYSTONE_URL": live.url, "KEYSTONE_TOKEN": token}
    for args, message in ((["deploy", "shop"], "APP/ENV"),
                          (["deploy", "shop/staging"], "No environment"),
                          (["deploy", "shop/production", "--commit", "main"], "full commit sha")):
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    result = CliRunner().invoke(main, ["status"], env={"XDG_CONFIG_HOME": str(tmp_path),
                                                       "KEYSTONE_URL": None,
                                                       "KEYSTONE_TOKEN": None})
    assert result.exit_code == 2 and "keystone login" in result.output


def test_builds_and_rollback(live):
    from app.models import BuildArtifact
    from app.models.enums import ArtifactStatus
    token, env_id, _previous = _seed(live)
    with live.app.app_context():
        from app.models import Environment
        env = db.session.get(Environment, env_id)
        ids = []
        for sha in ("1" * 40, "2" * 40):
            artifact = BuildArtifact(environment=env, commit_sha=sha, image_tag=f"shop:{sha[:4]}",
                                     status=ArtifactStatus.READY, image_digest="sha256:" + sha * 1)
            db.session.add(artifact)
            db.session.flush()
            ids.append(artifact.id)
        env.current_artifact_id = ids[-1]
        db.session.commit()
    env = {"KEYSTONE_URL": live.url, "KEYSTONE_TOKEN": token}
    listed = CliRunner().invoke(main, ["builds", "shop/production"], env=env)
    assert listed.exit_code == 0
    assert listed.output.splitlines()[0].startswith(f"#{ids[1]}") and "(live)" in listed.output
    back = CliRunner().invoke(main, ["rollback", "shop/production"], env=env)
    assert back.exit_code == 0, back.output
    assert f"Rollback #" in back.output and f"to build #{ids[0]}" in back.output
    chosen = CliRunner().invoke(main, ["rollback", "shop/production", "--to", str(ids[1])],
                                env=env)
    assert chosen.exit_code == 0 and f"to build #{ids[1]} queued" in chosen.output
    with live.app.app_context():
        ops = db.session.execute(sa.select(Operation).where(
            Operation.target_id == env_id, Operation.created_by_id.is_not(None))
            .order_by(Operation.id)).scalars().all()
        assert [op.params.get("artifact_id") for op in ops] == ids
        assert all(op.params.get("rollback") for op in ops)


def test_env_set_list_pull_and_unset_round_trip_hostile_values(live):
    """`keystone env`: set (plain and --secret), list masks secrets, pull writes a .env that
    python-dotenv reads back byte for byte (secrets as *** unless --reveal, which is
    recorded), unset removes only the environment's own variable."""
    import io

    from dotenv import dotenv_values

    from app.models import AuditEvent
    token, env_id, _previous = _seed(live)
    env = {"KEYSTONE_URL": live.url, "KEYSTONE_TOKEN": token}
    hostile = "it's \"quoted\" $HOME \\n back\\slash ünïcode\nsecond line"
    run = CliRunner().invoke
    ok = run(main, ["env", "shop/production", "set", f"GREETING={hostile}", "EMPTY="], env=env)
    assert ok.exit_code == 0, ok.output
    ok = run(main, ["env", "shop/production", "set", "--secret", "STRIPE_KEY=sk_live_s3cr3t"],
             env=env)
    assert ok.exit_code == 0, ok.output
    listed = run(main, ["env", "shop/production"], env=env)
    assert listed.exit_code == 0 and "STRIPE_KEY=***  (user)" in listed.output
    assert "sk_live_s3cr3t" not in listed.output
    pulled = run(main, ["env", "shop/production", "pull"], env=env)
    values = dotenv_values(stream=io.StringIO(pulled.output), interpolate=False)
    assert values["GREETING"] == hostile and values["EMPTY"] == ""
    assert values["STRIPE_KEY"] == "***" and "sk_live_s3cr3t" not in pulled.output
    revealed = run(main, ["env", "shop/production", "pull", "--reveal"], env=env)
    values = dotenv_values(stream=io.StringIO(revealed.output), interpolate=False)
    assert values["STRIPE_KEY"] == "sk_live_s3cr3t" and values["GREETING"] == hostile
    gone = run(main, ["env", "shop/production", "unset", "GREETING", "NEVER_SET"], env=env)
    assert gone.exit_code == 0 and "GREETING removed" in gone.output
    assert "NEVER_SET was not set" in gone.output
    bad = run(main, ["env", "shop/production", "set", "1BAD=x"], env=env)
    assert bad.exit_code == 2 and "1BAD" in bad.output
    with live.app.app_context():
        actions = [a for (a,) in db.session.execute(sa.select(AuditEvent.action)).all()]
        assert actions.count("variable.set") == 3 and "variable.reveal" in actions
        assert "variable.delete" in actions
        details = " ".join(str(d) for (d,) in db.session.execute(sa.select(AuditEvent.detail)))
        assert "sk_live_s3cr3t" not in details and "quoted" not in details


def test_logs_prints_each_replica_s_lines_and_stops_when_the_stream_goes_quiet(live):
    """`keystone logs APP/ENV --service web`: GET /api/v1/services/{id}/logs opens a live
    logs session (what the service page's pane does); a stand-in tailer writes lines into
    its stream as the logs worker would; the CLI prints them tagged with their replica, and
    without -f stops at the first keepalive after them."""
    from app import logtail
    from app.operations import logstream
    token, _env_id, _previous = _seed(live)
    env = {"KEYSTONE_URL": live.url, "KEYSTONE_TOKEN": token}
    wrote = {}

    def stand_in_tailer():
        with live.app.app_context():
            client = logstream.redis_client()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                sids = client.smembers(logtail.sessions_key())
                if sids:
                    sid = next(iter(sids))
                    sid = sid.decode() if isinstance(sid, bytes) else sid
                    wrote["session"] = client.hgetall(logtail.session_key(sid))
                    key = logtail.stream_key(sid)
                    client.xadd(key, {"r": "ks-web-1-blue-op7", "t": "GET / 200"})
                    client.xadd(key, {"r": "ks-web-2-blue-op7", "t": "PHP Warning: x",
                                      "e": "1"})
                    return
                time.sleep(0.05)

    thread = threading.Thread(target=stand_in_tailer)
    thread.start()
    result = CliRunner().invoke(main, ["logs", "shop/production", "--service", "web",
                                       "--since", "5m"], env=env)
    thread.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert "[ks-web-1-blue-op7] GET / 200" in result.output
    assert "[ks-web-2-blue-op7] PHP Warning: x" in result.output
    assert wrote["session"][b"since"] == b"5m" and wrote["session"][b"tail"] == b"200"
    missing = CliRunner().invoke(main, ["logs", "shop/production", "--service", "nope"], env=env)
    assert missing.exit_code == 2 and "No service 'nope'" in missing.output
