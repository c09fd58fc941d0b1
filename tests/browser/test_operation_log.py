"""The operation page in a real browser: the live log follows SSE lines, pauses, and the
panel refreshes to the final status when the operation ends."""
import datetime as dt

import pytest
import sqlalchemy as sa

from tests.browser.test_signup import signup

pytestmark = pytest.mark.browser


def _app(env):
    from app import create_app
    return create_app({"SQLALCHEMY_DATABASE_URI": env["DATABASE_URL"], "REDIS_URL": env["REDIS_URL"],
                       "ENCRYPTION_KEYS": [env["KEYSTONE_ENCRYPTION_KEYS"]],
                       "SECRET_KEY": env["KEYSTONE_SECRET_KEY"], "RQ_QUEUE": env["KEYSTONE_QUEUE"],
                       "REDIS_PREFIX": env["KEYSTONE_REDIS_PREFIX"]},
                      instance_path=env["KEYSTONE_INSTANCE_PATH"])


def test_live_log_follows_pauses_and_ends(page, live_server, screenshot):
    from app.extensions import db
    from app.models import Operation, OperationStep, User
    from app.models.enums import OperationKind, OperationStatus, StepStatus
    from app.operations import lifecycle, logstream

    base = live_server["url"]
    email = signup(page, base)
    page.wait_for_url(lambda url: "/signup" not in url)
    app = _app(live_server["env"])
    with app.app_context():
        org_id = db.session.execute(sa.select(User).where(User.email == email)).scalar_one().organisation.id
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        op = Operation(organisation_id=org_id, kind=OperationKind.CONFIG_CHANGE, target_type="server",
                       target_id=1, status=OperationStatus.RUNNING, started_at=now, heartbeat_at=now,
                       summary="Browser log test")
        db.session.add(op)
        db.session.flush()
        step = OperationStep(operation_id=op.id, name="Print lines", order=1,
                             status=StepStatus.RUNNING, started_at=now)
        db.session.add(step)
        db.session.commit()
        op_id, step_id = op.id, step.id
        client = logstream.redis_client()
        client.delete(logstream.stream_key(op_id))
        stream = logstream.LogStream(client, [op_id])

        page.goto(f"{base}/operations/{op_id}")
        assert page.get_by_role("button", name="Cancel").is_visible()
        for n in range(40):
            stream.line(step_id, f"output line {n} <b>not bold</b>")
        page.locator("#op-log .ln").nth(40 - 1).wait_for(state="attached")  # no eval: the CSP forbids it
        assert "<b>not bold</b>" in page.locator("#op-log .ln").nth(3).inner_text()  # escaped
        at_bottom = page.evaluate(
            "(() => { const l = document.getElementById('op-log');"
            " return l.scrollHeight - l.scrollTop - l.clientHeight < 10; })()")
        assert at_bottom

        page.get_by_role("button", name="Pause").click()
        for n in range(40, 45):
            stream.line(step_id, f"output line {n}")
        page.locator("#op-log .ln").nth(45 - 1).wait_for(state="attached")  # no eval: the CSP forbids it
        assert page.get_by_text("paused, 5 new lines").is_visible()
        page.get_by_role("button", name="Follow").click()
        screenshot(page, "operation-live-log")

        db.session.execute(sa.update(OperationStep).where(OperationStep.id == step_id)
                           .values(status=StepStatus.SUCCEEDED.value, finished_at=now))
        db.session.commit()
        lifecycle.finish(op_id, OperationStatus.SUCCEEDED)
        page.wait_for_selector('[data-op-status="succeeded"]')
        assert page.get_by_role("button", name="Cancel").count() == 0
        db.session.remove()
