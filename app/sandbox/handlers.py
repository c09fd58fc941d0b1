"""The ``sandbox_start`` operation: bring the local sandbox up for an organisation's
onboarding (worker only; needs Docker on the Keystone host).

Two servers in containers, a registry with the stand-in images and a git host
with the sample app, registered as the organisation's servers
(:func:`app.sandbox_servers.register_sandbox`). The wizard's sandbox component
reads ``Organisation.onboarding_state["sandbox"]`` (starting, ready or failed)
and links to this operation's live log.
"""
from __future__ import annotations

from app.extensions import db
from app.models import Organisation
from app.models.enums import OperationKind
from app.operations import StepFailed, operation_handler


def _mark_failed(organisation_id: int, error: str) -> None:
    db.session.rollback()
    org = db.session.get(Organisation, organisation_id)
    if org is None:
        return
    state = dict(org.onboarding_state or {})
    state["sandbox"] = dict(state.get("sandbox") or {}, status="failed", error=error[:500])
    org.onboarding_state = state
    db.session.commit()


@operation_handler(OperationKind.SANDBOX_START)
def start_sandbox(ctx) -> None:
    from app.sandbox import Sandbox
    from app.sandbox_servers import register_sandbox, sandbox_name_for

    org: Organisation | None = ctx.target
    if org is None:
        raise StepFailed("The organisation no longer exists.")
    org_id = org.id
    # Each organisation has its own sandbox, named after it (issue 15, defect 11).
    name = sandbox_name_for(org, ctx.runtime.app.config["SANDBOX_NAME"])
    try:
        with ctx.step("Start the sandbox containers") as step:
            step.log(f"sandbox {name}: two servers, a registry and a git host (the first time "
                     f"builds the images: a few minutes)")
            # Stand-ins pushed to the sandbox registry: no image can be pulled from a
            # public registry here, so new services use these by default.
            info = Sandbox(name).up(servers=2, bare=False, stand_ins=True)
            step.log(f"{len(info.servers)} servers, registry {info.registry.url}, "
                     f"git host {info.git.sample_repo_url}")
        with ctx.step("Register the sandbox servers and registry") as step:
            servers = register_sandbox(db.session.get(Organisation, org_id), info)
            step.log("registered " + ", ".join(s.name for s in servers))
    except BaseException as exc:
        _mark_failed(org_id, ctx.redact(str(exc)) or type(exc).__name__)
        raise
