"""paramiko's transport-thread tracebacks (banner errors while a server boots) stay out of
the worker's terminal; the caller records the retry in the step log."""
import logging

from app.remote.quiet import TRANSPORT_LOGGER, quiet_transport_errors


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_banner_traceback_is_dropped_unless_debug_is_wanted():
    logger = logging.getLogger(TRANSPORT_LOGGER)
    handler = Collect()
    logger.addHandler(handler)
    old_level = logger.level
    try:
        quiet_transport_errors()
        quiet_transport_errors()  # idempotent
        logger.setLevel(logging.INFO)
        logger.error("Exception (client): Error reading SSH protocol banner")
        logger.error("Traceback (most recent call last):")
        logger.info("Connected (version 2.0, client OpenSSH_9.2p1)")
        assert [r.getMessage() for r in handler.records] == [
            "Connected (version 2.0, client OpenSSH_9.2p1)"]
        logger.setLevel(logging.DEBUG)
        logger.error("Exception (client): Error reading SSH protocol banner")
        assert handler.records[-1].levelname == "DEBUG"
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
