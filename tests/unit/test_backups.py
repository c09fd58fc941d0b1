"""Postgres backups (issue 17.3), the pure parts: schedule, retention, checksums, keys,
the directory store, and the pg_dump / pg_restore command lines."""
from __future__ import annotations

import datetime as dt
import hashlib
import io
from types import SimpleNamespace

import pytest

from app.backups import (HashingReader, Sha256Sink, expired, human_size, is_due, is_late,
                         next_due, object_key)
from app.backups.targets import DirectoryStore, TargetError, _PushToPull, validate_directory
from app.drivers.postgres.driver import dump_command, restore_command

T0 = dt.datetime(2026, 12, 1, 12, 0)


@pytest.mark.parametrize("freq,delta", [("hourly", dt.timedelta(hours=1)),
                                        ("daily", dt.timedelta(days=1)),
                                        ("weekly", dt.timedelta(weeks=1))])
def test_next_due_is_one_interval_after_the_last_scheduled_run(freq, delta):
    assert next_due(freq, T0, T0 - dt.timedelta(days=30)) == T0 + delta
    assert not is_due(freq, T0, T0, T0 + delta - dt.timedelta(seconds=1))
    assert is_due(freq, T0, T0, T0 + delta)


def test_a_new_policy_is_due_at_once_and_off_is_never_due():
    assert next_due("daily", None, T0) == T0
    assert is_due("daily", None, T0, T0)
    assert next_due("off", T0, T0) is None
    assert not is_due("off", None, T0, T0 + dt.timedelta(days=365))


def test_late_means_a_whole_extra_interval_without_a_run():
    assert not is_late("hourly", T0, T0, T0 + dt.timedelta(hours=1, minutes=59))
    assert is_late("hourly", T0, T0, T0 + dt.timedelta(hours=2, minutes=1))
    assert not is_late("off", T0, T0, T0 + dt.timedelta(days=30))


def _b(i, status="succeeded", trigger="scheduled", hours=0):
    return SimpleNamespace(id=i, status=status, trigger=trigger,
                           created_at=T0 + dt.timedelta(hours=hours))


def test_retention_keeps_the_n_newest_scheduled_successful_backups():
    backups = [_b(1, hours=1), _b(2, hours=2), _b(3, hours=3), _b(4, hours=4),
               _b(5, trigger="manual", hours=0), _b(6, trigger="before_update", hours=-5),
               _b(7, status="failed", hours=5), _b(8, status="deleted", hours=-9)]
    assert [b.id for b in expired(backups, 2)] == [2, 1]
    assert expired(backups, 10) == []
    # keep below 1 still keeps one: retention never empties a slice
    assert [b.id for b in expired(backups, 0)] == [3, 2, 1]


def test_retention_breaks_ties_on_id():
    same = [_b(1), _b(2), _b(3)]
    assert [b.id for b in expired(same, 1)] == [2, 1]


def test_checksum_and_size_are_recorded_while_streaming():
    out = io.BytesIO()
    sink = Sha256Sink(out.write)
    chunks = [b"PGDMP", b"\x00" * 1000, b"tail"]
    for c in chunks:
        sink(c)
    data = b"".join(chunks)
    assert sink.size == len(data) and out.getvalue() == data
    assert sink.hexdigest == hashlib.sha256(data).hexdigest()
    reader = HashingReader(io.BytesIO(data))
    assert reader.read(3) + reader.read(-1) == data
    assert reader.hexdigest == hashlib.sha256(data).hexdigest() and reader.size == len(data)


def test_push_to_pull_hands_chunks_and_errors_to_the_reader():
    def stream(write):
        for part in (b"abc", b"defg", b"h"):
            write(part)
        return 8
    r = _PushToPull(stream)
    assert r.read(2) == b"ab" and r.read(-1) == b"cdefgh" and r.read(5) == b""
    r.join()
    assert r.size == 8

    def broken(write):
        write(b"x")
        raise OSError("connection lost")
    r = _PushToPull(broken)
    with pytest.raises(OSError, match="connection lost"):
        r.read(-1)


def test_object_key_is_sortable_and_safe():
    key = object_key("My PG; rm -rf", "shop_production", T0, 42)
    assert key == "my-pg-rm--rf/shop_production/20261201T120000Z-42.dump"


def test_human_size():
    assert human_size(None) == "—" and human_size(512) == "512 B"
    assert human_size(1536) == "1.5 KB" and human_size(5 * 1024 ** 3) == "5.0 GB"


@pytest.mark.parametrize("bad", ["relative/dir", "/a/../etc", "/tmp/x y", "/tmp/$(id)", ""])
def test_directory_target_paths_are_allowlisted(bad):
    with pytest.raises(TargetError):
        validate_directory(bad)


def test_directory_store_writes_atomically_and_stays_inside(tmp_path):
    store = DirectoryStore(str(tmp_path))
    size = store.upload("svc/db/1.dump", lambda write: (write(b"PGDMP"), write(b"x"), 6)[-1])
    assert size == 6 and (tmp_path / "svc/db/1.dump").read_bytes() == b"PGDMPx"
    assert oct((tmp_path / "svc/db/1.dump").stat().st_mode & 0o777) == "0o600"
    assert store.exists("svc/db/1.dump") and store.open("svc/db/1.dump").read() == b"PGDMPx"

    def failing(write):
        write(b"half")
        raise OSError("lost")
    with pytest.raises(OSError):
        store.upload("svc/db/2.dump", failing)
    assert sorted(p.name for p in (tmp_path / "svc/db").iterdir()) == ["1.dump"]  # no partial
    with pytest.raises(TargetError):
        store.local_path("../outside.dump")
    store.delete("svc/db/1.dump")
    store.delete("svc/db/1.dump")   # already gone: not an error
    assert not store.exists("svc/db/1.dump")


def test_dump_and_restore_commands_pass_values_as_arguments():
    dump = dump_command("keystone-pg-1", "shop", "/home/keystone/operations/ab/backup-1.dump")
    text = dump.render() if hasattr(dump, "render") else str(dump)
    assert "pg_dump -U postgres -Fc" in text
    assert "keystone-pg-1" in text and "shop" in text
    restore = restore_command("keystone-pg-1", "shop", "shop", "/tmp/x.dump")
    rtext = restore.render() if hasattr(restore, "render") else str(restore)
    assert "--single-transaction" in rtext and "--clean" in rtext
    with pytest.raises(ValueError):
        dump_command("c", "shop; drop", "/tmp/x")
    with pytest.raises(ValueError):
        restore_command("c", "shop", "bad role", "/tmp/x")


def test_push_side_stops_when_the_reader_gives_up():
    """A failed S3 upload must not leave the SFTP side blocked on a full queue."""
    pushed = []

    def endless(write):
        while True:
            write(b"x" * 1024)
            pushed.append(1)

    r = _PushToPull(endless)
    assert r.read(10) == b"x" * 10
    r.abandon()
    r.join(timeout=5)
    assert not r._thread.is_alive()


def test_s3_upload_failure_abandons_the_stream(monkeypatch):
    from app.backups.targets import S3Store
    store = S3Store(endpoint_url="http://127.0.0.1:9", region="us-east-1", bucket="bk",
                    prefix="p", access_key_id="a", secret_access_key="b")
    done = []

    def stream(write):
        try:
            while True:
                write(b"y" * 4096)
        finally:
            done.append(True)

    def failing_upload(fileobj, bucket, key, Config=None):
        fileobj.read(100)
        raise ConnectionError("S3 is down")

    monkeypatch.setattr(store.client, "upload_fileobj", failing_upload)
    with pytest.raises(ConnectionError):
        store.upload("k", stream)
    assert done == [True]
