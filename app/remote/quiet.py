"""Keep paramiko's transport-thread tracebacks out of the terminal.

When a server is still booting (provisioning retries the first SSH login until
sshd answers), paramiko's transport thread logs "Exception (client): Error
reading SSH protocol banner" and the traceback, one ERROR record per line, on
the ``paramiko.transport`` logger. The same exception is raised to the caller
(app.remote.connection), which retries and records each attempt in the
operation's step log, or fails the step with the reason. The transport
thread's copy is therefore noise on a successful run: it is kept at DEBUG.
"""
from __future__ import annotations

import logging

TRANSPORT_LOGGER = "paramiko.transport"


class TransportErrorsToDebug(logging.Filter):
    """Passes paramiko's transport records only when DEBUG logging is wanted for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno >= logging.INFO or \
            logging.getLogger(TRANSPORT_LOGGER).isEnabledFor(logging.DEBUG)


def quiet_transport_errors() -> None:
    logger = logging.getLogger(TRANSPORT_LOGGER)
    if not any(isinstance(f, TransportErrorsToDebug) for f in logger.filters):
        logger.addFilter(TransportErrorsToDebug())
