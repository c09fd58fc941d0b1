"""Jinja filters shared by the templates."""
from __future__ import annotations

import datetime as dt

from jinja2 import pass_context
from markupsafe import Markup


def _ago(value: dt.datetime | None) -> str:
    if value is None:
        return "never"
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    seconds = int((now - value).total_seconds())
    if seconds < 60:
        return f"{max(seconds, 0)}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    if seconds < 86400:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"


def _age_seconds(value: dt.datetime | None) -> int:
    """Seconds since ``value`` (naive UTC), for the browser to keep counting from."""
    if value is None:
        return 0
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    return max(int((now - value).total_seconds()), 0)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m {int(seconds % 60)}s"


def _short_digest(value: str | None) -> str:
    if not value:
        return "none"
    if "@" in value:
        value = value.split("@", 1)[1]
    return value.replace("sha256:", "")[:12]


@pass_context
def _component(context, name: str, c) -> Markup:
    """``{{ component("environments/_variables.html", variables) }}``: an HTMX component's
    template with ``c`` and the page's context, as ``{% with c = ... %}{% include %}``
    gives it, rendered to one string first. Jinja hands every piece of an include's output
    up through each enclosing template's generator (a table of 150 rows is some 5,000
    pieces, passed through three levels); rendered here, the page takes it as one."""
    template = context.environment.get_template(name)
    return Markup(template.render({**context.get_all(), "c": c}))


def register_filters(app) -> None:
    app.jinja_env.globals["component"] = _component
    app.jinja_env.filters["ago"] = _ago
    app.jinja_env.filters["duration"] = _duration
    app.jinja_env.filters["age_seconds"] = _age_seconds
    app.jinja_env.filters["short_digest"] = _short_digest
