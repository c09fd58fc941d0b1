"""Shared pieces of the deploy integration tests (a module, not a conftest, so tests import it)."""
from __future__ import annotations

import contextlib
import json

from app.sandbox import SandboxInfo


@contextlib.contextmanager
def running_testbed(sandbox: SandboxInfo, tmp_path_factory, migrated_db_template, redis_url,
            name: str, **options):
    """A set-up :class:`app.sandbox.testbed.Testbed` inside its own app context, cleaned up
    after. Module fixtures wrap it: ``with running_testbed(..., "deploys", server_count=1) as tb``."""
    from app.sandbox.testbed import Testbed
    from app.extensions import db
    from tests.conftest import make_app
    from app.sandbox.sample import push_new_commit
    # A good head of the sample repository, whatever an earlier module left there (a
    # "broken" commit answers 500 on /up): every bed starts deployable.
    push_new_commit(sandbox.git)
    app = make_app(tmp_path_factory.mktemp(name), migrated_db_template, redis_url)
    ctx = app.app_context()
    ctx.push()
    tb = Testbed(sandbox, **options)
    try:
        tb.setup()
        yield tb
    finally:
        tb.cleanup()
        db.session.remove()
        ctx.pop()


def commit_of(body: bytes):
    """The commit a sample-app response names (``?`` when the body is not its JSON)."""
    try:
        return json.loads(body)["commit"]
    except (ValueError, KeyError, TypeError):
        return "?"


def connects(machine, address: str, port: int) -> str:
    """'open', 'refused' or 'timeout' for a TCP connect from ``machine`` (run out of band)."""
    probe = (f"if timeout 5 bash -c 'exec 3<>/dev/tcp/{address}/{port}' 2>/dev/null; "
             "then echo open; elif [ $? -eq 124 ]; then echo timeout; else echo refused; fi")
    return machine.exec("bash", "-c", probe, check=False).stdout.strip()
