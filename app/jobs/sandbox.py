"""RQ job: bring the local sandbox up for an organisation's onboarding."""
from __future__ import annotations


def bring_up_sandbox(organisation_id: int) -> None:
    from app import create_app
    from app.extensions import db
    from app.models import Organisation
    from app.sandbox import Sandbox
    from app.sandbox_servers import register_sandbox

    app = create_app()
    with app.app_context():
        org = db.session.get(Organisation, organisation_id)
        try:
            # Stand-ins pushed to the sandbox registry: no image can be pulled from a
            # public registry here, so new services use these by default.
            info = Sandbox(app.config["SANDBOX_NAME"]).up(servers=2, bare=False, stand_ins=True)
            register_sandbox(org, info)
        except Exception as exc:  # the wizard shows it; nothing secret is in it
            db.session.rollback()
            org = db.session.get(Organisation, organisation_id)
            state = dict(org.onboarding_state or {})
            state["sandbox"] = {"status": "failed", "error": str(exc)[:500]}
            org.onboarding_state = state
            db.session.commit()
            raise
