"""Two-factor sign-in: TOTP (RFC 6238, pyotp) and single-use recovery codes.

Enrolment: a new secret is kept (encrypted) on the user while they scan the QR
code; a correct code confirms it (``totp_enabled_at``) and yields 10 recovery
codes, shown once and stored as SHA-256 hashes (app.models.two_factor).

Verification accepts the code of the current 30-second step and of one step
either side (clock drift); a step is accepted once (``totp_last_step`` moves
forward by a compare-and-set UPDATE), so a code seen over a shoulder cannot be
replayed. A recovery code is consumed by a compare-and-set UPDATE too: it works
exactly once, even for two requests at the same moment.

The secret and the codes never reach a log line or an audit event.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import time

import pyotp
import segno
import sqlalchemy as sa
from markupsafe import Markup

from app.extensions import db
from app.models import Membership, Organisation, RecoveryCode, User
from app.models.base import utcnow

ISSUER = "Keystone"
STEP = 30                   # seconds per TOTP step
VALID_WINDOW = 1            # steps accepted either side of the current one
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off paper
_TOTP_RE = re.compile(r"[0-9]{6}")
_RECOVERY_RE = re.compile(r"[A-Z0-9]{16}")


class TwoFactorError(Exception):
    """A code was wrong (the message is safe to show)."""


# --------------------------------------------------------------------------- TOTP

def new_secret() -> str:
    return pyotp.random_base32()  # 160 bits, base32 (what authenticator apps take)


def provisioning_uri(user: User, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)


def qr_svg(uri: str) -> Markup:
    """The QR code of ``uri`` as inline SVG (no script, no style attribute: the CSP
    allows it; dark modules on a white quiet zone so it scans on a dark page too)."""
    svg = segno.make(uri, error="m").svg_inline(scale=5, border=4, dark="#000", light="#fff",
                                                title="Two-factor QR code")
    return Markup(svg)  # generated from the URI's bits: no text of the user is in it


def normalise(code: str | None) -> str:
    return re.sub(r"[\s-]", "", code or "").upper()


def _matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step ``code`` belongs to (within the window), or None."""
    if not _TOTP_RE.fullmatch(code):
        return None
    totp = pyotp.TOTP(secret, interval=STEP)
    now = time.time() if now is None else now
    current = int(now // STEP)
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if secrets.compare_digest(totp.at(step * STEP), code):
            return step
    return None


def check_totp(user: User, code: str, now: float | None = None) -> bool:
    """True once per step for a correct code of the user's confirmed secret."""
    code = normalise(code)
    if user.totp_secret is None or user.totp_enabled_at is None:
        return False
    step = _matching_step(user.totp_secret, code, now)
    if step is None:
        return False
    users = User.__table__
    done = db.session.execute(
        sa.update(users).where(users.c.id == user.id,
                               sa.or_(users.c.totp_last_step.is_(None),
                                      users.c.totp_last_step < step))
        .values(totp_last_step=step))
    db.session.commit()
    db.session.refresh(user)
    return done.rowcount == 1


# --------------------------------------------------------------------------- recovery codes

def hash_code(code: str) -> str:
    return hashlib.sha256(normalise(code).encode()).hexdigest()


def _new_recovery_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(16))  # 80 bits
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def replace_recovery_codes(user: User) -> list[str]:
    """Forget the user's recovery codes and make 10 new ones (returned once; the caller
    commits)."""
    db.session.execute(sa.delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
    for code in codes:
        db.session.add(RecoveryCode(user_id=user.id, code_hash=hash_code(code)))
    db.session.flush()
    return codes


def use_recovery_code(user: User, code: str) -> bool:
    """Consume one unused recovery code of ``user``; True exactly once per code."""
    code = normalise(code)
    if user.totp_enabled_at is None or not _RECOVERY_RE.fullmatch(code):
        return False
    done = db.session.execute(
        sa.update(RecoveryCode).where(RecoveryCode.user_id == user.id,
                                      RecoveryCode.code_hash == hash_code(code),
                                      RecoveryCode.used_at.is_(None))
        .values(used_at=utcnow()))
    db.session.commit()
    return done.rowcount == 1


def recovery_codes_left(user: User) -> int:
    return db.session.execute(
        sa.select(sa.func.count()).select_from(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))).scalar() or 0


def verify(user: User, code: str) -> str | None:
    """``"totp"`` or ``"recovery"`` for an accepted code (consumed), else None."""
    if check_totp(user, code):
        return "totp"
    if use_recovery_code(user, code):
        return "recovery"
    return None


# --------------------------------------------------------------------------- enrol / disable

def start_enrolment(user: User) -> str:
    """The pending secret (a new one unless enrolment is under way; the caller commits)."""
    if user.totp_enabled_at is not None:
        raise TwoFactorError("Two-factor sign-in is on already.")
    if not user.totp_secret:
        user.totp_secret = new_secret()
    return user.totp_secret


def confirm_enrolment(user: User, code: str, now: float | None = None) -> list[str]:
    """Turn two-factor on when ``code`` matches the pending secret; the recovery codes."""
    if user.totp_enabled_at is not None:
        raise TwoFactorError("Two-factor sign-in is on already.")
    if not user.totp_secret:
        raise TwoFactorError("Start again: the enrolment expired.")
    step = _matching_step(user.totp_secret, normalise(code), now)
    if step is None:
        raise TwoFactorError("That code is not right. Check the time on your phone and "
                             "type the 6 digits your app shows now.")
    user.totp_enabled_at = utcnow()
    user.totp_last_step = step
    return replace_recovery_codes(user)


def disable(user: User) -> None:
    """Turn two-factor off (the caller checked a code and commits)."""
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    db.session.execute(sa.delete(RecoveryCode).where(RecoveryCode.user_id == user.id))


def required_for_org(user: User) -> bool:
    """An organisation of the user requires two-factor sign-in (the strictest one counts).

    One EXISTS query: every request of a member without two-factor asks it."""
    return bool(db.session.execute(sa.select(sa.exists().where(
        Membership.user_id == user.id, Membership.organisation_id == Organisation.id,
        Organisation.require_two_factor.is_(True)))).scalar())


def required_for(user: User) -> bool:
    """The user must enrol before doing anything else (required, not enrolled)."""
    return user.totp_enabled_at is None and required_for_org(user)


# --------------------------------------------------------------------------- sign-in's second step

PENDING = "ks_two_factor_pending"   # in the (signed) session cookie: ids and a time, no secret
PENDING_SECONDS = 300               # the code must follow the password within 5 minutes


def begin_pending(user: User, next_url: str | None) -> None:
    from flask import session
    session[PENDING] = {"uid": user.id, "gen": user.session_generation or 0,
                        "at": int(time.time()), "next": (next_url or "")[:2000]}


def pending_user_id() -> int | None:
    from flask import session
    state = session.get(PENDING)
    if not isinstance(state, dict) or not isinstance(state.get("uid"), int):
        return None
    return state["uid"]


def pending_user() -> tuple[User | None, str]:
    """The user whose password was accepted (still valid, within the time), and ``next``."""
    from flask import session
    state = session.get(PENDING)
    if not isinstance(state, dict):
        return None, ""
    uid, gen, at = state.get("uid"), state.get("gen"), state.get("at")
    if not all(isinstance(v, int) for v in (uid, gen, at)) \
            or time.time() - at > PENDING_SECONDS:
        session.pop(PENDING, None)
        return None, ""
    user = db.session.get(User, uid)
    if user is None or (user.session_generation or 0) != gen or not user.is_active \
            or user.totp_enabled_at is None:
        session.pop(PENDING, None)
        return None, ""
    return user, str(state.get("next") or "")


def end_pending() -> None:
    from flask import session
    session.pop(PENDING, None)
