"""Schemathesis against the live server: every operation of /api/v1/openapi.json, valid
and invalid inputs, with an admin token of a seeded organisation. No 5xx, and every
response conforms to the document (status code, content type, headers, body schema);
invalid input is refused with a 4xx."""
from __future__ import annotations

import re

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               negative_data_rejection,
                                               response_headers_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from app.models import BuildArtifact, Operation
from app.models.enums import ArtifactStatus, OperationStatus
from tests.api.conftest import deployable
from tests.factories import build_org

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
# Bounded so the run stays well under two minutes on the 2-core machine.
# The seeded call's body where the operation needs one (others send none).
BODIES = {
    "POST /api/v1/environments/{environment_id}/variables":
        {"key": "FROM_THE_API", "value": "a \"quoted\" $value\nover two lines"},
    "POST /api/v1/environments/{environment_id}/variables/unset": {"key": "FROM_THE_API"},
}
_WELL_FORMED = re.compile(r"Bearer \S+")
MAX_EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 10}


def _seed(live):
    with live.app.app_context():
        graph = deployable(build_org())
        # A finished operation with a recorded log: its event stream replays and ends.
        from app.extensions import db
        op = db.session.get(Operation, graph.operation.id)
        op.status = OperationStatus.SUCCEEDED
        op.steps[0].logs = "==> build\nstep one done\n"
        # A finished build to roll back to.
        artifact = db.session.get(BuildArtifact, graph.artifact.id)
        artifact.status, artifact.image_digest = ArtifactStatus.READY, "sha256:" + "b" * 64
        db.session.commit()
        return graph.bearer, graph.ids()


def _headers(case, bearer):
    """The seeded token replaces a well-formed generated one. A case whose negation is
    the Authorization header itself (left out, or not ``Bearer <token>``) goes as
    generated and must be refused: overriding it would send a valid request that
    schemathesis counts as invalid data accepted (the CI failure of 2026-12-02)."""
    generated = (case.headers or {}).get("Authorization")
    if case.meta is not None and case.meta.generation.mode.is_negative and not (
            isinstance(generated, str) and _WELL_FORMED.fullmatch(generated)):
        return None
    return bearer


def test_the_api_conforms_to_its_document(live):
    bearer, ids = _seed(live)
    schema = schemathesis.openapi.from_url(f"{live.url}/api/v1/openapi.json")
    ran, seeded = 0, {}
    for result in schema.get_all_operations():
        operation = result.ok()
        # First the seeded objects' own ids (random ids mostly miss them): each answers 2xx
        # or, for a deploy of the seeded environment, a documented refusal.
        path_ids = {p.name: ids[p.name] for p in operation.path_parameters}
        case = operation.Case(path_parameters=path_ids, **(
            {"body": BODIES[operation.label], "media_type": "application/json"}
            if operation.label in BODIES else {}))
        response = case.call_and_validate(base_url=live.url, headers=bearer, checks=CHECKS,
                                          timeout=30)
        seeded[operation.label] = response.status_code
        for mode, examples in MAX_EXAMPLES.items():
            checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE
                               else [])

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def run(case):
                case.call_and_validate(base_url=live.url, headers=_headers(case, bearer),
                                       checks=checks, timeout=30)

            run()
            ran += 1
    assert ran >= 2 * 21
    reached = {label for label, status in seeded.items() if 200 <= status < 300}
    assert reached == set(seeded), {k: v for k, v in seeded.items() if k not in reached}
