"""A finished operation's page and history rows say so without a reload (issue 14, defect 5):
no "pending", no "following live output", no duration left counting or frozen mid-run."""
import datetime as dt

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from tests.browser.test_operation_log import _app
from tests.browser.test_signup import signup

pytestmark = pytest.mark.browser


def test_finished_operation_page_and_rows_update_live(page, browser, live_server, screenshot):
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
        op = Operation(organisation_id=org_id, kind=OperationKind.CONFIG_CHANGE, target_type="server",
                       target_id=1, status=OperationStatus.PENDING, summary="Browser status test")
        db.session.add(op)
        db.session.commit()
        op_id = op.id
        client = logstream.redis_client()
        client.delete(logstream.stream_key(op_id))
        stream = logstream.LogStream(client, [op_id])

        # The dashboard's history row, in a second tab: it says pending now.
        rows = page.context.new_page()
        rows.goto(f"{base}/")
        row = rows.locator(f"#op-row-{op_id}")
        assert "pending" in row.inner_text()

        page.goto(f"{base}/operations/{op_id}")
        assert page.get_by_text("following live output").is_visible()

        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        db.session.execute(sa.update(Operation).where(Operation.id == op_id)
                           .values(status=OperationStatus.RUNNING.value, started_at=now,
                                   heartbeat_at=now))
        step = OperationStep(operation_id=op_id, name="Print lines", order=1,
                             status=StepStatus.RUNNING, started_at=now)
        db.session.add(step)
        db.session.commit()
        step_id = step.id
        stream.status(OperationStatus.RUNNING.value)
        stream.line(step_id, "working")
        # The running duration counts: its text changes while nothing else happens.
        page.wait_for_selector("#op-panel [data-elapsed]")
        first = page.locator("#op-panel dd [data-elapsed]").inner_text()
        # Locator assertions, not wait_for_function: the CSP forbids string eval in the page.
        expect(page.locator("#op-panel dd [data-elapsed]")).not_to_have_text(first, timeout=15000)
        expect(rows.locator(f"#op-row-{op_id}")).to_contain_text("running", timeout=15000)

        db.session.execute(sa.update(OperationStep).where(OperationStep.id == step_id)
                           .values(status=StepStatus.SUCCEEDED.value,
                                   finished_at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)))
        db.session.commit()
        lifecycle.finish(op_id, OperationStatus.SUCCEEDED)

        page.wait_for_selector('#op-panel [data-op-status="succeeded"]')
        expect(page.get_by_text("following live output")).to_have_count(0, timeout=15000)
        text = page.locator("main").inner_text()
        assert "pending" not in text and "following" not in text
        assert "complete log (succeeded)" in text
        assert page.locator("[data-elapsed]").count() == 0  # nothing left counting
        assert page.get_by_role("button", name="Pause").count() == 0
        # The duration shown is the final one and stays put.
        duration = page.locator("#op-panel dl.facts").inner_text()
        page.wait_for_timeout(1500)
        assert page.locator("#op-panel dl.facts").inner_text() == duration
        screenshot(page, "operation-finished")

        expect(rows.locator(f"#op-row-{op_id}")).to_contain_text("succeeded", timeout=15000)
        assert rows.locator(f"#op-row-{op_id}[hx-trigger]").count() == 0  # polling stopped
        assert "pending" not in rows.locator(f"#op-row-{op_id}").inner_text()
        rows.close()
        db.session.remove()
