"""Backup targets: where a dump goes and where a restore reads it from.

* :class:`DirectoryStore` -- a directory on the Keystone host. The dump is carried
  from the database server over SFTP (the pooled paramiko connection of
  :mod:`app.remote`) straight into a file here, hashed on the way.
* :class:`S3Store` -- any S3-compatible store, through boto3 (multipart upload of
  the SFTP stream; nothing is buffered whole in memory).

Both offer the same four calls: ``upload(key, reader)``, ``download(key, sink)``,
``delete(key)`` and ``exists(key)``. The credentials come from the target's
encrypted column and are handed to boto3 only; they never reach a log line.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Callable

from app.models.backup import BackupTarget, BackupTargetKind

CHUNK = 1024 * 1024
DIRECTORY_RE = re.compile(r"/(?:[A-Za-z0-9._-]+/?)*")
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
PREFIX_RE = re.compile(r"(?:[A-Za-z0-9._-]+/)*[A-Za-z0-9._-]*")
REGION_RE = re.compile(r"[a-z0-9-]{1,32}")
ENDPOINT_RE = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?/?")


class TargetError(Exception):
    """A target that cannot be used (its message is safe to show)."""


def validate_directory(path: str) -> str:
    path = (path or "").strip()
    if not DIRECTORY_RE.fullmatch(path) or ".." in path.split("/"):
        raise TargetError("Use an absolute path of letters, digits, '.', '_', '-' and '/'.")
    return path.rstrip("/") or "/"


class DirectoryStore:
    def __init__(self, path: str):
        self.root = Path(validate_directory(path))

    def _path(self, key: str) -> Path:
        full = (self.root / key).resolve()
        if self.root.resolve() not in full.parents:
            raise TargetError(f"backup key {key!r} leaves the target directory")
        return full

    def upload(self, key: str, stream: Callable[[Callable[[bytes], None]], int]) -> int:
        """``stream(sink)`` pushes the chunks; written to a temporary file, renamed in place."""
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                size = stream(fh.write)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, final)
            return size
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def open(self, key: str):
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise TargetError(f"the backup file {key} is missing from {self.root}") from None

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def local_path(self, key: str) -> Path:
        return self._path(key)


class _Abandoned(Exception):
    """The reading side gave up (e.g. the S3 upload failed): stop pushing."""


class _PushToPull:
    """Turns "stream pushes chunks to a sink" into a file-like ``read`` for boto3.

    A thread runs the push side; a small bounded queue between them keeps memory flat.
    If the reading side gives up (:meth:`abandon`), the pushing thread stops at its next
    chunk instead of blocking on a full queue forever.
    """

    def __init__(self, stream: Callable[[Callable[[bytes], None]], int]):
        import queue
        import threading
        self._q: "queue.Queue[bytes | BaseException | None]" = queue.Queue(maxsize=8)
        self._stop = threading.Event()
        self._buf = b""
        self._done = False
        self.error: BaseException | None = None
        self.size = 0

        def put(item) -> None:
            while not self._stop.is_set():
                try:
                    self._q.put(item, timeout=0.5)
                    return
                except queue.Full:
                    continue
            raise _Abandoned()

        def run():
            try:
                self.size = stream(put)
                put(None)
            except _Abandoned:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the reading side
                try:
                    put(exc)
                except _Abandoned:
                    pass

        self._thread = threading.Thread(target=run, name="backup-stream", daemon=True)
        self._thread.start()

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buf) < n):
            item = self._q.get()
            if item is None:
                self._done = True
            elif isinstance(item, BaseException):
                self._done = True
                self.error = item
                raise item
            else:
                self._buf += item
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def abandon(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


class S3Store:
    def __init__(self, *, endpoint_url: str | None, region: str | None, bucket: str,
                 prefix: str, access_key_id: str, secret_access_key: str):
        import boto3
        from botocore.config import Config
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url or None, region_name=region or "us-east-1",
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
            config=Config(s3={"addressing_style": "path" if endpoint_url else "auto"},
                          retries={"max_attempts": 3, "mode": "standard"},
                          connect_timeout=10, read_timeout=60))

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def upload(self, key: str, stream: Callable[[Callable[[bytes], None]], int]) -> int:
        from boto3.s3.transfer import TransferConfig
        reader = _PushToPull(stream)
        try:
            self.client.upload_fileobj(reader, self.bucket, self._key(key),
                                       Config=TransferConfig(multipart_chunksize=8 * CHUNK,
                                                             use_threads=False))
        except BaseException:
            reader.abandon()   # the SFTP side stops at its next chunk
            if reader.error is not None:
                raise reader.error from None
            raise
        finally:
            reader.join(timeout=60)
        if reader.error is not None:
            raise reader.error
        return reader.size

    def open(self, key: str):
        from botocore.exceptions import ClientError
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except ClientError as exc:
            raise TargetError(f"the backup object {key} cannot be read: "
                              f"{exc.response.get('Error', {}).get('Code', 'error')}") from None

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError:
            return False

    def presigned_url(self, key: str, filename: str, expires: int = 300) -> str:
        """A short-lived download link (computed locally: no network)."""
        return self.client.generate_presigned_url(
            "get_object", ExpiresIn=expires,
            Params={"Bucket": self.bucket, "Key": self._key(key),
                    "ResponseContentDisposition": f'attachment; filename="{filename}"'})


def store_for(target: BackupTarget) -> "DirectoryStore | S3Store":
    cfg = target.config or {}
    if target.kind == BackupTargetKind.DIRECTORY:
        return DirectoryStore(cfg.get("path", ""))
    creds = target.credentials or {}
    return S3Store(endpoint_url=cfg.get("endpoint_url"), region=cfg.get("region"),
                   bucket=cfg.get("bucket", ""), prefix=cfg.get("prefix", ""),
                   access_key_id=creds.get("access_key_id", ""),
                   secret_access_key=creds.get("secret_access_key", ""))


def target_secrets(target: BackupTarget) -> list[str]:
    """What must be masked in anything an operation on this target records."""
    creds = target.credentials or {}
    return [v for v in (creds.get("access_key_id"), creds.get("secret_access_key")) if v]


__all__ = ["DirectoryStore", "S3Store", "TargetError", "store_for", "target_secrets",
           "validate_directory", "BUCKET_RE", "PREFIX_RE", "REGION_RE", "ENDPOINT_RE"]
