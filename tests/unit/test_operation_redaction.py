"""Redaction at the one place output is recorded: no secret in logs, scripts, errors,
results, the Redis stream or RQ job data; the step's encrypted column keeps it."""
import sqlalchemy as sa

from app.extensions import db
from app.jobs import run_operation
from app.models import Operation, OperationStep
from app.models.enums import OperationKind
from app.operations import start_operation
from app.shell import Secret, cmd
from tests.factories import build_org
from tests.opsupport import clean_streams, fake_servers, handlers  # noqa: F401

K = OperationKind.CREDENTIAL_ROTATION
SENTINEL = "SENTINEL-redaction-9f9f 'quoted' $x"
MULTILINE = "-----BEGIN KEY-----\nSENTINELLINEONE1234567890\nSENTINELLINETWO0987654321\n-----END KEY-----"


def _all_text_in_db(db_session) -> str:
    """Every text value in the database except encrypted columns."""
    from app.crypto import encrypted_columns
    encrypted = {(t.name, c.name) for t, c in encrypted_columns(db.metadata)}
    out = []
    for table in db.metadata.sorted_tables:
        cols = [c for c in table.columns if (table.name, c.name) not in encrypted]
        for row in db_session.execute(sa.select(*cols)).all():
            out.extend(str(v) for v in row if v is not None)
    return "\n".join(out)


def test_secrets_are_masked_everywhere_they_are_recorded(app, clean_streams, handlers):
    g = build_org()

    @handlers(K)
    def handler(ctx):
        with ctx.step("use secret", server=g.server, secrets={"key": MULTILINE}) as step:
            step.run(cmd("login", "--password", Secret(SENTINEL, "password")))
            step.log(f"we printed {SENTINEL} ourselves")
            step.log(MULTILINE)
            ctx.result["leak"] = f"token={SENTINEL}"
        with ctx.step("fail with it", server=g.server) as step:
            raise RuntimeError(f"boom {SENTINEL}")

    with fake_servers() as fake:
        fake.script("login", output=f"echo {SENTINEL}\nSENTINELLINEONE1234567890\n")
        op = start_operation(K, target_type="environment", target_id=g.environment.id,
                             organisation_id=g.org.id)  # enqueued for real: RQ job data checked
        assert run_operation(op.id) == "failed"
    db.session.expire_all()
    op = db.session.get(Operation, op.id)
    step = op.steps[0]
    assert step.script == "login --password ***"
    assert "***" in step.logs and "echo ***" in step.logs
    assert SENTINEL in step.secrets.values() and step.secrets["key"] == MULTILINE
    assert "boom ***" in op.error
    assert op.result == {"leak": "token=***"}
    text = _all_text_in_db(db.session)
    for needle in (SENTINEL, "SENTINELLINEONE1234567890", "SENTINELLINETWO0987654321"):
        assert needle not in text
    # Redis: every key, streams and RQ job hashes alike.
    client = clean_streams
    for key in client.scan_iter("*"):
        kind = client.type(key)
        if kind == b"stream":
            blob = repr(client.xrange(key))
        elif kind == b"hash":
            blob = repr(client.hgetall(key))
        elif kind == b"string":
            blob = repr(client.get(key))
        elif kind == b"list":
            blob = repr(client.lrange(key, 0, -1))
        elif kind == b"zset":
            blob = repr(client.zrange(key, 0, -1))
        elif kind == b"set":
            blob = repr(client.smembers(key))
        else:
            continue
        assert SENTINEL.encode() not in blob.encode() and SENTINEL not in blob, key
        assert "SENTINELLINEONE" not in blob, key
    # The encrypted column really holds it (what the step needs), and stores no clear text.
    raw = db.session.execute(sa.text("select secrets from operation_steps where id = :i"),
                             {"i": step.id}).scalar()
    assert SENTINEL not in raw


def test_redis_job_carries_only_the_id(app, clean_streams, handlers):
    from rq.job import Job
    g = build_org()
    op = start_operation(K, target_type="environment", target_id=g.environment.id,
                         organisation_id=g.org.id, params={"note": "x"})
    job = Job.fetch(op.rq_job_id, connection=clean_streams)
    assert job.func_name == "app.jobs.run_operation"
    assert job.args == (op.id,) and job.kwargs == {}
    assert job.timeout == op.timeout_seconds + 120


def test_str_of_a_secret_in_a_log_line_is_masked(app, clean_streams, handlers):
    g = build_org()

    @handlers(K)
    def handler(ctx):
        s = ctx.secret("SENTINEL-ctx-secret-1")
        with ctx.step("s", server=g.server) as step:
            step.log(f"value {s} and raw SENTINEL-ctx-secret-1")

    with fake_servers():
        op = start_operation(K, target_type="environment", target_id=g.environment.id,
                             organisation_id=g.org.id, enqueue=False)
        assert run_operation(op.id) == "succeeded"
    logs = db.session.execute(sa.select(OperationStep.logs)).scalars().all()
    assert any("value *** and raw ***" in text for text in logs)


def test_environment_secrets_are_masked_in_every_environment_operation(app, clean_streams,
                                                                        handlers):
    """Secret variables, managed credentials and APP_KEY are registered for redaction as
    soon as an operation on the environment loads it, and by the deploy itself."""
    from app.deploys.values import environment_secrets
    from app.models import EnvironmentVariable
    from app.models.enums import VariableSource
    g = build_org()
    values = {"USER_TOKEN": ("SENTINEL-user-secret-5151", VariableSource.USER, True),
              "DB_PASSWORD": ("SENTINEL-managed-db-6262", VariableSource.MANAGED_ATTACHMENT, False),
              "CACHE_REDIS_PASSWORD": ("SENTINEL-redis-7373", VariableSource.MANAGED_ATTACHMENT,
                                       False),
              "APP_KEY": ("base64:SENTINEL-app-key-8484", VariableSource.SYSTEM, False),
              "APP_NAME": ("visible-app-name", VariableSource.USER, False)}
    for key, (value, source, secret) in values.items():
        db.session.add(EnvironmentVariable(environment_id=g.environment.id, key=key, value=value,
                                           source=source, is_secret=secret))
    db.session.commit()
    secret_values = [v for v, _s, _f in values.values() if "SENTINEL" in v]
    registered = environment_secrets(g.environment)
    assert set(secret_values) <= set(registered) and "visible-app-name" not in registered

    @handlers(K)
    def handler(ctx):
        env = ctx.target
        with ctx.step("print the environment", server=g.server) as step:
            step.run(cmd("printenv"))
            for v in env.variables:
                step.log(f"{v.key}={v.value}")

    with fake_servers() as fake:
        fake.script("printenv", output="".join(f"{k}={v[0]}\n" for k, v in values.items()))
        op = start_operation(K, target_type="environment", target_id=g.environment.id,
                             organisation_id=g.org.id, enqueue=False)
        assert run_operation(op.id) == "succeeded"
    logs = "\n".join(db.session.execute(sa.select(OperationStep.logs)).scalars().all())
    assert "APP_NAME=visible-app-name" in logs and "DB_PASSWORD=***" in logs
    for value in secret_values:
        assert value not in logs
    for key in clean_streams.scan_iter("*"):
        if clean_streams.type(key) == b"stream":
            blob = repr(clean_streams.xrange(key))
            assert not any(value in blob for value in secret_values), key
