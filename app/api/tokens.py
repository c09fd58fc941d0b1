"""Personal access tokens: create (shown once), authenticate, revoke.

A token is ``kst_`` + 43 URL-safe characters (256 random bits). The database
keeps its SHA-256 only; authentication hashes what the client presents and
looks the hash up (an indexed equality, so no timing oracle on the stored
value), then checks revocation, expiry, that the user is still active and
still in the token's organisation. A token acts as its user: what the user's
organisation holds, limited by the token's scopes and by the user's role.

Scopes nest: ``admin`` includes ``deploy``, which includes ``read``.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

import sqlalchemy as sa

from app.extensions import db
from app import audit
from app.models import ApiToken, Membership, User
from app.models.base import utcnow
from app.policy import TOKEN_SCOPE_PERMISSION, role_allows

PREFIX = "kst_"
SCOPES = ("read", "deploy", "admin")
IMPLIES = {"admin": {"admin", "deploy", "read"}, "deploy": {"deploy", "read"}, "read": {"read"}}
EXPIRY_DAYS = (7, 30, 90, 365)  # or None: never
TOKEN_RE = re.compile(r"kst_[A-Za-z0-9_-]{43}")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}")
# last_used_at is rewritten at most this often (a busy CI token would write on every call).
TOUCH_EVERY = dt.timedelta(minutes=1)


class TokenError(ValueError):
    pass


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def membership(user: User, organisation_id: int) -> Membership | None:
    return next((m for m in user.memberships if m.organisation_id == organisation_id), None)


def allowed_scopes(user: User, organisation_id: int | None = None) -> tuple[str, ...]:
    """The scopes the user's role in the organisation (default: the current one) lets them
    put on a token (app.policy.TOKEN_SCOPE_PERMISSION)."""
    if organisation_id is None:
        org = user.organisation
        organisation_id = org.id if org is not None else None
    m = membership(user, organisation_id) if organisation_id is not None else None
    if m is None:
        return ()
    return tuple(s for s in SCOPES if role_allows(m.role, TOKEN_SCOPE_PERMISSION[s]))


def create_token(user: User, name: str, scopes,
                 expires_in_days: int | None) -> tuple[ApiToken, str]:
    """(row, the token itself). The caller shows the token once; only its hash is kept."""
    name = (name or "").strip()
    if not NAME_RE.fullmatch(name):
        raise TokenError("Name the token: 1-100 letters, digits, spaces, dots, dashes or "
                         "underscores, starting with a letter or digit.")
    scopes = [s for s in SCOPES if s in set(scopes or ())]
    if not scopes:
        raise TokenError("Choose at least one scope.")
    allowed = allowed_scopes(user)
    refused = [s for s in scopes if s not in allowed]
    if refused:
        raise TokenError(f"Your role cannot grant the {', '.join(refused)} scope.")
    if expires_in_days is not None and expires_in_days not in EXPIRY_DAYS:
        raise TokenError("Choose an expiry from the list.")
    token = PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = ApiToken(organisation_id=user.organisation.id, user_id=user.id, name=name,
                   prefix=token[:12], token_hash=hash_token(token), scopes=scopes,
                   expires_at=(now + dt.timedelta(days=expires_in_days)
                               if expires_in_days is not None else None))
    db.session.add(row)
    db.session.flush()
    audit.record("api_token.create", row, {"name": name, "prefix": row.prefix,
                                           "scopes": scopes, "expires_in_days": expires_in_days},
                 target_type="api_token", user=user)
    db.session.commit()
    return row, token


def is_usable(row: ApiToken, now: dt.datetime | None = None) -> bool:
    now = now or utcnow()
    return row.revoked_at is None and (row.expires_at is None or row.expires_at > now)


def authenticate(presented: str | None) -> ApiToken | None:
    """The live token row for a presented token, or None (unknown, revoked, expired, or its
    user inactive or no longer in the organisation)."""
    if not presented or not TOKEN_RE.fullmatch(presented):
        return None
    row = db.session.execute(sa.select(ApiToken).where(
        ApiToken.token_hash == hash_token(presented))).scalar_one_or_none()
    if row is None or not is_usable(row):
        return None
    user = row.user
    if user is None or not user.is_active or membership(user, row.organisation_id) is None:
        return None
    return row


def effective_scopes(row: ApiToken) -> set[str]:
    """The token's scopes (expanded), limited by what the user's role allows today."""
    allowed = set(allowed_scopes(row.user, row.organisation_id))
    out: set[str] = set()
    for scope in row.scopes or ():
        out |= IMPLIES.get(scope, set())
    return out & allowed


def touch(row: ApiToken, address: str | None) -> None:
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY \
            or row.last_used_address != address:
        row.last_used_at = now
        row.last_used_address = (address or "")[:64] or None
        db.session.commit()


def revoke(row: ApiToken) -> None:
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record("api_token.revoke", row, {"name": row.name, "prefix": row.prefix},
                     target_type="api_token")
        db.session.commit()


def tokens_of(user: User) -> list[ApiToken]:
    return db.session.execute(sa.select(ApiToken).where(ApiToken.user_id == user.id)
                              .order_by(ApiToken.id.desc())).scalars().all()
