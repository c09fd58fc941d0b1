"""Two Keystones on one Redis never read each other's keys, and a new operation never
replays a stream left under its id (operation ids restart at 1 in every database)."""
import pytest

from app import redis_keys
from app.config import Config, SettingError
from app.extensions import db
from app.models.enums import OperationKind
from app.operations import logstream, start_operation
from tests.conftest import make_app, sign_in
from tests.factories import build_org
from tests.opsupport import clean_streams  # noqa: F401
from tests.web.test_operations_pages import _events, _login


def _start(g):
    return start_operation(OperationKind.CONFIG_CHANGE, target_type="environment",
                           target_id=g.environment.id, organisation_id=g.org.id,
                           summary="Change config", enqueue=False)


def test_keys_carry_the_installation_prefix(app):
    assert app.config["REDIS_PREFIX"].startswith("test-")
    assert logstream.stream_key(7) == f"{app.config['REDIS_PREFIX']}:op:7:log"
    other = {"REDIS_PREFIX": "staging"}
    assert redis_keys.key("health", "lock", config=other) == "staging:health:lock"
    assert redis_keys.key("op", 7, "log", config={}) == "keystone:op:7:log"


@pytest.mark.parametrize("bad", ["a b", "x\n", "-lead", "a:b", "é", "x" * 65])
def test_a_bad_prefix_is_refused_at_start_up(monkeypatch, tmp_path, bad):
    monkeypatch.setenv("KEYSTONE_REDIS_PREFIX", bad)
    monkeypatch.setenv("KEYSTONE_SECRET_KEY", "s")
    monkeypatch.setenv("KEYSTONE_ENCRYPTION_KEYS", "k")
    with pytest.raises(SettingError, match="KEYSTONE_REDIS_PREFIX"):
        Config(tmp_path)


def test_a_new_operation_never_replays_a_stream_left_under_its_id(app, client, auth, clean_streams):
    g = build_org()
    first = _start(g)
    # Another installation's database (or this one's, before a reset) finished op N+1 here.
    stale = logstream.LogStream(clean_streams, [first.id + 1])
    stale.line(1, "a line of some other deploy")
    stale.end("succeeded")
    op = _start(g)
    assert op.id == first.id + 1
    assert not clean_streams.exists(logstream.stream_key(op.id))
    live = logstream.LogStream(clean_streams, [op.id])
    live.line(1, "the own line of this deploy")
    live.end("failed")
    _login(auth)
    events = _events(client.get(f"/operations/{op.id}/events").get_data(as_text=True))
    text = " ".join(e["data"] for e in events)
    assert "the own line of this deploy" in text and "some other deploy" not in text
    assert events[-1] == {"id": events[-1]["id"], "event": "end", "data": "failed"}


def test_the_event_stream_reads_its_own_installation_s_stream(tmp_path, migrated_db_template,
                                                              redis_url):
    # Two apps on one Redis; the view returns before the stream is read (outside any app
    # context), so the key must be named in the request.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_app(tmp_path / "a", migrated_db_template, redis_url, REDIS_PREFIX="inst-a")
    b = make_app(tmp_path / "b", migrated_db_template, redis_url, REDIS_PREFIX="inst-b")
    client = logstream.redis_client(redis_url)
    for prefix in ("inst-a", "inst-b"):
        for key in client.scan_iter(f"{prefix}:op:*"):
            client.delete(key)
    op_ids, clients = {}, {}
    for inst, text in ((a, "installation a"), (b, "installation b")):
        with inst.app_context():
            g = build_org()
            op = _start(g)
            op_ids[inst] = op.id
            clients[inst] = inst.test_client()
            sign_in(clients[inst], g.user)
            stream = logstream.LogStream(client, [op.id])
            stream.line(1, text)
            stream.end("succeeded")
            db.session.remove()
    assert op_ids[a] == op_ids[b]  # same id in both databases
    for inst, mine, theirs in ((a, "installation a", "installation b"),
                               (b, "installation b", "installation a")):
        body = clients[inst].get(f"/operations/{op_ids[inst]}/events").get_data(as_text=True)
        assert mine in body and theirs not in body
        with inst.app_context():
            db.engine.dispose()
