"""Organisation scoping: the one way views load objects, and the one place that says
which organisation a request works in.

`current_membership()` is the signed-in user's membership of the current organisation,
read from the database once per request (never cached in the session): the session only
names the organisation (``ks_org``), an API request works in its token's organisation.
A member who is removed loses the organisation at the next request.

`get_for_org_or_404(Model, id)` answers 404 unless the object belongs to the
current user's organisation, following the model's `org_path` relationships.
Every view that takes an id from a URL uses it, so one organisation can never
read another's objects by guessing ids.
"""
from __future__ import annotations

import re

import sqlalchemy as sa
from flask import abort, has_request_context, request, session
from flask_login import current_user

from app.extensions import db

ORG_SESSION_KEY = "ks_org"
_MEMBERSHIP_KEY = "keystone.membership"  # per request (request.environ), never across requests


def _wanted_org_id() -> int | None:
    from app.api.core import current_token, is_api_request
    if is_api_request():
        token = current_token()
        return token.organisation_id if token is not None else None
    return parse_id(session.get(ORG_SESSION_KEY))


def _load_membership(user):
    from sqlalchemy.orm import joinedload

    from app.models import Membership, Organisation
    # With each organisation (every page names the current one), its private key deferred.
    rows = db.session.execute(
        sa.select(Membership).where(Membership.user_id == user.id)
        .options(joinedload(Membership.organisation)
                 .defer(Organisation.management_key_private))
        .order_by(Membership.id)).scalars().all()
    if not rows:
        return None
    if has_request_context():
        from app.api.core import is_api_request
        wanted = _wanted_org_id()
        chosen = next((m for m in rows if m.organisation_id == wanted), None)
        if is_api_request():
            return chosen  # a token works in its own organisation or nowhere
        return chosen or rows[0]
    return rows[0]


def membership_of(user):
    """``user``'s membership of the organisation they work in: inside a request of that
    user, the current one; elsewhere (CLI, jobs) the first."""
    if has_request_context() and current_user and getattr(current_user, "id", None) == user.id \
            and current_user.is_authenticated:
        return current_membership()
    from app.models import Membership
    return db.session.execute(sa.select(Membership).where(Membership.user_id == user.id)
                              .order_by(Membership.id).limit(1)).scalar_one_or_none()


def current_membership():
    """The signed-in user's membership of the current organisation, or None."""
    if not has_request_context() or not current_user.is_authenticated:
        return None
    if _MEMBERSHIP_KEY not in request.environ:
        request.environ[_MEMBERSHIP_KEY] = _load_membership(current_user._get_current_object())
    return request.environ[_MEMBERSHIP_KEY]


def forget_current_membership() -> None:
    """After switching organisation or changing memberships within a request."""
    if has_request_context():
        request.environ.pop(_MEMBERSHIP_KEY, None)


def switch_organisation(org_id: int) -> bool:
    """Work in ``org_id`` from now on (the session remembers it), if the user is a member."""
    from app.models import Membership
    found = db.session.execute(sa.select(Membership.id).where(
        Membership.user_id == current_user.id,
        Membership.organisation_id == org_id)).first()
    if found is None:
        return False
    session[ORG_SESSION_KEY] = org_id
    forget_current_membership()
    return True


def current_org_id() -> int:
    membership = current_membership()
    if membership is None:
        abort(404)
    return membership.organisation_id


def org_query(model, org_id: int | None = None):
    """A select of `model` restricted to the organisation."""
    org_id = current_org_id() if org_id is None else org_id
    stmt = sa.select(model)
    if model.__tablename__ == "organisations":
        return stmt.where(model.id == org_id)
    current = model
    for rel_name in model.org_path:
        rel = getattr(current, rel_name)
        stmt = stmt.join(rel)
        current = rel.property.mapper.class_
    return stmt.where(current.organisation_id == org_id)


MAX_ID = 2**63 - 1  # the largest id the databases store (BIGINT / SQLite INTEGER)
_ID = re.compile(r"[0-9]{1,19}")


def parse_id(value) -> int | None:
    """An id from a URL, query or form value: ASCII digits within range, or None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value <= MAX_ID else None
    if not isinstance(value, str) or not _ID.fullmatch(value):
        return None
    number = int(value)
    return number if number <= MAX_ID else None


def get_for_org_or_404(model, object_id, org_id: int | None = None):
    object_id = parse_id(object_id)
    if object_id is None:
        abort(404)
    obj = db.session.execute(org_query(model, org_id).where(model.id == object_id)).scalar_one_or_none()
    if obj is None:
        abort(404)
    return obj


def get_child_or_404(parent, model, object_id, parent_key: str, org_id: int | None = None):
    """The ``model`` row ``object_id`` of the organisation that belongs to ``parent`` (loaded
    with :func:`get_for_org_or_404`): 404 unless ``row.<parent_key> == parent.id``.

    ``/environments/1/variables/7`` must not reach variable 7 of environment 2, even in the
    same organisation.
    """
    obj = get_for_org_or_404(model, object_id, org_id)
    if getattr(obj, parent_key) != parent.id:
        abort(404)
    return obj
