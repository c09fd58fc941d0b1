"""The API blueprint's plumbing: token authentication, scopes, JSON errors with a stable
code, pagination, JSON bodies, the per-token rate limit, and :func:`route`, which
registers a view together with what the OpenAPI document (app.api.spec) says about it.

Authentication is by ``Authorization: Bearer <token>`` only; the session cookie is
never read here. CSRF: the blueprint is exempt from the app-wide check, and
:func:`authenticate_request` runs the check itself for any state-changing request
that is not token-authenticated, so only token requests skip it.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask import Blueprint, current_app, g, jsonify, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from app.api import tokens
from app.extensions import csrf, db, limiter
from app.scoping import parse_id

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 25
MAX_PAGE = 10**9
DEFAULT_RATE = "600 per minute;10000 per hour"
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}

# Stable error codes (documented in docs/api.md): HTTP status -> default code.
CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 406: "not_acceptable", 409: "conflict",
         413: "too_large", 415: "unsupported_media_type", 422: "unprocessable",
         429: "rate_limited", 500: "internal_error"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_response(status: int, code: str, message: str, details: dict | None = None,
                   headers: dict | None = None):
    body = {"error": {"code": code, "message": message}}
    if details:
        body["error"]["details"] = details
    resp = jsonify(body)
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def is_api_request() -> bool:
    return request.path == "/api/v1" or request.path.startswith("/api/v1/")


def http_error(e: HTTPException):
    """An HTTP error on an /api/v1 path as JSON (the app's HTML handlers call this)."""
    status = e.code or 500
    if status == 405 and _no_such_object(e):
        return error_response(404, "not_found", "No such object.")
    code = getattr(e, "api_code", None) or CODES.get(status, "error")
    headers = {}
    if status == 429:
        headers["Retry-After"] = str(_retry_after())
        message = "Too many requests with this token: retry after Retry-After seconds."
    elif status == 405:
        message = "This method is not allowed on this path."
        headers["Allow"] = ", ".join(sorted(e.valid_methods or [])) if getattr(
            e, "valid_methods", None) else ""
        if not headers["Allow"]:
            headers.pop("Allow")
    elif status == 400 and isinstance(e, CSRFError):
        code, message = "csrf_failed", ("A request without a token must carry a CSRF token; "
                                        "send Authorization: Bearer <token> instead.")
    else:
        message = e.description if status < 500 else "Internal error."
    return error_response(status, code, message, headers=headers)


def _no_such_object(e) -> bool:
    """Werkzeug answers 405 when another method's rule has the same shape, even if an id in
    the path is out of range for every rule: that is a 404."""
    from werkzeug.exceptions import NotFound
    adapter = current_app.url_map.bind_to_environ(request.environ)
    for method in (e.valid_methods or []):
        try:
            adapter.match(request.path, method=method)
        except NotFound:
            return True
        except HTTPException:
            continue
        return False
    return False


def _retry_after() -> int:
    try:
        current = limiter.current_limit
        if current is not None:
            import time
            return max(1, math.ceil(current.reset_at - time.time()))
    except Exception:  # noqa: BLE001 - the header is a courtesy
        pass
    return 60


@bp.errorhandler(ApiError)
def _api_error(e: ApiError):
    return error_response(e.status, e.code, e.message, e.details)


# --------------------------------------------------------------------------- auth

def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


_TOKEN_KEY = "keystone.api_token"
_SCOPES_KEY = "keystone.api_scopes"


def current_token():
    """The authenticated token row of this request (cached on the request: ``g`` may
    outlive a request when a caller keeps one application context), or None."""
    if _TOKEN_KEY not in request.environ:
        request.environ[_TOKEN_KEY] = tokens.authenticate(bearer_token())
    return request.environ[_TOKEN_KEY]


def current_scopes() -> set[str]:
    return request.environ.get(_SCOPES_KEY) or set()


def rate_key() -> str:
    """Rate-limit bucket: the token (one per token), else the client's address."""
    from app.security import _scoped, client_address
    row = current_token() if is_api_request() else None
    return _scoped(f"token:{row.id}") if row is not None else client_address()


def rate_limit() -> str:
    return current_app.config.get("API_RATE_LIMIT") or DEFAULT_RATE


# Once per process (the limiter and the blueprint are module-level): the app-wide CSRF
# check skips the blueprint (authenticate_request applies it to requests without a
# token), and one shared bucket per token covers every API route.
csrf.exempt(bp)
limiter.shared_limit(rate_limit, scope="api", key_func=rate_key)(bp)


@bp.before_request
def authenticate_request():
    row = current_token()
    if row is None:
        if request.method in STATE_CHANGING:
            csrf.protect()  # a cookie-carrying browser request is CSRF-checked like any form
        if request.endpoint == "api.openapi":
            return None  # the document is public
        raise ApiError(401, "unauthorized", "Send a valid token: Authorization: Bearer <token> "
                                            "(create one under Settings, API tokens).")
    from app.two_factor import required_for
    if required_for(row.user):
        raise ApiError(403, "two_factor_required",
                       "Your organisation requires two-factor sign-in: enrol in Keystone "
                       "(Account, Two-factor) before using the API.")
    # The token acts as its user for this request only (no session is written).
    g._login_user = row.user
    request.environ[_SCOPES_KEY] = tokens.effective_scopes(row)
    tokens.touch(row, request.remote_addr)
    return None


def require_scope(scope: str) -> None:
    if scope not in current_scopes():
        raise ApiError(403, "insufficient_scope", f"This token lacks the {scope!r} scope.")


# --------------------------------------------------------------------------- docs + routes

@dataclass
class Doc:
    rule: str
    method: str
    endpoint: str
    summary: str
    tag: str
    scope: str | None
    responses: dict = field(default_factory=dict)  # status -> (description, schema|None, mime)
    query: list = field(default_factory=list)      # (name, schema, description)
    body: dict | None = None
    description: str = ""


DOCS: list[Doc] = []
PAGINATION_QUERY = [
    ("page", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1},
     "Page number, from 1."),
    ("per_page", {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE,
                  "default": DEFAULT_PER_PAGE}, "Items per page (at most 100)."),
]


def require_permission(permission: str) -> None:
    """The member's role must hold ``permission`` (app.policy.MATRIX), whatever the scope."""
    from app.policy import can
    if not can(permission):
        raise ApiError(403, "forbidden", f"Your role in this organisation lacks the "
                                         f"{permission!r} permission.")


def route(rule: str, method: str = "GET", *, summary: str, tag: str, permission: str,
          scope: str | None = "read", ok: tuple = (), query=(), body: dict | None = None,
          paginated: bool = False, errors=(), description: str = ""):
    """Register a view on the API blueprint, check its scope and the role's ``permission``
    (app.policy) first, record its document.

    ``ok`` is (status, description, schema or schema name, media type = application/json).
    """
    q = list(query) + (PAGINATION_QUERY if paginated else [])

    def deco(fn):
        endpoint = fn.__name__

        @functools.wraps(fn)
        def view(*args, **kwargs):
            if scope is not None:
                require_scope(scope)
            require_permission(permission)
            check_query(q)
            return fn(*args, **kwargs)

        from app.policy import mark
        mark(view, permission)
        bp.add_url_rule(rule, endpoint, view, methods=[method])
        status, desc, schema, *mime = ok
        responses = {status: (desc, schema, mime[0] if mime else "application/json")}
        for code in (400, 401, 403, 404, 429, *errors):
            responses.setdefault(code, None)
        DOCS.append(Doc(rule, method, endpoint, summary, tag, scope, responses, q, body,
                        description or (fn.__doc__ or "").strip()))
        return fn
    return deco


# --------------------------------------------------------------------------- inputs

def check_query(declared) -> None:
    """Refuse (400) a declared query parameter whose value breaks its documented schema:
    the document is the contract, so what it says is invalid is never served. An unknown
    parameter is refused too (a typo such as per-page would otherwise be ignored)."""
    unknown = sorted(set(request.args) - {name for name, _s, _d in declared})
    if unknown:
        raise ApiError(400, "invalid_request", "Unknown query parameter(s): "
                                               f"{', '.join(n[:40] for n in unknown[:5])}.",
                       {"parameters": [n[:40] for n in unknown[:5]]})
    for name, schema, _desc in declared:
        raw = request.args.get(name)
        if raw is None:
            continue
        problem = None
        if schema.get("type") == "integer":
            value = parse_id(raw)
            if value is None or value < schema.get("minimum", 0) \
                    or value > schema.get("maximum", 2**63 - 1):
                problem = (f"{name} must be a whole number from {schema.get('minimum', 0)} to "
                           f"{schema.get('maximum', 2**63 - 1)}.")
        elif "enum" in schema:
            if raw not in schema["enum"]:
                problem = f"{name} must be one of: {', '.join(schema['enum'])}."
        elif len(raw) > schema.get("maxLength", 255) or "\x00" in raw:
            problem = f"{name} is too long (at most {schema.get('maxLength', 255)} characters)."
        if problem:
            raise ApiError(400, "invalid_request", problem, {"parameter": name})


def _int_arg(name: str, default: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    value = parse_id(raw)
    if value is None or value < 1 or value > maximum:
        raise ApiError(400, "invalid_request", f"{name} must be a whole number from 1 to "
                                               f"{maximum}.", {"parameter": name})
    return value


def paginate(stmt, serializer):
    """One page of ``stmt`` (already ordered) as {"items", "page", "per_page", "total", ...}."""
    page = _int_arg("page", 1, MAX_PAGE)
    per_page = _int_arg("per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)
    total = db.session.execute(sa.select(sa.func.count()).select_from(
        stmt.order_by(None).subquery())).scalar_one()
    rows = db.session.execute(stmt.limit(per_page).offset((page - 1) * per_page)).scalars().all()
    return jsonify({"items": [serializer(r) for r in rows], "page": page, "per_page": per_page,
                    "total": total, "has_more": page * per_page < total})


def query_choice(name: str, choices) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise ApiError(400, "invalid_request", f"{name} must be one of: {', '.join(choices)}.",
                       {"parameter": name})
    return raw


def json_body(allowed: dict[str, type | tuple]) -> dict:
    """The request's JSON object, with only ``allowed`` keys of the given types (or null).
    An empty body is an empty object."""
    if not request.get_data(cache=True):
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "The body must be a JSON object.")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ApiError(400, "invalid_request", f"Unknown field(s): {', '.join(unknown)}.",
                       {"fields": unknown})
    for key, kind in allowed.items():
        value = data.get(key)
        if value is not None and not _is(value, kind):
            raise ApiError(400, "invalid_request", f"{key} has the wrong type.", {"field": key})
    return data


def _is(value, kind) -> bool:
    if isinstance(value, bool):  # JSON true is not a number here
        return kind is bool
    return isinstance(value, kind)


def init_api(app) -> None:
    """Register the blueprint, its CSRF rule and its per-token rate limit."""
    from app.api import deploys, resources, spec  # noqa: F401  (routes)
    app.register_blueprint(bp)
    spec.check_documented(app)
