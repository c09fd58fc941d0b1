"""Push to deploy: the public webhook route and the environment's webhook panel.

``POST /hooks/deploy/<token>``: no session, no CSRF token (a forge cannot send one), a
rate limit per address and per hook; the HMAC signature is the only credential
(app.hooks.signatures). It answers JSON, never a 500: 404 unknown hook, 401 bad or missing
signature, 400 unreadable body, 413 too big, 202 with the reason for what does not deploy
(another branch, another event, a replayed delivery, coalesced into the follow-up deploy),
409 when the deploy is blocked.
"""
from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Blueprint, jsonify, render_template, request


from app.blueprints.environments.page import load_environment
from app.extensions import csrf, db, limiter
from app.forms import ActionForm
from app.hooks import service as hooks
from app.hooks.signatures import Refused, parse_push, verify
from app.models import DeployHook
from app.policy import requires

log = logging.getLogger(__name__)

bp = Blueprint("hooks", __name__)

MAX_BODY = 5 * 1024 * 1024  # GitHub caps push payloads at 25 MB; a push of a few commits is KBs
HOOK_RATE = "120 per minute"


def _hook_key() -> str:
    from app.security import _scoped
    token = (request.view_args or {}).get("token", "")[:64]
    return _scoped(f"deploy-hook:{token}")


def _answer(status: int, outcome: str, reason: str, **extra):
    return jsonify({"outcome": outcome, "reason": reason, **extra}), status


@bp.route("/hooks/deploy/<token>", methods=["POST"])
@requires("public")
@csrf.exempt
@limiter.limit(HOOK_RATE, key_func=_hook_key)
@limiter.limit("600 per minute")
def receive(token: str):
    try:
        return _receive(token)
    except Exception:  # never a 500 (and never the exception's text) to a sender
        db.session.rollback()
        log.warning("deploy hook %s: unexpected error", token[:8], exc_info=True)
        return _answer(503, "error", "Keystone could not handle the delivery; retry it.")


def _receive(token: str):
    if len(token) > 64:
        return _answer(404, "unknown", "No such webhook.")
    hook = db.session.execute(sa.select(DeployHook).where(DeployHook.token == token)) \
        .scalar_one_or_none()
    if hook is None or not hook.enabled:
        return _answer(404, "unknown", "No such webhook (or it is turned off).")
    if (request.content_length or 0) > MAX_BODY:
        return _answer(413, "refused", "The body is too large.")
    body = request.get_data(cache=False)
    if len(body) > MAX_BODY:
        return _answer(413, "refused", "The body is too large.")
    try:
        delivery = verify(request.headers, body, hook.secret)
    except Refused as exc:
        return _answer(exc.status, "refused", exc.reason)
    row = hooks.record_delivery(hook, delivery.source, delivery.delivery_id, delivery.event)
    if row is None:
        return _answer(202, "replay", f"Delivery {delivery.delivery_id} was already received: "
                                      "ignored.")
    if delivery.event == "ping":
        return _done(row, 200, "ignored", "pong: the webhook is set up.")
    if delivery.event != "push":
        return _done(row, 202, "ignored", f"A {delivery.event!r} event does not deploy "
                                          "(only push does).")
    try:
        push = parse_push(body)
    except Refused as exc:
        return _done(row, exc.status, "ignored", exc.reason)
    answer = hooks.accept_push(hook, row, push.ref, push.after)
    return jsonify(answer.json()), answer.status


def _done(row, status: int, outcome: str, reason: str):
    row.outcome, row.reason = outcome, reason[:255]
    db.session.commit()
    return _answer(status, outcome, reason)


# --------------------------------------------------------------------------- the panel

def _panel(env, secret: str = "", message: str | None = None, status: int = 200):
    hook = hooks.hook_of(env)
    ctx = {"env": env, "hook": hook, "secret": secret, "message": message,
           "url": hooks.webhook_url(hook) if hook else None,
           "deliveries": list(hook.deliveries[:10]) if hook else [],
           "form": ActionForm(formdata=None)}
    template = "hooks/_panel.html" if request.htmx else "hooks/panel.html"
    # A response that shows a secret is never stored by a browser or proxy.
    return render_template(template, c=ctx), status, {"Cache-Control": "no-store"}


@bp.route("/environments/<int:environment_id>/deploy-hook")
@requires("read")
def panel(environment_id: int):
    return _panel(load_environment(environment_id))


@bp.route("/environments/<int:environment_id>/deploy-hook", methods=["POST"])
@requires("resources.manage")
def change(environment_id: int):
    env = load_environment(environment_id)
    form = ActionForm()
    if not form.validate_on_submit():
        return _panel(env, message="The form expired: reload the page.", status=400)
    action = request.form.get("action", "")
    hook = hooks.hook_of(env)
    if action == "enable":
        hook, secret = hooks.enable(env)
        return _panel(env, secret=secret, message="Push to deploy is on." + (
            " Copy the secret now: it is not shown again." if secret else ""))
    if hook is None:
        return _panel(env, message="Turn the webhook on first.", status=400)
    if action == "rotate":
        secret = hooks.rotate(hook)
        return _panel(env, secret=secret, message="New URL and secret: update the forge's "
                                                  "webhook. The old ones no longer work.")
    if action == "disable":
        hooks.disable(hook)
        return _panel(env, message="Push to deploy is off.")
    return _panel(env, message="Unknown action.", status=400)
