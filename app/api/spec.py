"""The OpenAPI 3.1 document, generated with apispec from what :func:`app.api.core.route`
recorded for each view (path, method, scope, query, body, responses) and the schemas
in app.api.serializers. Served without a token at /api/v1/openapi.json."""
from __future__ import annotations

import re

from apispec import APISpec
from flask import jsonify

from app.api import serializers as ser
from app.api.core import DOCS, route

TITLE = "Keystone API"
VERSION = "1.0.0"
ERROR_TEXT = {400: "Invalid request (code invalid_request, csrf_failed)",
              401: "Missing, unknown, expired or revoked token (code unauthorized)",
              403: "The token lacks the scope (code insufficient_scope)",
              404: "No such object in the token's organisation (code not_found)",
              409: "Another operation holds the environment and if_busy is refuse "
                   "(code operation_locked), or the variable is one an attachment manages "
                   "(code variable_managed)",
              422: "The request cannot be carried out as it stands (codes deploy_blocked, "
                   "no_earlier_build)",
              429: "Too many requests with this token (code rate_limited); see Retry-After"}
_PARAM = re.compile(r"<(?:int:)?([a-z_]+)>")


def _path(rule: str) -> str:
    return "/api/v1" + _PARAM.sub(r"{\1}", rule)


def _schema_ref(schema):
    if isinstance(schema, str):
        return {"$ref": f"#/components/schemas/{schema}"}
    return schema


def build_spec() -> dict:
    spec = APISpec(title=TITLE, version=VERSION, openapi_version="3.1.0", info={
        "description": "Keystone's HTTP API. Authenticate with a personal access token: "
                       "`Authorization: Bearer kst_...` (Settings, API tokens). Scopes: read, "
                       "deploy (includes read), admin (includes both). Errors are "
                       "`{\"error\": {\"code\", \"message\"}}`; lists are paginated with "
                       "page and per_page."})
    spec.components.security_scheme("token", {"type": "http", "scheme": "bearer",
                                              "description": "A personal access token (kst_...)."})
    for name, schema in ser.SCHEMAS.items():
        spec.components.schema(name, schema)
    for item in ("Application", "Environment", "Operation", "Server", "Service", "Build"):
        spec.components.schema(f"Page_{item}", ser.page_schema(item))
    spec.components.response("Error", {
        "description": "An error", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}})
    paths: dict[str, dict] = {}
    for doc in DOCS:
        params = [{"name": n, "in": "path", "required": True,
                   "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}}
                  for n in _PARAM.findall(doc.rule)]
        params += [{"name": n, "in": "query", "required": False, "schema": s, "description": d}
                   for n, s, d in doc.query]
        responses = {}
        for status, value in doc.responses.items():
            if value is None:
                responses[str(status)] = {"description": ERROR_TEXT.get(status, "Error"),
                                          "content": {"application/json": {"schema": {
                                              "$ref": "#/components/schemas/Error"}}}}
                if status == 429:
                    responses[str(status)]["headers"] = {"Retry-After": {
                        "schema": {"type": "string"}, "description": "Seconds to wait."}}
                continue
            desc, schema, mime = value
            responses[str(status)] = {"description": desc,
                                      "content": {mime: {"schema": _schema_ref(schema)}}}
        operation = {"operationId": doc.endpoint, "summary": doc.summary, "tags": [doc.tag],
                     "parameters": params, "responses": responses}
        if doc.description:
            operation["description"] = doc.description
        if doc.scope is None and doc.endpoint == "openapi":
            operation["security"] = []
        else:
            operation["security"] = [{"token": []}]
            if doc.scope:
                operation["description"] = (operation.get("description", "") +
                                            f"\n\nScope: `{doc.scope}`.").strip()
        if doc.body is not None:
            operation["requestBody"] = {"required": False, "content": {
                "application/json": {"schema": doc.body}}}
        paths.setdefault(_path(doc.rule), {})[doc.method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


@route("/openapi.json", permission="public", summary="This document", tag="meta", scope=None,
       ok=(200, "The OpenAPI 3.1 document", {"type": "object"}))
def openapi():
    """No token needed."""
    return jsonify(build_spec())


def check_documented(app) -> None:
    """Every API rule has its document entry (a view added without route() is a bug)."""
    documented = {f"api.{d.endpoint}" for d in DOCS}
    missing = [r.rule for r in app.url_map.iter_rules()
               if r.endpoint.startswith("api.") and r.endpoint not in documented]
    if missing:
        raise RuntimeError(f"API routes without documentation: {missing}")

