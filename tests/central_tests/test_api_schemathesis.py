"""Schemathesis against central's own `/openapi.json`, in-process through ASGI, with an admin token, on SQLite
and on PostgreSQL (whose text cannot hold a NUL): whatever it sends to any operation, valid or not, the API
never answers 500."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from central.api.app import create_app
from central.database import open_database
from central_tests.api_kit import FakeGateways, bearer, context_for, store_alert, store_gateway, store_locker, tokens

SITE = "north-school"
EXAMPLES_PER_OPERATION = 40


@pytest.mark.timeout(600)
def test_no_input_makes_the_api_fail_with_500(central_database: str) -> None:
    engine = open_database(central_database)
    admin = bearer(tokens(engine)["admin"])
    store_gateway(engine, SITE, "gw-01")
    store_locker(engine, SITE, "gw-01", "A-01")
    store_alert(engine, SITE, "gw-01", "door.left_open")
    gateways = FakeGateways(answer={"status": "ok", "data": {"locker": "A-01", "unlock": "sent", "seq": 1}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(context_for(engine, gateways)))
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the OpenAPI document has an operation schemathesis cannot read: {result}"
        operations.append(result.ok())
    assert len(operations) >= 9

    statuses: list[int] = []
    for operation in operations:
        strategy = operation.as_strategy() | operation.as_strategy(schemathesis.GenerationMode.NEGATIVE)

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def no_server_error(case: schemathesis.Case[Any]) -> None:
            response = case.call_and_validate(headers=admin, checks=[not_a_server_error])
            statuses.append(response.status_code)

        no_server_error()
    assert {200, 400} <= set(statuses), "both valid and invalid requests were sent"
    engine.dispose()
