"""Sign-up: an organisation and its owner, created together or not at all."""
from __future__ import annotations

import re

import sqlalchemy as sa
from flask import current_app

from app.extensions import db
from app.models import Membership, MembershipRole, Organisation, User


class SignupError(ValueError):
    pass


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]
    return slug or "org"


def unique_slug(name: str) -> str:
    base = slugify(name)
    slug, n = base, 1
    while db.session.execute(sa.select(Organisation.id).where(Organisation.slug == slug)).first():
        n += 1
        slug = f"{base}-{n}"
    return slug


def signup_open() -> bool:
    """Web sign-up is open for the instance's first account, then only with
    KEYSTONE_OPEN_SIGNUP=1. (``keystone create-user`` is the operator's and not limited.)"""
    if current_app.config.get("OPEN_SIGNUP"):
        return True
    return db.session.execute(sa.select(User.id).limit(1)).first() is None


def new_user(*, email: str, password: str, name: str = "") -> User:
    """A user not yet committed (the caller adds a membership: sign-up or an invitation)."""
    email = email.strip().lower()
    if db.session.execute(sa.select(User.id).where(User.email == email)).first():
        raise SignupError("An account with this email already exists. Sign in instead.")
    if len(password) < 10:
        raise SignupError("Use at least 10 characters.")
    user = User(email=email, name=name.strip())
    user.set_password(password)
    db.session.add(user)
    return user


def create_account(*, organisation: str, email: str, password: str, name: str = "") -> User:
    user = new_user(email=email, password=password, name=name)
    org = Organisation(name=organisation.strip(), slug=unique_slug(organisation))
    db.session.add_all([org, user, Membership(organisation=org, user=user,
                                              role=MembershipRole.OWNER)])
    db.session.commit()
    return user
