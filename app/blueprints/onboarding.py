"""The onboarding wizard: organisation -> servers -> repository -> registry ->
provisioning -> application -> services -> first deploy -> live.

Bringing the sandbox up (``sandbox_start``) and adding the deploy key to its git
host (``repository_verify`` with ``sandbox_key``) are operations with a live
log: the views start them and the pages poll a small component.
"""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from app import onboarding
from app.models.enums import OperationKind
from app.operations.lifecycle import latest_operation, start_or_join
from app.policy import requires

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
@requires("read")
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
    if current is not None and current.key == "repository" and not context["apps_unverified"]:
        context["app_form"] = _sample_application_form(org)
    return render_template("onboarding/wizard.html", steps=steps, current=current,
                           sandbox_available=docker_available(), sandbox=sandbox_state,
                           sandbox_op=_sandbox_op(org),
                           live_url=onboarding.live_url(org) if current is None else None,
                           fingerprint=onboarding.fingerprint(org),
                           **context)


def _sample_application_form(org):
    """The new-application form, right in the wizard: on the sandbox it is filled in with the
    sample repository, so creating it is one click (the key is authorised on creation)."""
    import sqlalchemy as sa

    from app.blueprints.applications import ApplicationForm, sandbox_repository_url
    from app.extensions import db
    from app.models import Application
    form = ApplicationForm(formdata=None)
    url = sandbox_repository_url()
    if url:
        form.repository_url.data = url
        taken = db.session.execute(sa.select(Application.id).where(
            Application.organisation_id == org.id, Application.name == "sample")).first()
        if not taken:
            form.name.data = "sample"
    return form


@bp.route("/watch")
@requires("read")
def watch():
    """Polled by the open wizard: reload it (``HX-Refresh``) when what it shows has changed,
    so it continues on its own when an operation it waits for ends."""
    from flask import make_response
    response = make_response("", 200)
    if request.args.get("v") != onboarding.fingerprint(_org()):
        response.headers["HX-Refresh"] = "true"
    return response


@bp.route("/sandbox/authorize/<int:application_id>", methods=["POST"])
@requires("resources.manage")
def authorize_sandbox_key(application_id):
    """The sandbox git host stands in for GitHub: add the deploy key there, read-only, then
    verify at once (one ``repository_verify`` operation; the access component shows it)."""
    from app.blueprints.applications import start_verify
    from app.models import Application
    from app.scoping import get_for_org_or_404
    application = get_for_org_or_404(Application, application_id)
    state = (_org().onboarding_state or {}).get("sandbox") or {}
    if state.get("status") != "ready" or application.repository_url != state.get("repository_url"):
        flash("Only the sandbox's sample repository can be authorised from here.", "error")
        return redirect(url_for("onboarding.start"))
    op = start_verify(application, sandbox_key=True)
    flash(f"Keystone is adding the key to the sandbox's git host, then verifying access "
          f"(operation #{op.id}).", "success")
    return redirect(url_for("applications.show", application_id=application.id))


@bp.route("/skip/<step>", methods=["POST"])
@requires("resources.manage")
def skip(step):
    try:
        onboarding.skip(_org(), step)
    except ValueError as exc:
        flash(str(exc), "error")
    return redirect(url_for("onboarding.start"))


@bp.route("/sandbox", methods=["POST"])
@requires("resources.manage")
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
    # start_or_join commits the state together with the operation row.
    start_or_join(OperationKind.SANDBOX_START, target_type="organisation", target_id=org.id,
                  organisation_id=org.id, user=current_user,
                  summary="Bring up the local sandbox")
    return redirect(url_for("onboarding.start"))


def _sandbox_op(org):
    return latest_operation(OperationKind.SANDBOX_START, "organisation", org.id, org.id)


@bp.route("/sandbox/status")
@requires("read")
def sandbox_status():
    org = _org()
    state = (org.onboarding_state or {}).get("sandbox")
    return render_template("onboarding/_sandbox.html", sandbox=state, sandbox_available=True,
                           sandbox_op=_sandbox_op(org))
