"""Web-tier protections set up once in create_app: session revocation and lifetime,
rate limits.

Sessions: the id flask-login stores is ``"<user id>:<session generation>"``; the
user loader refuses a session whose generation is stale, so bumping
``User.session_generation`` (logout, password change) ends every copy of every
cookie of that user at once. Each session also carries its sign-in time and
last-seen time (inside the signed cookie) and ends after SESSION_IDLE_MINUTES
without a request or SESSION_MAX_HOURS after sign-in.

Response headers: a Content-Security-Policy without inline script or style,
frame-ancestors 'none', nosniff, Referrer-Policy, HSTS when KEYSTONE_HTTPS=1.
ProxyFix only when KEYSTONE_TRUSTED_PROXIES names how many proxies to trust.

Rate limits (Flask-Limiter, counted in Keystone's Redis under the queue's name):
sign-in and sign-up per client address and per account (the email posted),
the custom-server check per user. Only failed sign-ins count against sign-in.
"""
from __future__ import annotations

import time
from datetime import timedelta

from flask import Flask, current_app, flash, g, render_template, request, session
from flask_login import current_user, logout_user, user_logged_in
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db, limiter, login_manager
from app.models import User
from app.scoping import parse_id

# Failed sign-ins per client address and per account; sign-ups per address and account;
# custom-server checks (a TCP/SSH probe of an address the user names) per user.
LOGIN_PER_ADDRESS = "20 per minute;200 per hour"
LOGIN_PER_ACCOUNT = "10 per minute;50 per hour"
SIGNUP_PER_ADDRESS = "10 per minute;30 per hour"
SIGNUP_PER_ACCOUNT = "5 per hour"
SERVER_CHECK_PER_USER = "10 per minute;60 per hour"
# Wrong two-factor codes (sign-in, enrolment, disabling) per account; sign-in's second step
# also counts against LOGIN_PER_ADDRESS. A code has 10**6 values, 3 of them valid at a time.
TWO_FACTOR_PER_ACCOUNT = "5 per minute;30 per hour"

SIGNED_IN_AT = "ks_signed_in_at"
LAST_SEEN_AT = "ks_last_seen_at"
SEEN_GRANULARITY = 60  # seconds: rewrite the cookie at most once a minute


def load_user(user_id: str):
    uid, sep, generation = (user_id or "").partition(":")
    if not sep or parse_id(uid) is None or parse_id(generation) is None:
        return None  # a session from before generations, or tampered: sign in again
    user = db.session.get(User, parse_id(uid))
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


def _scoped(key: str) -> str:
    # The prefix is per application (the limiter object is one per process; tests build
    # many applications in one process, each with its own queue name).
    return f"{current_app.config['RATELIMIT_KEY_PREFIX']}:{key}"


def client_address() -> str:
    """The rate-limit key of the client's address (as ProxyFix, if enabled, reports it)."""
    return _scoped(f"address:{request.remote_addr or '?'}")


def posted_account() -> str:
    """The rate-limit key of the account a sign-in/sign-up names (normalised email)."""
    email = (request.form.get("email") or "").strip().lower()[:254]
    return _scoped(f"account:{email}")


def pending_account() -> str:
    """The rate-limit key of the account halfway through signing in (password accepted,
    waiting for its second factor), else the client's address."""
    from app.two_factor import pending_user_id
    uid = pending_user_id()
    return _scoped(f"two_factor:{uid}") if uid is not None else client_address()


def two_factor_user_key() -> str:
    """The rate-limit key of a signed-in user's code attempts (shared with sign-in's)."""
    if current_user.is_authenticated:
        return _scoped(f"two_factor:{current_user.id}")
    return client_address()


def current_user_key() -> str:
    if current_user.is_authenticated:
        return _scoped(f"user:{current_user.id}")
    return client_address()


def failed_form(response) -> bool:
    """Count an attempt against the limit only when it did not succeed."""
    return response.status_code != 302


def failed_code(response) -> bool:
    """A code attempt that failed (a wrong code answers 4xx; success redirects or shows
    the recovery codes)."""
    return response.status_code >= 400


_DUMMY_HASH: list[str] = []


def burn_password_check(password: str) -> None:
    """Spend the time a real check takes, for an email with no account (no timing oracle)."""
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(generate_password_hash("keystone-no-such-user", method="scrypt"))
    check_password_hash(_DUMMY_HASH[0], password or "")


def storage_uri(redis_url: str) -> str:
    """REDIS_URL in the form the limits library reads (a unix socket is redis+unix)."""
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url[len("unix://"):]
    return redis_url


def _too_many(e):
    from app.api import http_error, is_api_request
    if is_api_request():
        return http_error(e)
    return render_template("errors/429.html"), 429


CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",            # the vendored htmx, its SSE extension and app.js
    "style-src 'self'",             # app.css only (htmx's inline indicator style is off)
    "img-src 'self' data:",
    "connect-src 'self'",           # htmx requests and the live-log event streams
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "object-src 'none'",
])
HSTS = "max-age=31536000"


def _security_headers(app: Flask):
    def add(response):
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "same-origin")
        if app.config.get("HTTPS"):
            headers.setdefault("Strict-Transport-Security", HSTS)
        headers.pop("Server", None)
        return response
    return add


def init_security(app: Flask) -> None:
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=app.config["SESSION_MAX_HOURS"])
    login_manager.user_loader(load_user)
    user_logged_in.connect(_mark_signed_in, app)
    app.before_request(_enforce_lifetime(app))
    app.config.setdefault("RATELIMIT_STORAGE_URI", storage_uri(app.config["REDIS_URL"]))
    app.config.setdefault("RATELIMIT_KEY_PREFIX", f"{app.config['RQ_QUEUE']}:limits")
    # Redis away for a moment: count in memory rather than refuse every sign-in.
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    limiter.init_app(app)
    app.register_error_handler(429, _too_many)
    app.after_request(_security_headers(app))
    if app.config.get("TRUSTED_PROXIES"):
        from werkzeug.middleware.proxy_fix import ProxyFix
        n = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)
