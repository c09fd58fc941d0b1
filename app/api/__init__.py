"""Keystone's HTTP API, /api/v1 (issue 18 section 2): personal access tokens, JSON,
an OpenAPI 3.1 document generated from the views (app.api.spec).

* core -- the blueprint, token authentication, scopes, errors, pagination, rate limit
* tokens -- personal access tokens (hashed, scoped, expiring, revocable)
* serializers -- every representation and its JSON Schema, in one place
* resources, deploys -- the endpoints
"""
from app.api.core import bp, http_error, init_api, is_api_request

__all__ = ["bp", "http_error", "init_api", "is_api_request"]
