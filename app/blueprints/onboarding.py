"""The onboarding wizard: organisation -> servers -> repository -> registry ->
provisioning -> application -> services -> first deploy -> live."""
from __future__ import annotations

import redis
from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from rq import Queue

from app import onboarding
from app.extensions import db

bp = Blueprint("onboarding", __name__, url_prefix="/onboarding")


def _org():
    return current_user.organisation


# Pages a person lands on after a wizard step (verify, provision, deploy, ...): while
# onboarding is unfinished they name the next step and link back to the wizard.
NEXT_STEP_PAGES = frozenset({"dashboard.index", "applications.show", "servers.show",
                             "operations.show", "environments.show", "services.show",
                             "applications.build_settings"})


@bp.app_context_processor
def _next_step():
    def onboarding_next():
        """The wizard's next step while onboarding is unfinished, else None."""
        if not current_user.is_authenticated or request.endpoint not in NEXT_STEP_PAGES:
            return None
        return onboarding.current_step(onboarding.steps_for(_org()))
    return {"onboarding_next": onboarding_next}


@bp.route("/")
@login_required
def start():
    org = _org()
    steps = onboarding.steps_for(org)
    current = onboarding.current_step(steps)
    from app.sandbox import docker_available
    sandbox_state = (org.onboarding_state or {}).get("sandbox")
    context = onboarding.step_context(org)
    if current is not None and current.key == "services" and context["environments"]:
        from app.blueprints.environments import attachments_context, load_environment
        env = load_environment(context["environments"][0].id)
        context["attachments"] = attachments_context(env, next_target="onboarding")
    return render_template("onboarding/wizard.html", steps=steps, current=current,
                           sandbox_available=docker_available(), sandbox=sandbox_state,
                           live_url=onboarding.live_url(org) if current is None else None,
                           **context)


@bp.route("/sandbox/authorize/<int:application_id>", methods=["POST"])
@login_required
def authorize_sandbox_key(application_id):
    """The sandbox git host stands in for GitHub: add the deploy key there, read-only."""
    from app.models import Application
    from app.sandbox import Sandbox
    from app.scoping import get_for_org_or_404
    application = get_for_org_or_404(Application, application_id)
    state = (_org().onboarding_state or {}).get("sandbox") or {}
    if state.get("status") != "ready" or application.repository_url != state.get("repository_url"):
        flash("Only the sandbox's sample repository can be authorised from here.", "error")
        return redirect(url_for("onboarding.start"))
    Sandbox(current_app.config["SANDBOX_NAME"]).status().git.authorize_key(application.deploy_key_public)
    # The key is there: verify at once instead of asking for another click.
    from app.repositories import verify_access
    result = verify_access(application)
    db.session.commit()
    if result.ok:
        flash("Deploy key added to the sandbox git host (read-only) and access verified.",
              "success")
    else:
        flash(f"Deploy key added to the sandbox git host (read-only), but verifying failed: "
              f"{result.message}", "error")
    return redirect(url_for("applications.show", application_id=application.id))


@bp.route("/skip/<step>", methods=["POST"])
@login_required
def skip(step):
    try:
        onboarding.skip(_org(), step)
    except ValueError as exc:
        flash(str(exc), "error")
    return redirect(url_for("onboarding.start"))


@bp.route("/sandbox", methods=["POST"])
@login_required
def use_sandbox():
    from app.sandbox import docker_available
    org = _org()
    if not docker_available():
        flash("Docker is not available on this machine, so the sandbox cannot start. "
              "Install docker.io (Debian) or use a Hetzner or custom server.", "error")
        return redirect(url_for("onboarding.start"))
    state = dict(org.onboarding_state or {})
    state["sandbox"] = {"status": "starting"}
    org.onboarding_state = state
    db.session.commit()
    queue = Queue(current_app.config["RQ_QUEUE"],
                  connection=redis.Redis.from_url(current_app.config["REDIS_URL"]))
    queue.enqueue("app.jobs.sandbox.bring_up_sandbox", org.id, job_timeout=1800)
    return redirect(url_for("onboarding.start"))


@bp.route("/sandbox/status")
@login_required
def sandbox_status():
    state = (_org().onboarding_state or {}).get("sandbox")
    return render_template("onboarding/_sandbox.html", sandbox=state, sandbox_available=True)
