"""File transfer over a connection's SFTP session: atomic uploads, downloads, streams.

A mixin of :class:`app.remote.connection.Connection`, which owns the SFTP session
(``_sftp_client``) and says which exceptions a transfer can raise (``TRANSFER_ERRORS``,
paramiko's among them): this module does not import paramiko.
"""
from __future__ import annotations

import functools
import posixpath
import secrets as _secrets
import socket
import threading
from typing import Callable

from app import shell

from .errors import CommandCancelled, ConnectionLost, RemoteError, TransferFailed


def make_mkdir_p(path: str) -> shell.Command:
    """The command :meth:`Connection.mkdir_p` runs (shared with the fake)."""
    return shell.cmd("mkdir", "-p", shell.end_of_options(), path)


def _one_at_a_time(method):
    """Paramiko's SFTPClient is one request stream per connection and not safe for two
    threads at once: a deploy's migrations uploading their project while a route was
    installed on the same server both timed out. Transfers on one connection take turns
    (commands still run side by side, each on a channel of its own)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._sftp_lock:
            return method(self, *args, **kwargs)
    return wrapper


class SftpFiles:
    """put_file / get_file / stream_from / stream_to / remove_file / mkdir_p."""

    _sftp_lock: threading.RLock  # set by the connection (one per connection)

    TRANSFER_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError)

    def _file_error(self, action: str, path: str, exc: BaseException) -> RemoteError:
        if self._transport is None or not self._transport.is_active():
            self._sftp = None
            return ConnectionLost(f"The SSH connection to {self.address} was lost while {action} {path}.")
        if isinstance(exc, socket.timeout):
            self._sftp = None
            return TransferFailed(f"Timed out {action} {path} on {self.address}.")
        reason = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
        return TransferFailed(f"Failed {action} {path} on {self.address}: {reason}.")

    @_one_at_a_time
    def put_file(self, remote_path: str, data: bytes, mode: int = 0o644) -> None:
        """Upload ``data`` to ``remote_path`` atomically, with ``mode`` (0o600 for secrets).

        The file is written inside a fresh 0700 directory next to the target
        (so nobody can open it while it is being written, whatever the umask),
        chmod-ed *before* any byte is written, then ``posix_rename``-d over
        the target: readers see the old file or the new one, never half of
        one, and a secret is never readable with a wider mode.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("put_file data must be bytes")
        directory, name = posixpath.split(remote_path)
        if not name:
            raise ValueError(f"not a file path: {remote_path!r}")
        sftp = self._sftp_client()
        tmp_dir = posixpath.join(directory or ".", f".keystone-upload-{_secrets.token_hex(6)}")
        tmp_file = posixpath.join(tmp_dir, name)
        created_dir = False
        try:
            sftp.mkdir(tmp_dir, mode=0o700)
            created_dir = True
            with sftp.open(tmp_file, "wb") as handle:
                handle.chmod(mode)
                handle.set_pipelined(True)
                handle.write(bytes(data))
            # A full disk can lose pipelined writes without an error: never rename a short
            # file into place (a truncated archive, a half Caddyfile).
            arrived = sftp.stat(tmp_file).st_size
            if arrived != len(data):
                raise OSError(f"only {arrived} of {len(data)} bytes arrived (is the disk full?)")
            sftp.posix_rename(tmp_file, remote_path)
        except self.TRANSFER_ERRORS as exc:
            raise self._file_error("uploading", remote_path, exc) from None
        finally:
            if created_dir:
                for cleanup in (lambda: sftp.remove(tmp_file), lambda: sftp.rmdir(tmp_dir)):
                    try:
                        cleanup()
                    except self.TRANSFER_ERRORS:
                        pass

    @_one_at_a_time
    def get_file(self, remote_path: str) -> bytes:
        """Download a whole file."""
        sftp = self._sftp_client()
        try:
            with sftp.open(remote_path, "rb") as handle:
                handle.prefetch()
                return handle.read()
        except self.TRANSFER_ERRORS as exc:
            raise self._file_error("downloading", remote_path, exc) from None

    def mkdir_p(self, path: str, timeout: float = 30) -> None:
        """``mkdir -p -- path``; raises :class:`CommandFailed` if it cannot."""
        self.run(make_mkdir_p(path), pty=False, timeout=timeout).check(f"mkdir -p {path}")

    # ------------------------------------------------------------ streamed files (backups)

    @_one_at_a_time
    def stream_from(self, remote_path: str, sink: Callable[[bytes], None],
                    chunk_size: int = 1024 * 1024,
                    cancel: threading.Event | None = None) -> int:
        """Read ``remote_path`` over SFTP in chunks, handing each to ``sink``; return the size.

        Never holds the whole file in memory (a database dump can be larger than RAM).
        ``cancel`` set between chunks stops the transfer (:class:`CommandCancelled`).
        """
        sftp = self._sftp_client()
        total = 0
        try:
            with sftp.open(remote_path, "rb") as handle:
                handle.prefetch()
                while True:
                    if cancel is not None and cancel.is_set():
                        raise CommandCancelled(f"Cancelled while downloading {remote_path}.")
                    data = handle.read(chunk_size)
                    if not data:
                        return total
                    total += len(data)
                    sink(data)
        except self.TRANSFER_ERRORS as exc:
            raise self._file_error("downloading", remote_path, exc) from None

    @_one_at_a_time
    def stream_to(self, remote_path: str, source: Callable[[int], bytes], mode: int = 0o600,
                  chunk_size: int = 1024 * 1024,
                  cancel: threading.Event | None = None) -> int:
        """Write what ``source(n)`` returns (until b"") to ``remote_path``; return the size.

        The file is created with ``mode`` before any byte is written, and its size is
        checked against what was sent (a full disk can lose pipelined writes silently).
        """
        sftp = self._sftp_client()
        total = 0
        try:
            with sftp.open(remote_path, "wb") as handle:
                handle.chmod(mode)
                handle.set_pipelined(True)
                while True:
                    if cancel is not None and cancel.is_set():
                        raise CommandCancelled(f"Cancelled while uploading {remote_path}.")
                    data = source(chunk_size)
                    if not data:
                        break
                    handle.write(data)
                    total += len(data)
            arrived = sftp.stat(remote_path).st_size
            if arrived != total:
                raise OSError(f"only {arrived} of {total} bytes arrived (is the disk full?)")
            return total
        except self.TRANSFER_ERRORS as exc:
            raise self._file_error("uploading", remote_path, exc) from None

    @_one_at_a_time
    def remove_file(self, remote_path: str) -> None:
        """Remove a file over SFTP; a file that is already gone is not an error."""
        sftp = self._sftp_client()
        try:
            sftp.remove(remote_path)
        except FileNotFoundError:
            return
        except self.TRANSFER_ERRORS as exc:
            raise self._file_error("removing", remote_path, exc) from None
