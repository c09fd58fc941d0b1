"""Web-tier protections set up once in create_app: session revocation and lifetime.

Sessions: the id flask-login stores is ``"<user id>:<session generation>"``; the
user loader refuses a session whose generation is stale, so bumping
``User.session_generation`` (logout, password change) ends every copy of every
cookie of that user at once. Each session also carries its sign-in time and
last-seen time (inside the signed cookie) and ends after SESSION_IDLE_MINUTES
without a request or SESSION_MAX_HOURS after sign-in.
"""
from __future__ import annotations

import time
from datetime import timedelta

from flask import Flask, flash, g, session
from flask_login import logout_user, user_logged_in

from app.extensions import db, login_manager

SIGNED_IN_AT = "ks_signed_in_at"
LAST_SEEN_AT = "ks_last_seen_at"
SEEN_GRANULARITY = 60  # seconds: rewrite the cookie at most once a minute


def load_user(user_id: str):
    from app.models import User
    uid, sep, generation = (user_id or "").partition(":")
    if not sep or not uid.isdigit() or not generation.isdigit() or len(uid) > 18:
        return None  # a session from before generations, or tampered: sign in again
    user = db.session.get(User, int(uid))
    if user is None or str(user.session_generation or 0) != generation:
        return None
    return user


def _mark_signed_in(_app, user, **_extra) -> None:
    now = int(time.time())
    session.permanent = True
    session[SIGNED_IN_AT] = now
    session[LAST_SEEN_AT] = now


def _enforce_lifetime(app: Flask):
    def check():
        # The user is loaded afresh for each request, even when a caller (a test) keeps
        # one application context across requests: a revoked session must not linger.
        g.pop("_login_user", None)
        if "_user_id" not in session:
            return None
        now = int(time.time())
        signed_in, seen = session.get(SIGNED_IN_AT), session.get(LAST_SEEN_AT)
        idle = app.config["SESSION_IDLE_MINUTES"] * 60
        absolute = app.config["SESSION_MAX_HOURS"] * 3600
        if (not isinstance(signed_in, int) or not isinstance(seen, int)
                or now - seen > idle or now - signed_in > absolute):
            logout_user()
            session.pop(SIGNED_IN_AT, None)
            session.pop(LAST_SEEN_AT, None)
            flash("Your session has ended. Please sign in again.", "info")
            return None
        if now - seen >= SEEN_GRANULARITY:
            session[LAST_SEEN_AT] = now
        return None
    return check


def init_security(app: Flask) -> None:
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=app.config["SESSION_MAX_HOURS"])
    login_manager.user_loader(load_user)
    user_logged_in.connect(_mark_signed_in, app)
    app.before_request(_enforce_lifetime(app))
