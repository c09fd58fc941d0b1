"""The operations that took the network calls out of the views (issue 16.3): each kind has
a handler the worker loads, and the handlers' refusals need no network."""
from __future__ import annotations

import pytest

from app.extensions import db
from app.jobs import run_operation
from app.models.enums import OperationKind, OperationStatus
from app.operations import registry, start_operation
from tests.factories import build_org

CHECK_KINDS = {
    OperationKind.REPOSITORY_VERIFY: "app.repositories.handlers",
    OperationKind.HOST_KEY_SCAN: "app.providers.handlers",
    OperationKind.PROVIDER_SYNC: "app.providers.handlers",
    OperationKind.SERVER_DELETE: "app.providers.handlers",
    OperationKind.IMAGE_CHECK: "app.registries.handlers",
    OperationKind.SANDBOX_START: "app.sandbox.handlers",
}


@pytest.mark.parametrize("kind", sorted(CHECK_KINDS), ids=str)
def test_the_worker_loads_a_handler_for_each_check(app, kind):
    registry.load_handlers()
    handler = registry.handler_for(kind)
    assert handler is not None and handler.__module__ == CHECK_KINDS[kind]
    assert CHECK_KINDS[kind] in registry.HANDLER_MODULES
    assert registry.timeout_for(kind) <= 30 * 60     # every check ends


def test_the_sandbox_key_is_only_added_for_the_sandbox_repository(app, monkeypatch):
    import app.sandbox as sandbox_pkg
    built = []
    monkeypatch.setattr(sandbox_pkg, "Sandbox", lambda *a, **kw: built.append(a))
    g = build_org()
    g.org.onboarding_state = {"sandbox": {"status": "ready",
                                          "repository_url": "ssh://git@127.0.0.1:2222/sample.git"}}
    db.session.commit()
    op = start_operation(OperationKind.REPOSITORY_VERIFY, target_type="application",
                         target_id=g.application.id, organisation_id=g.org.id,
                         params={"sandbox_key": True}, enqueue=False)
    assert run_operation(op.id) == "failed"
    db.session.expire_all()
    assert op.status == OperationStatus.FAILED and "sandbox's sample repository" in op.error
    assert built == [] and [s.name for s in op.steps] == [
        "Add the deploy key to the sandbox git host"]
    assert g.application.deploy_key_installed_at is None


def test_a_check_on_a_removed_target_fails_clearly(app):
    g = build_org()
    op = start_operation(OperationKind.HOST_KEY_SCAN, target_type="server", target_id=999999,
                         organisation_id=g.org.id, enqueue=False)
    assert run_operation(op.id) == "failed"
    db.session.expire_all()
    assert op.error == "The server no longer exists."
