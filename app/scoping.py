"""Organisation scoping: the one way views load objects.

`get_for_org_or_404(Model, id)` answers 404 unless the object belongs to the
current user's organisation, following the model's `org_path` relationships.
Every view that takes an id from a URL uses it, so one organisation can never
read another's objects by guessing ids.
"""
from __future__ import annotations

import re

import sqlalchemy as sa
from flask import abort
from flask_login import current_user

from app.extensions import db


def current_org_id() -> int:
    org = current_user.organisation if current_user.is_authenticated else None
    if org is None:
        abort(404)
    return org.id


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
