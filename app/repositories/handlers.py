"""The ``repository_verify`` operation: check a deploy key with ``git ls-remote`` (worker only).

Started by "Verify access" on an application's page, and by the onboarding's
"Add the key to the sandbox git host" (``params["sandbox_key"]``), which first
authorises the key on the local sandbox's git host. The result the page shows
is ``operation.result`` (``ok``, ``message``, ``trusted_now``); the application
row is updated (known hosts, branches, ``deploy_key_installed_at``) as
:func:`app.repositories.verify_access` does.
"""
from __future__ import annotations

from app.extensions import db
from app.models import Application, Organisation
from app.models.enums import OperationKind
from app.operations import StepFailed, operation_handler
from app.repositories import verify_access

SANDBOX_KEY_ADDED = "Deploy key added to the sandbox git host (read-only)"


def sandbox_repository_url(org: Organisation) -> str | None:
    """The local sandbox's sample repository, once the sandbox is ready for ``org``."""
    state = (org.onboarding_state or {}).get("sandbox") or {}
    return state.get("repository_url") if state.get("status") == "ready" else None


def _authorize_on_sandbox(ctx, application: Application) -> None:
    from app.sandbox import Sandbox
    from app.sandbox_servers import organisation_sandbox

    with ctx.step("Add the deploy key to the sandbox git host") as step:
        org = db.session.get(Organisation, application.organisation_id)
        if not application.repository_url or \
                application.repository_url != sandbox_repository_url(org):
            raise StepFailed("Only the sandbox's sample repository can be authorised by Keystone.")
        name = organisation_sandbox(org, ctx.runtime.app.config["SANDBOX_NAME"])
        step.log(f"sandbox {name}: authorising key {application.deploy_key_fingerprint} "
                 f"(read-only)")
        Sandbox(name).status().git.authorize_key(application.deploy_key_public)
        step.log(SANDBOX_KEY_ADDED)


@operation_handler(OperationKind.REPOSITORY_VERIFY)
def verify_repository(ctx) -> None:
    application: Application | None = ctx.target
    if application is None:
        raise StepFailed("The application no longer exists.")
    sandbox_key = bool(ctx.params.get("sandbox_key"))
    if sandbox_key:
        _authorize_on_sandbox(ctx, application)
    with ctx.step("Verify access (git ls-remote with the deploy key)") as step:
        step.log(f"git ls-remote {application.repository_url}")
        result = verify_access(application)
        db.session.commit()
        for key in result.host_keys if result.trusted_now else ():
            step.log(f"trusted the git host's key at first use: {key.key_type} {key.fingerprint}")
        message = result.message
        if sandbox_key:
            message = (f"{SANDBOX_KEY_ADDED} and access verified. {message}" if result.ok else
                       f"{SANDBOX_KEY_ADDED}, but verifying failed: {message}")
        ctx.result.update({"ok": result.ok, "message": message,
                           "trusted_now": result.trusted_now, "branches": len(result.branches)})
        step.log(message)
        if not result.ok:
            raise StepFailed(message)
