"""Operation pages: list with filters, the operation page, cancel, SSE replay and resume."""
import re
import threading
import time

from app.extensions import db
from app.jobs import run_operation
from app.models import Operation
from app.models.enums import OperationKind, OperationStatus as S
from app.operations import logstream, start_operation
from app.operations.lifecycle import claim
from app.shell import Secret, cmd
from tests.factories import SECRET_SENTINELS, build_org
from tests.opsupport import clean_streams, fake_servers, handlers, slow_servers  # noqa: F401

K = OperationKind.CONFIG_CHANGE


def _login(auth):
    auth.login(email="b@example.com")


def _start(g, **kw):
    return start_operation(K, target_type="environment", target_id=g.environment.id,
                           organisation_id=g.org.id, lock_keys=[f"environment:{g.environment.id}"],
                           summary="Change config", **kw)


def _events(text: str) -> list[dict]:
    out = []
    for block in text.split("\n\n"):
        ev = {}
        for line in block.split("\n"):
            if line.startswith(":") or not line:
                continue
            field, _, value = line.partition(": ")
            ev.setdefault(field, []).append(value)
        if "event" in ev:
            out.append({"id": (ev.get("id") or [None])[0], "event": ev["event"][0],
                        "data": "\n".join(ev.get("data", []))})
    return out


def _run_three_steps(g, handlers, secret=None):
    @handlers(K)
    def handler(ctx):
        for n in range(3):
            with ctx.step(f"step {n}", server=g.server) as step:
                step.run(cmd("echo", Secret(secret) if secret else "plain", str(n)))

    with fake_servers() as fake:
        fake.script("echo", output="first\nsecond\n" + (secret or "") + "\n")
        op = _start(g, enqueue=False)
        assert run_operation(op.id) == "succeeded"
    db.session.expire_all()
    return db.session.get(Operation, op.id)


def test_list_and_filters(app, client, auth, clean_streams):
    g = build_org()
    _login(auth)
    a = _start(g, enqueue=False)
    claim(a, "h/1")
    b = _start(g, enqueue=False)  # queued behind a
    page = client.get("/operations").get_data(as_text=True)
    assert f"#{a.id}" in page and f"#{b.id}" in page
    page = client.get("/operations?status=queued").get_data(as_text=True)
    assert f"#{b.id}<" in page and f"#{a.id}<" not in page
    page = client.get(f"/operations?target=environment:{g.environment.id}&kind=config_change")
    assert page.status_code == 200 and f"#{a.id}<" in page.get_data(as_text=True)
    page = client.get("/operations?target=server:999").get_data(as_text=True)
    assert "No operation matches" in page


def test_queued_page_says_behind_whom_and_running_page_streams(app, client, auth, clean_streams):
    g = build_org()
    _login(auth)
    a = _start(g, enqueue=False)
    claim(a, "h/1")
    b = _start(g, enqueue=False)
    page = client.get(f"/operations/{b.id}").get_data(as_text=True)
    assert "Queued" in page and f"operation #{a.id}" in page and "environment" in page
    page = client.get(f"/operations/{a.id}").get_data(as_text=True)
    assert 'sse-connect="/operations/%d/events"' % a.id in page
    assert 'sse-swap="line"' in page and "data-log-pause" in page
    assert "Cancel" in page


def test_cancel_button(app, client, auth, clean_streams):
    g = build_org()
    _login(auth)
    a = _start(g, enqueue=False)
    claim(a, "h/1")
    b = _start(g, enqueue=False)
    token = auth.csrf()
    resp = client.post(f"/operations/{b.id}/cancel", headers={"X-CSRFToken": token})
    assert resp.status_code == 302
    db.session.expire_all()
    assert db.session.get(Operation, b.id).status is S.CANCELLED
    resp = client.post(f"/operations/{a.id}/cancel", headers={"X-CSRFToken": token, "HX-Request": "true"})
    assert resp.status_code == 200 and "Cancelling" in resp.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Operation, a.id).cancel_requested_at is not None
    # Without a CSRF token: refused.
    assert client.post(f"/operations/{a.id}/cancel").status_code == 400


def test_finished_page_and_replay_from_database(app, client, auth, clean_streams, handlers):
    g = build_org()
    _login(auth)
    op = _run_three_steps(g, handlers, secret=SECRET_SENTINELS["step_secret"])
    page = client.get(f"/operations/{op.id}").get_data(as_text=True)
    assert "succeeded" in page and "step 2" in page and "sse-connect" not in page
    assert "first" in page and SECRET_SENTINELS["step_secret"] not in page
    clean_streams.delete(logstream.stream_key(op.id))  # expired stream: replay from the rows
    resp = client.get(f"/operations/{op.id}/events")
    assert resp.mimetype == "text/event-stream"
    events = _events(resp.get_data(as_text=True))
    lines = [e for e in events if e["event"] == "line"]
    assert lines[0]["id"] == "db-1" and events[-1]["event"] == "end" and events[-1]["data"] == "succeeded"
    assert SECRET_SENTINELS["step_secret"] not in resp.get_data(as_text=True)
    resumed = _events(client.get(f"/operations/{op.id}/events",
                                 headers={"Last-Event-ID": "db-5"}).get_data(as_text=True))
    assert [e["id"] for e in resumed if e["event"] == "line"] == [e["id"] for e in lines[5:]]


def test_stream_replay_and_resume_from_last_event_id(app, client, auth, clean_streams, handlers):
    g = build_org()
    _login(auth)
    op = _run_three_steps(g, handlers)
    events = _events(client.get(f"/operations/{op.id}/events").get_data(as_text=True))
    assert events[-1]["event"] == "end"
    ids = [e["id"] for e in events]
    assert all(re.match(r"^\d+-\d+$", i) for i in ids)
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    lines = [e for e in events if e["event"] == "line"]
    assert any("first" in e["data"] for e in lines)
    assert {e["event"] for e in events} >= {"line", "step", "status", "end"}
    cut = 4
    resumed = _events(client.get(f"/operations/{op.id}/events",
                                 headers={"Last-Event-ID": events[cut]["id"]}).get_data(as_text=True))
    assert [e["id"] for e in resumed] == ids[cut + 1:]


def test_sse_streams_lines_while_the_operation_runs(app, client, auth, clean_streams, handlers):
    g = build_org()
    _login(auth)

    server_id = g.server.id  # the handler runs in another thread: another session

    @handlers(K)
    def handler(ctx):
        for n in range(3):
            with ctx.step(f"step {n}", server=server_id) as step:
                step.run(cmd("slow", str(n)))

    op = _start(g, enqueue=False)
    op_id = op.id
    done = threading.Event()

    def work():
        with app.app_context():
            with slow_servers(lines=5, interval=0.1, match="slow"):
                run_operation(op_id)
            db.session.remove()
        done.set()

    resp = client.get(f"/operations/{op_id}/events", buffered=False)
    threading.Thread(target=work).start()
    arrivals = []
    buf = ""
    for chunk in resp.response:
        text = chunk.decode() if isinstance(chunk, bytes) else chunk
        buf += text
        if "event: line" in text:
            arrivals.append((time.monotonic(), done.is_set()))
        if "event: end" in buf:
            break
    resp.close()
    assert done.wait(10)
    events = _events(buf)
    assert events[-1]["event"] == "end", buf[-500:]
    assert events[-1]["data"] == "succeeded", db.session.get(Operation, op_id).error
    assert sum(1 for e in events if e["event"] == "line" and "line " in e["data"]) == 15
    # Lines arrived while it was still running, spread over its duration, not at the end.
    assert sum(1 for _, finished in arrivals if not finished) >= 10
    assert arrivals[-1][0] - arrivals[0][0] > 0.8


def test_other_organisation_gets_404(app, client, auth, clean_streams):
    g = build_org()
    auth.signup(email="a@example.com", organisation="Org A")
    op = _start(g, enqueue=False)
    for url in (f"/operations/{op.id}", f"/operations/{op.id}/events", f"/operations/{op.id}/panel"):
        assert client.get(url).status_code == 404
    assert client.post(f"/operations/{op.id}/cancel", headers={"X-CSRFToken": auth.csrf()}).status_code == 404
    assert f"#{op.id}<" not in client.get("/operations").get_data(as_text=True)


def test_a_finished_deploy_shows_its_time_per_phase(app, client, auth, clean_streams, handlers):
    """Issue 20.4: the per-phase seconds a deploy records on its result are on its page."""
    from app.deploys.timing import summarize

    g = build_org()
    _login(auth)

    @handlers(K)
    def handler(ctx):
        phases, timing = summarize({"resolve": 0.4, "build": 20.0, "start": 1.25,
                                    "health": 2.0, "gateway": 0.75}, 25.0)
        ctx.result.update({"phases": phases, "timing": timing})

    op = _start(g, enqueue=False)
    assert run_operation(op.id) == "succeeded"
    page = client.get(f"/operations/{op.id}").get_data(as_text=True)
    assert "Time per phase" in page
    assert "resolve 0.4 s, build 20.0 s, start 1.2 s, health 2.0 s, gateway 0.8 s, other 0.6 s" \
        in page
    assert "health checks 22.0 s; everything else 3.0 s" in page
