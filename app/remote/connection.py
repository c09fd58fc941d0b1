"""One SSH connection to one server: the only module in Keystone that imports paramiko.

Why it looks like this (pyinfra's ``connectors/ssh.py`` shape: connect, run
with a line callback, put file, disconnect):

* **Host keys are pinned by us, not by paramiko's policies.** We drive a bare
  :class:`paramiko.Transport`, read the server's key after key exchange and
  compare its OpenSSH fingerprint with the pinned one *before* authenticating.
  No known_hosts, no AutoAddPolicy / WarningPolicy: with no pin it is first
  contact and the caller stores what :meth:`Connection.connect` returns; a
  different key raises :class:`HostKeyMismatch` naming both fingerprints.
* **One transport, many channels.** Every :meth:`run` opens a channel on the
  same transport, so an operation of ten steps costs one handshake (sshd's
  MaxSessions limits *concurrent* channels to 10, not sequential ones).
* **Lines as they are printed.** A pty is requested by default so remote
  programs line-buffer their output (through a pipe they block-buffer). A pty
  would merge stderr into stdout: the wrapper passes the command's stderr
  through ``sed -u`` that tags each line with a nonce, back onto the pty, so
  lines keep their order and still arrive as printed, and :meth:`run` files the
  tagged ones as ``stderr`` (SPEC 3: a step keeps its stderr). With
  ``pty=False`` (forced when ``stdin`` is given, because a pty would echo and
  mangle the input) stdout and stderr are the channel's two streams, possibly
  block-buffered.
* **Commands can be killed.** Each command is wrapped so that it first prints
  its process group id (sshd puts each session in its own session/process
  group); on timeout or cancel we send ``kill -TERM -<pgid>`` over a second
  channel, ``KILL`` after a grace period, then close the channel (which also
  hangs up the pty, SIGHUP). Processes that put themselves in another session
  (daemons, ``docker run -d`` containers owned by dockerd) are out of reach by
  design; the operations layer cleans those up.
* **A dead link is noticed.** SSH keepalives every ``keepalive`` seconds keep
  data flowing; TCP_USER_TIMEOUT and TCP keepalive on the socket turn a
  black-holed peer into a socket error within ``dead_peer_timeout`` seconds
  instead of the kernel's ~15 minutes, and a command in flight then raises
  :class:`ConnectionLost`. After a loss we reconnect once (best effort) to
  kill the orphaned process group, and say in the message whether that worked.
"""

from __future__ import annotations

import io
import logging
import secrets as _secrets
import select
import socket
import threading
import time
from typing import Callable

import paramiko

from app import shell

from .errors import (
    AuthenticationFailed,
    CommandCancelled,
    CommandTimeout,
    ConnectError,
    ConnectionLost,
    ConnectionRefused,
    ConnectTimeout,
    HostKeyMismatch,
    ProtocolError,
    RemoteError,
    TransferFailed,
    Unreachable,
)
from .files import SftpFiles
from .keys import InvalidKey, fingerprint_of_key_blob
from .lines import _Capture, _LineSplitter
from .result import NO_EXIT_STATUS, Result

log = logging.getLogger(__name__)

LineCallback = Callable[[str, str], None]

# How much output a Result keeps (the whole output went to on_line).
CAPTURE_LIMIT = 4 * 1024 * 1024
# Poll interval of the run loop when nothing arrives: bounds how late a
# cancel is noticed. Data wakes the loop immediately (select on the channel).
POLL_INTERVAL = 0.1
PGID_WAIT_SECONDS = 5.0
"""How long a cancel or timeout waits for a command's process group to be reported (the
wrapper's first line) before it gives up on killing the group."""


def _load_private_key(pem: str) -> paramiko.PKey:
    """Parse an OpenSSH or PEM private key of any type paramiko supports."""
    errors = []
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(pem))
        except (paramiko.SSHException, ValueError, TypeError) as exc:
            errors.append(f"{cls.__name__}: {exc}")
    raise InvalidKey("cannot read the private key (" + "; ".join(errors) + ")")


def _has_exit_status(chan: paramiko.Channel) -> bool:
    """True once the server sent exit-status.

    ``Channel.exit_status_ready()`` is also true for a channel that was merely
    closed (a dead transport closes all channels), which must not be mistaken
    for a finished command.
    """
    return chan.exit_status != -1


class Connection(SftpFiles):
    """An authenticated SSH connection to one server.

    ``private_key_pem`` is Keystone's management key (OpenSSH or PEM text).
    ``expected_fingerprint`` is the pinned host key, or None on first contact
    (trust on first use: pin what :meth:`connect` returns).
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        private_key_pem: str,
        expected_fingerprint: str | None = None,
        connect_timeout: float = 10,
        keepalive: int = 15,
        *,
        dead_peer_timeout: float | None = None,
        kill_grace: float = 3.0,
        sftp_timeout: float = 60.0,
    ):
        self.host = host
        self.port = int(port)
        self.username = username
        self._private_key_pem = private_key_pem
        self.expected_fingerprint = expected_fingerprint
        self.connect_timeout = float(connect_timeout)
        self.keepalive = int(keepalive)
        self.dead_peer_timeout = float(dead_peer_timeout if dead_peer_timeout is not None else max(3 * keepalive, 30))
        self.kill_grace = float(kill_grace)
        self.sftp_timeout = float(sftp_timeout)
        self.fingerprint: str | None = None
        self.handshakes = 0
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.Lock()
        self._sftp_lock = threading.RLock()  # transfers take turns (app.remote.files)

    # ------------------------------------------------------------ lifecycle

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def first_contact(self) -> bool:
        """True when no fingerprint was pinned: the caller should pin :attr:`fingerprint`."""
        return self.expected_fingerprint is None

    @property
    def is_connected(self) -> bool:
        return self._transport is not None and self._transport.is_active() and self._transport.is_authenticated()

    @property
    def open_channels(self) -> int:
        """Channels open on this connection now (0 when no command runs)."""
        transport = self._transport
        if transport is None:
            return 0
        return sum(1 for chan in list(transport._channels.values()) if not chan.closed)

    def connect(self) -> str:
        """Connect, check the host key, authenticate; return the host-key fingerprint.

        The whole handshake is bounded by ``connect_timeout`` (a deadline
        shared by TCP connect, banner, key exchange and authentication).
        Idempotent while connected.
        """
        with self._lock:
            if self.is_connected:
                return self.fingerprint  # type: ignore[return-value]
            self._close_locked()
            self.handshakes += 1
            self._transport, self.fingerprint = self._handshake()
            return self.fingerprint

    def _handshake(self) -> tuple[paramiko.Transport, str]:
        deadline = time.monotonic() + self.connect_timeout

        def remaining() -> float:
            return max(0.1, deadline - time.monotonic())

        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except socket.timeout:
            raise ConnectTimeout(
                f"Could not reach {self.address}: no answer within {self.connect_timeout:g}s "
                f"(the server is down, a firewall drops the traffic, or the address is wrong)."
            ) from None
        except ConnectionRefusedError:
            raise ConnectionRefused(
                f"{self.address} refused the connection: nothing listens on port {self.port} "
                f"(wrong SSH port, or sshd is not running)."
            ) from None
        except socket.gaierror as exc:
            raise Unreachable(f"Could not resolve {self.host!r}: {exc.strerror or exc}.") from None
        except OSError as exc:
            raise Unreachable(f"Could not reach {self.address}: {exc.strerror or exc}.") from None

        self._tune_socket(sock)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = remaining()
        try:
            try:
                transport.start_client(timeout=remaining())
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if time.monotonic() >= deadline:
                    raise ConnectTimeout(
                        f"{self.address} accepted the connection but the SSH handshake did not finish "
                        f"within {self.connect_timeout:g}s."
                    ) from None
                raise ProtocolError(
                    f"SSH handshake with {self.address} failed ({exc}); is this port an SSH server?"
                ) from None

            try:
                # start_client() returns silently when its timeout expires.
                key = transport.get_remote_server_key()
            except paramiko.SSHException:
                raise ConnectTimeout(
                    f"{self.address} accepted the connection but the SSH handshake did not finish "
                    f"within {self.connect_timeout:g}s."
                ) from None
            presented = fingerprint_of_key_blob(key.asbytes())
            if self.expected_fingerprint is not None and presented != self.expected_fingerprint:
                raise HostKeyMismatch(self.host, self.port, self.expected_fingerprint, presented)

            pkey = _load_private_key(self._private_key_pem)
            transport.auth_timeout = remaining()
            try:
                transport.auth_publickey(self.username, pkey)
            except paramiko.BadAuthenticationType as exc:
                raise AuthenticationFailed(
                    f"{self.address} does not accept public-key login for {self.username!r} "
                    f"(it allows: {', '.join(exc.allowed_types) or 'nothing'})."
                ) from None
            except paramiko.AuthenticationException:
                raise AuthenticationFailed(
                    f"{self.address} refused Keystone's key for user {self.username!r} "
                    f"(key {fingerprint_of_key_blob(pkey.asbytes())}): add the public key to "
                    f"~{self.username}/.ssh/authorized_keys on the server."
                ) from None
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise ProtocolError(f"Authentication with {self.address} failed: {exc}") from None
            if not transport.is_authenticated():
                raise AuthenticationFailed(f"{self.address} did not authenticate user {self.username!r}.")
            transport.set_keepalive(self.keepalive)
            return transport, presented
        except BaseException:
            transport.close()
            raise

    def _tune_socket(self, sock: socket.socket) -> None:
        """Make a dead peer an error in ``dead_peer_timeout`` s, not ~15 minutes."""
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle = max(1, self.keepalive)
        interval = max(1, int(self.dead_peer_timeout // 6) or 1)
        for name, value in (
            ("TCP_KEEPIDLE", idle),
            ("TCP_KEEPINTVL", interval),
            ("TCP_KEEPCNT", 3),
            ("TCP_USER_TIMEOUT", int(self.dead_peer_timeout * 1000)),
        ):
            opt = getattr(socket, name, None)
            if opt is not None:
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, opt, value)
                except OSError:  # pragma: no cover - platform without it
                    pass

    def close(self) -> None:
        """Close the SFTP session and the transport (all channels). Idempotent."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:  # pragma: no cover
                pass
            self._sftp = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def __enter__(self) -> "Connection":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Connection({self.username}@{self.address}, connected={self.is_connected})"

    # ------------------------------------------------------------ commands

    def _require_transport(self) -> paramiko.Transport:
        transport = self._transport
        if transport is None or not transport.is_active():
            if transport is not None:
                raise ConnectionLost(f"The SSH connection to {self.address} was lost.")
            raise RemoteError(f"Not connected to {self.address}: call connect() first.")
        return transport

    def _open_channel(self) -> paramiko.Channel:
        transport = self._require_transport()
        try:
            return transport.open_session(timeout=self.connect_timeout)
        except paramiko.ChannelException as exc:
            raise RemoteError(f"{self.address} refused a new SSH channel ({exc}).") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if not transport.is_active():
                raise ConnectionLost(f"The SSH connection to {self.address} was lost.") from None
            raise RemoteError(f"Could not open an SSH channel to {self.address}: {exc}") from None

    def run(
        self,
        command: "str | shell.Command",
        *,
        on_line: LineCallback | None = None,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
        pty: bool = True,
        stdin: bytes | None = None,
    ) -> Result:
        """Run ``command`` on a new channel; stream its lines; return its :class:`Result`.

        ``command`` is a :class:`app.shell.Command` (preferred) or a string
        already rendered by app.shell. ``on_line(stream, line)`` is called
        from this thread for each line as it arrives (``stream`` is
        ``"stdout"`` or ``"stderr"``, with a pty too).
        If ``on_line`` raises, the remote command is terminated and the
        exception propagates.

        Raises :class:`CommandTimeout` / :class:`CommandCancelled` after
        terminating the remote process group, :class:`ConnectionLost` if the
        connection drops. A non-zero exit is *not* an exception: see
        :meth:`Result.check`.
        """
        text = command.render() if isinstance(command, shell.Command) else command
        if not isinstance(text, str):
            raise TypeError("command must be an app.shell.Command or str")
        if stdin is not None:
            pty = False  # a pty would echo the input and interpret control bytes
        marker = "KEYSTONE_PGID_" + _secrets.token_hex(4) + "="
        # With a pty, stderr would be lost in stdout: each of its lines comes back tagged
        # with a nonce (the command's output cannot forge it) and is filed as stderr.
        err_marker = ("KEYSTONE_ERR_" + _secrets.token_hex(4) + "=") if pty else None
        wrapped = shell.report_pgid_then(text, marker, stdin_devnull=stdin is None,
                                         stderr_marker=err_marker).render()

        started = time.monotonic()
        deadline = started + timeout if timeout is not None else None
        captures = {"stdout": _Capture(CAPTURE_LIMIT), "stderr": _Capture(CAPTURE_LIMIT)}
        state = {"pgid": None, "terminated": False}

        def emit(stream: str, line: str) -> None:
            # The wrapper's first line carries the pgid. Anything a login
            # shell prints before it (a chatty .bashrc) is passed through;
            # the random nonce in the marker means command output cannot forge it.
            if stream == "stdout" and state["pgid"] is None and line.startswith(marker):
                if line[len(marker) :].isdigit():
                    state["pgid"] = int(line[len(marker) :])
                    return
            if err_marker is not None and stream == "stdout" and line.startswith(err_marker):
                # A stderr line under a pty: ``stdout`` keeps the merged text as the
                # terminal showed it (what callers have always parsed), ``stderr`` gets it too.
                stream, line = "stderr", line[len(err_marker):]
                captures["stdout"].add(line)
            captures[stream].add(line)
            if on_line is not None:
                on_line(stream, line)

        splitters = {
            "stdout": _LineSplitter(lambda line: emit("stdout", line)),
            "stderr": _LineSplitter(lambda line: emit("stderr", line)),
        }

        def drain() -> None:
            while chan.recv_ready():
                data = chan.recv(65536)
                if not data:
                    break
                splitters["stdout"].feed(data)
            while chan.recv_stderr_ready():
                data = chan.recv_stderr(65536)
                if not data:
                    break
                splitters["stderr"].feed(data)

        def flush() -> None:
            splitters["stdout"].flush()
            splitters["stderr"].flush()

        transport = self._require_transport()
        chan = self._open_channel()
        try:
            try:
                if pty:
                    # "dumb" discourages colours and cursor tricks; wide so tools don't wrap.
                    chan.get_pty(term="dumb", width=200, height=50)
                chan.exec_command(wrapped)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if not transport.is_active():
                    raise ConnectionLost(
                        f"The SSH connection to {self.address} was lost while starting the step."
                    ) from None
                raise RemoteError(f"{self.address} refused to start the command: {exc}") from None
            if stdin is not None:
                threading.Thread(target=self._send_stdin, args=(chan, stdin), daemon=True).start()

            def await_pgid() -> None:
                """A cancel or a timeout before the wrapper's first line (the process group)
                arrived: wait for it, bounded, so the group can be killed. Closing the
                channel alone leaves a command without a pty running for good."""
                end = time.monotonic() + PGID_WAIT_SECONDS
                while state["pgid"] is None and time.monotonic() < end:
                    drain()
                    if state["pgid"] is not None or _has_exit_status(chan) or chan.closed \
                            or not transport.is_active():
                        return
                    try:
                        select.select([chan], [], [], 0.05)
                    except (OSError, ValueError):  # pragma: no cover - pipe closed under us
                        time.sleep(0.01)

            while True:
                if cancel is not None and cancel.is_set():
                    state["terminated"] = True
                    await_pgid()
                    cleaned = self._terminate(chan, state["pgid"], drain)
                    flush()
                    raise CommandCancelled(
                        f"The command on {self.address} was cancelled"
                        + (" and terminated." if cleaned else "; it may not have been terminated.")
                    )
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    state["terminated"] = True
                    await_pgid()
                    cleaned = self._terminate(chan, state["pgid"], drain)
                    flush()
                    raise CommandTimeout(
                        f"The command on {self.address} did not finish within {timeout:g}s"
                        + (" and was terminated." if cleaned else "; it may not have been terminated."),
                        timeout,
                    )
                wait = POLL_INTERVAL if deadline is None else max(0.0, min(POLL_INTERVAL, deadline - now))
                try:
                    select.select([chan], [], [], wait)
                except (OSError, ValueError):  # pragma: no cover - pipe closed under us
                    time.sleep(0.01)
                drain()
                buffered = chan.recv_ready() or chan.recv_stderr_ready()
                if buffered:
                    continue
                if _has_exit_status(chan) and (chan.eof_received or chan.closed):
                    break
                if chan.closed or not transport.is_active():
                    drain()
                    if _has_exit_status(chan):
                        break
                    if chan.eof_received and transport.is_active():
                        # Ended by a signal: sshd sent EOF and exit-signal (which
                        # paramiko ignores) instead of exit-status. A channel torn
                        # down with its transport never sees EOF.
                        break
                    flush()
                    raise self._lost(state["pgid"], started)
            flush()
            exit_code = chan.exit_status if _has_exit_status(chan) else NO_EXIT_STATUS
        except BaseException:
            # on_line raised, or KeyboardInterrupt: don't leave the command running.
            if not state["terminated"] and not chan.closed and transport.is_active():
                self._terminate(chan, state["pgid"], lambda: None)
            raise
        finally:
            chan.close()
        out, err = captures["stdout"], captures["stderr"]
        return Result(
            exit_code=exit_code,
            stdout=out.text(),
            stderr=err.text(),
            duration=time.monotonic() - started,
            truncated=out.truncated or err.truncated,
        )

    @staticmethod
    def _send_stdin(chan: paramiko.Channel, data: bytes) -> None:
        try:
            chan.sendall(data)
            chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the command ended or the connection dropped; run() reports it

    def _exec_quick(self, command: shell.Command, timeout: float) -> int | None:
        """Run a tiny housekeeping command (no pty, no wrapper); exit code or None."""
        try:
            chan = self._open_channel()
        except RemoteError:
            return None
        try:
            chan.exec_command(command.render())
            end = time.monotonic() + timeout
            while not _has_exit_status(chan):
                if time.monotonic() >= end or chan.closed:
                    return None
                time.sleep(0.02)
            return chan.exit_status
        except (paramiko.SSHException, EOFError, OSError):
            return None
        finally:
            chan.close()

    @staticmethod
    def _kill_command(signal: str, pgid: int) -> shell.Command:
        return shell.cmd("kill", "-s", signal, shell.end_of_options(), shell.concat("-", pgid))

    def _terminate(self, chan: paramiko.Channel, pgid: int | None, drain: Callable[[], None]) -> bool:
        """TERM the process group, KILL it after ``kill_grace``, close the channel.

        Returns True if the command is known to have ended.
        """
        ended = False
        if pgid is not None and self._transport is not None and self._transport.is_active():
            self._exec_quick(self._kill_command("TERM", pgid), timeout=5)
            end = time.monotonic() + self.kill_grace
            while time.monotonic() < end:
                drain()
                if _has_exit_status(chan) or chan.eof_received:
                    ended = True
                    break
                time.sleep(0.05)
            # KILL even if the leader exited: its children may ignore TERM.
            self._exec_quick(self._kill_command("KILL", pgid), timeout=5)
            for _attempt in range(20):
                if self._exec_quick(self._kill_command("0", pgid), timeout=5) not in (0, None):
                    ended = True  # kill -0 fails: no process left in the group
                    break
                time.sleep(0.1)
        chan.close()  # with a pty: sshd hangs up the terminal, SIGHUP to the group
        return ended

    def _lost(self, pgid: int | None, started: float) -> ConnectionLost:
        elapsed = time.monotonic() - started
        cleanup = ""
        if pgid is not None:
            cleanup = " " + self._kill_after_loss(pgid)
        return ConnectionLost(
            f"The SSH connection to {self.address} was lost during the step "
            f"(after {elapsed:.1f}s); its outcome is unknown.{cleanup}"
        )

    def _kill_after_loss(self, pgid: int) -> str:
        """Reconnect once to kill the orphaned process group (sshd's SIGHUP may miss some)."""
        other = Connection(
            self.host,
            self.port,
            self.username,
            self._private_key_pem,
            self.fingerprint,
            connect_timeout=self.connect_timeout,
            keepalive=self.keepalive,
        )
        try:
            other.connect()
            other._exec_quick(self._kill_command("TERM", pgid), timeout=5)
            time.sleep(min(self.kill_grace, 1.0))
            other._exec_quick(self._kill_command("KILL", pgid), timeout=5)
            return "Keystone reconnected and terminated the remote command."
        except RemoteError as exc:
            return f"Keystone could not reconnect to terminate the remote command ({exc.__class__.__name__})."
        finally:
            other.close()

    # ------------------------------------------------------------ files (app.remote.files)

    TRANSFER_ERRORS = (OSError, EOFError, paramiko.SSHException)

    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._lock:
            if self._sftp is None:
                transport = self._require_transport()
                try:
                    self._sftp = paramiko.SFTPClient.from_transport(transport)
                except (paramiko.SSHException, EOFError, OSError) as exc:
                    if not transport.is_active():
                        raise ConnectionLost(f"The SSH connection to {self.address} was lost.") from None
                    raise TransferFailed(f"{self.address} refused an SFTP session: {exc}") from None
                self._sftp.get_channel().settimeout(self.sftp_timeout)
            return self._sftp
