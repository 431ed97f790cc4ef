"""A property-based run over the API's own OpenAPI spec (schemathesis): generated requests, valid and not, for every
operation, against the API on a real database with an active model and seeded objects. No answer may be a 5xx, nor
break the spec (a status it does not list, a body that does not match its schema, a wrong content type).

Bounded so it fits CI: ``MAX_EXAMPLES`` per operation, no shrinking, a fixed seed (so a failure repeats). It proves
the spec and the views agree on the inputs hypothesis tried; it does not prove every input is handled."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from apiflask import APIFlask
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from backend.api import create_app
from backend.batches.lifecycle import submit_list
from backend.batches.lists import Entry
from backend.checks.service import submit_image
from backend.identity.access import Actor
from backend.identity.keys import create_key
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.training.versions import register_model
from core.enums import Role
from core.model_metadata import SHIPPED_MODEL
from testbed.images import photo_bytes

MAX_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]



@pytest.fixture
def api_app(database: Settings) -> tuple[APIFlask, str, dict[str, Any]]:
    """The API with a key and one of each object a path names, so generated requests reach the views (a random
    id only ever gets a 404)."""
    with session_scope(database) as session:
        version = register_model(session, SHIPPED_MODEL, activate=True)
        _, key = create_key(session, "schemathesis", Role.ADMIN, actor=Actor.system("tests"))
        check = submit_image(session, photo_bytes(size=64), database).check
        batch = submit_list(session, [Entry(1, "https://images.example.org/a.jpg")], database).batch
        assert check.image is not None
        known = {"check_id": check.id, "batch_id": batch.id, "sha256": check.image.sha256, "version_id": version.id}
    # No real wait: a generated ?wait= is capped here so a run does not sit on queued checks.
    app: APIFlask = create_app(database.model_copy(update={"max_wait_s": 0.05}), test_config={"TESTING": True})
    return app, key, known


def _with_known_ids(strategy: Any, known: dict[str, Any]) -> Any:
    """Half the generated cases name a seeded object in their path instead of a random id."""
    def substitute(pair: tuple[Any, bool]) -> Any:
        case, use_known = pair
        if use_known and case.path_parameters:
            for name in case.path_parameters:
                if name in known:
                    case.path_parameters[name] = known[name]
        return case

    return st.tuples(strategy, st.booleans()).map(substitute)


def test_no_operation_answers_5xx_or_breaks_its_schema(api_app: tuple[APIFlask, str, dict[str, Any]]) -> None:
    app, key, known = api_app
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    failures: dict[str, str] = {}
    statuses: dict[str, set[int]] = {}
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), "the spec is valid OpenAPI"
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) >= 20, "every operation is generated for"
    for operation in operations:

        @seed(17)
        @settings(max_examples=MAX_EXAMPLES, phases=[Phase.explicit, Phase.generate], deadline=None,
                  suppress_health_check=list(HealthCheck), database=None)
        @given(case=_with_known_ids(operation.as_strategy(), known))
        def run(case: Any) -> None:
            response = case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)
            statuses.setdefault(case.operation.label, set()).add(response.status_code)

        try:
            run()
        except Exception as failure:  # noqa: BLE001 - every operation is tried; the failures are reported together
            failures[operation.label] = str(failure)[:1500]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    # The run reached the views, not only the edge: some generated requests got past validation to a 2xx.
    assert set(statuses) == {operation.label for operation in operations}
    print({label: sorted(codes) for label, codes in statuses.items()})  # the run's coverage, with -s
    assert sum(any(code < 300 for code in codes) for codes in statuses.values()) >= len(operations) // 2
