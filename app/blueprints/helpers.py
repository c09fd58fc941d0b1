"""Small helpers the views share. Whether a request came from HTMX is htmx-flask's
``request.htmx`` (true when ``HX-Request: true``); nothing else asks the header."""
from __future__ import annotations

import functools

import sqlalchemy as sa
from flask import Response, redirect, render_template, request

from app.extensions import db
from app.models import Operation
from app.scoping import current_org_id


def hx_redirect(url: str):
    """Send the browser to ``url``: an ``HX-Redirect`` for HTMX, else a plain redirect."""
    if request.htmx:
        return Response(status=204, headers={"HX-Redirect": url})
    return redirect(url)


def component_or_page(component: str, page: str, ctx: dict, status: int = 200,
                      headers: dict | None = None):
    """A component for HTMX (always 2xx: htmx swaps only those, the errors are inside it),
    the whole page otherwise, with ``status``."""
    if request.htmx:
        return render_template(component, c=ctx), 200, headers or {}
    return render_template(page, c=ctx), status, headers or {}


NO_STORE = {"Cache-Control": "no-store"}   # a page that may show a secret once


def latest_operations(target_type: str, ids) -> dict[int, Operation]:
    """The newest top-level operation per target id, for the organisation."""
    ids = [i for i in ids if i]
    if not ids:
        return {}
    rows = db.session.execute(_latest_operations_query(), {
        "target_type": target_type, "ids": ids, "org_id": current_org_id()}).scalars().all()
    return {op.target_id: op for op in rows}  # the last one per target wins


@functools.cache
def _latest_operations_query():
    """:func:`latest_operations`' statement, built once (the environment page asks for its
    50 slices on every view); the target type, ids and organisation are bound per call."""
    # Found by target first (ix_operations_target), then checked: on the organisation and
    # top-level conditions SQLite's planner would choose their index instead and read all
    # the organisation's operations (20,000 in bench.dashboard, 5 ms) to find a few.
    targets = sa.select(Operation.id).where(
        Operation.target_type == sa.bindparam("target_type", type_=sa.String),
        Operation.target_id.in_(sa.bindparam("ids", expanding=True)))
    return (sa.select(Operation).where(
        Operation.id.in_(targets),
        Operation.organisation_id == sa.bindparam("org_id", type_=sa.Integer),
        Operation.parent_id.is_(None)).order_by(Operation.id))
