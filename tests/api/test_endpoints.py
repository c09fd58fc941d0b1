"""The endpoints over the test client: deploys and rollbacks start the same operation the
environment page starts, operations with steps and logs (JSON lines and SSE), paginated
lists, JSON errors, and no secret in any response."""
from __future__ import annotations

import json

import jsonschema_rs
import sqlalchemy as sa

from app.api.serializers import SCHEMAS
from app.extensions import db
from app.models import BuildArtifact, Operation, OperationStep
from app.models.enums import ArtifactStatus, OperationKind, OperationStatus, StepStatus
from app.operations import logstream
from tests.factories import SECRET_SENTINELS, build_org

SHA = "c" * 40


def _deploys(env_id):
    return db.session.execute(sa.select(Operation).where(
        Operation.kind == OperationKind.ENVIRONMENT_DEPLOY, Operation.target_id == env_id,
        Operation.created_by_id.is_not(None)).order_by(Operation.id)).scalars().all()


def test_a_deploy_starts_the_environment_deploy_operation(app, client, org):
    env = org.environment.id
    resp = client.post(f"/api/v1/environments/{env}/deploys", headers=org.bearer,
                       json={"commit": SHA})
    assert resp.status_code == 202
    op = _deploys(env)[-1]
    assert resp.json["id"] == op.id and resp.headers["Location"] == f"/api/v1/operations/{op.id}"
    assert op.params["commit_sha"] == SHA and op.created_by_id == org.user.id
    assert op.lock_keys == [f"environment:{env}"] and op.rq_job_id
    assert resp.json["commit"] == SHA and resp.json["status"] in ("pending", "running")
    # A second one queues behind it, or is refused when asked.
    queued = client.post(f"/api/v1/environments/{env}/deploys", headers=org.bearer)
    assert queued.status_code == 202 and queued.json["status"] == "queued"
    refused = client.post(f"/api/v1/environments/{env}/deploys", headers=org.bearer,
                          json={"if_busy": "refuse"})
    assert refused.status_code == 409 and refused.json["error"]["code"] == "operation_locked"
    assert len(_deploys(env)) == 2
    listed = client.get(f"/api/v1/environments/{env}/deploys?per_page=1", headers=org.bearer)
    assert listed.json["total"] == 3 and listed.json["has_more"]  # with build_org's own
    assert listed.json["items"][0]["id"] == queued.json["id"]


def test_deploy_input_is_checked(app, client, org):
    url = f"/api/v1/environments/{org.environment.id}/deploys"
    for body in ({"commit": "main"}, {"commit": SHA[:12]}, {"commit": SHA.upper()},
                 {"commit": 5}, {"if_busy": "wait"}, {"branch": "main"}, [SHA]):
        resp = client.post(url, headers=org.bearer, json=body)
        assert resp.status_code == 400, body
        assert resp.json["error"]["code"] == "invalid_request", body
    resp = client.post(url, headers={**org.bearer, "Content-Type": "application/json"},
                       data="{not json")
    assert resp.status_code == 400
    assert _deploys(org.environment.id) == []


def test_a_blocked_deploy_says_why(app, client):
    graph = build_org()  # repository access never verified
    resp = client.post(f"/api/v1/environments/{graph.environment.id}/deploys",
                       headers=graph.bearer)
    assert resp.status_code == 422
    assert resp.json["error"]["code"] == "deploy_blocked"
    assert any("Verify access" in p for p in resp.json["error"]["details"]["problems"])


def test_rollback_to_the_previous_build_or_a_chosen_one(app, client, org):
    env = org.environment
    older = org.artifact
    older.status, older.image_digest = ArtifactStatus.READY, "sha256:" + "1" * 64
    current = BuildArtifact(environment=env, commit_sha="d" * 40, image_tag="shop:dddd",
                            status=ArtifactStatus.READY, image_digest="sha256:" + "2" * 64)
    db.session.add(current)
    db.session.flush()
    env.current_artifact_id = current.id
    db.session.commit()
    builds = client.get(f"/api/v1/environments/{env.id}/builds", headers=org.bearer).json
    assert [(b["id"], b["current"]) for b in builds["items"]] == [(current.id, True),
                                                                  (older.id, False)]
    resp = client.post(f"/api/v1/environments/{env.id}/rollback", headers=org.bearer)
    assert resp.status_code == 202 and resp.json["rollback"] is True
    op = db.session.get(Operation, resp.json["id"])
    assert op.params["artifact_id"] == older.id and op.params["rollback"] is True
    chosen = client.post(f"/api/v1/environments/{env.id}/rollback", headers=org.bearer,
                         json={"build_id": current.id})
    assert chosen.status_code == 202 and chosen.json["artifact_id"] == current.id
    other = build_org(email="o@example.com", organisation="O")
    missing = client.post(f"/api/v1/environments/{env.id}/rollback", headers=org.bearer,
                          json={"build_id": other.artifact.id})
    assert missing.status_code == 404


def _operation_with_log(org):
    op = org.operation
    step = org.step
    step.status, step.logs = StepStatus.SUCCEEDED, "==> build\nbuilt\n"
    second = OperationStep(operation=op, name="start web", order=2, status=StepStatus.FAILED,
                           logs="starting\n!! failed\n")
    db.session.add(second)
    op.status = OperationStatus.FAILED
    db.session.commit()
    return op, step, second


def test_an_operation_its_steps_and_its_recorded_log(app, client, org):
    op, first, second = _operation_with_log(org)
    detail = client.get(f"/api/v1/operations/{op.id}", headers=org.bearer).json
    assert detail["status"] == "failed" and detail["terminal"] is True
    assert [(s["order"], s["name"], s["status"]) for s in detail["steps"]] == [
        (1, "build", "succeeded"), (2, "start web", "failed")]
    assert "script" not in json.dumps(detail)
    resp = client.get(f"/api/v1/operations/{op.id}/log", headers=org.bearer)
    assert resp.mimetype == "application/x-ndjson"
    lines = [json.loads(line) for line in resp.get_data(as_text=True).splitlines()]
    validator = jsonschema_rs.validator_for(SCHEMAS["LogLine"])
    for line in lines:
        validator.validate(line)
    assert [(line["step_id"], line["text"]) for line in lines] == [
        (first.id, "==> build"), (first.id, "built"), (second.id, "starting"),
        (second.id, "!! failed")]
    events = client.get(f"/api/v1/operations/{op.id}/events", headers=org.bearer)
    assert events.mimetype == "text/event-stream"
    text = events.get_data(as_text=True)
    assert text.count("event: line") == 4
    assert text.rstrip().endswith('data: {"operation_id": %d, "status": "failed"}' % op.id)


def test_the_live_stream_as_json_lines_and_events(app, client, org):
    op, step = org.operation, org.step
    stream = logstream.LogStream(logstream.redis_client(), [op.id])
    stream.step(step.id, "running")
    stream.line(step.id, "hello")
    stream.line(step.id, "oops", stderr=True)
    stream.step(step.id, "succeeded")
    lines = client.get(f"/api/v1/operations/{op.id}/log", headers=org.bearer)
    parsed = [json.loads(x) for x in lines.get_data(as_text=True).splitlines()]
    assert [(p["text"], p["stderr"], p["step_id"]) for p in parsed] == [
        ("hello", False, step.id), ("oops", True, step.id)]
    stream.end("succeeded")
    resp = client.get(f"/api/v1/operations/{op.id}/events", headers=org.bearer)
    events = []
    for block in resp.get_data(as_text=True).split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines()
                      if line and not line.startswith(":") and ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"]), fields.get("id")))
    assert [e[0] for e in events] == ["step", "line", "line", "step", "end"]
    assert events[0][1] == {"operation_id": op.id, "step_id": step.id, "status": "running",
                            "name": "build", "order": 1, "cleanup": False}
    assert events[2][1]["stderr"] is True and events[4][1]["status"] == "succeeded"
    # Resuming after the second event sends only what came after it.
    resumed = client.get(f"/api/v1/operations/{op.id}/events",
                         headers={**org.bearer, "Last-Event-ID": events[1][2]})
    assert resumed.get_data(as_text=True).count("event: ") == 3


def test_lists_are_paginated(app, client, org):
    for n in range(5):
        db.session.add(Operation(organisation_id=org.org.id, kind=OperationKind.CONFIG_CHANGE,
                                 target_type="environment", target_id=org.environment.id))
    db.session.commit()
    seen = []
    for page in (1, 2, 3):
        body = client.get(f"/api/v1/operations?per_page=2&page={page}", headers=org.bearer).json
        assert body["total"] == 6 and body["page"] == page and body["per_page"] == 2
        assert body["has_more"] == (page < 3)
        seen += [o["id"] for o in body["items"]]
    assert len(set(seen)) == 6 and seen == sorted(seen, reverse=True)
    kinds = client.get("/api/v1/operations?kind=config_change", headers=org.bearer).json
    assert kinds["total"] == 5
    for query in ("page=0", "per_page=101", "page=x", "kind=rm_rf", "pgae=2"):
        resp = client.get(f"/api/v1/operations?{query}", headers=org.bearer)
        assert resp.status_code == 400 and resp.json["error"]["code"] == "invalid_request", query


def test_errors_are_json_with_a_stable_code(app, client, org):
    cases = [("GET", "/api/v1/nothing-here", 404, "not_found"),
             ("GET", "/api/v1/servers/999", 404, "not_found"),
             ("DELETE", "/api/v1/servers", 405, "method_not_allowed"),
             ("POST", f"/api/v1/environments/{2**70}/deploys", 404, "not_found")]
    for method, url, status, code in cases:
        resp = client.open(url, method=method, headers=org.bearer)
        assert resp.status_code == status and resp.is_json, url
        assert resp.json["error"]["code"] == code, url
    # Pages keep their HTML errors.
    assert not client.get("/no-such-page").is_json


def test_no_secret_in_any_read_response(app, client, org):
    _operation_with_log(org)  # finished: its event stream replays from the database
    app.config["API_SSE_MAX_SECONDS"] = 2  # a service's live logs stream until this limit
    urls = [r.rule for r in app.url_map.iter_rules()
            if r.endpoint.startswith("api.") and "GET" in r.methods]
    ids = org.ids()
    bodies = []
    for rule in urls:
        url = rule
        for name, value in ids.items():
            url = url.replace(f"<int:{name}>", str(value))
        resp = client.get(url, headers=org.bearer)
        assert resp.status_code == 200, url
        bodies.append(resp.get_data(as_text=True))
    assert len(bodies) >= 15
    text = "\n".join(bodies)
    for name, value in SECRET_SENTINELS.items():
        assert value not in text, name
    assert org.token not in text


def _queries_for(app, client, url, headers) -> int:
    from sqlalchemy import event
    count = [0]

    def before(*_args, **_kw):
        count[0] += 1

    db.session.remove()  # nothing cached from an earlier request (the test keeps one context)
    event.listen(db.engine, "before_cursor_execute", before)
    try:
        assert client.get(url, headers=headers).status_code == 200
    finally:
        event.remove(db.engine, "before_cursor_execute", before)
    return count[0]


def test_list_queries_do_not_grow_with_the_page(app, client, org):
    """A page of 1 and a page of many cost the same number of queries."""
    from app.models import Application, Environment, Service, ServiceReplica
    from app.models.enums import ServiceCategory
    client.get("/api/v1/me", headers=org.bearer)  # the token's last use is recorded now
    for n in range(6):
        application = Application(organisation=org.org, name=f"app-{n}",
                                  repository_url="git@github.com:acme/x.git")
        env = Environment(application=application, name="production", branch="main")
        web = Service(organisation=org.org, environment=env, name="web",
                      category=ServiceCategory.APPLICATION, type="laravel",
                      driver_name="laravel", server=org.server)
        db.session.add_all([application, env, web,
                            ServiceReplica(service=web, server=org.server,
                                           container_name=f"ks-app-{n}-web-1")])
    db.session.commit()
    bearer = org.bearer
    for path in ("/api/v1/applications", "/api/v1/environments", "/api/v1/services",
                 "/api/v1/servers", "/api/v1/operations"):
        one = _queries_for(app, client, f"{path}?per_page=1", bearer)
        many = _queries_for(app, client, f"{path}?per_page=100", bearer)
        assert one == many, (path, one, many)
