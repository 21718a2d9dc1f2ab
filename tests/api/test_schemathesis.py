"""Property-based fuzzing of every operation in /openapi.json: no input, valid or not, may cause a 5xx.

Each operation gets valid requests (schemathesis's positive mode) and invalid
ones (negative mode) against the real server, with a write key so the write
endpoints are exercised past auth.  (schemathesis's own ``from_fixture``
loader does not work with this pytest version, so operations are listed from
the app's OpenAPI document and their strategies are driven with ``@given``.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from api.app import create_app
from flowrec.config import Settings

pytestmark = pytest.mark.faults

# Per operation; over the API's operations this is a few hundred requests in all.
EXAMPLES_PER_OPERATION = 25


def operations() -> list[str]:
    """``"METHOD /path"`` of every documented operation (building the app does not touch Redis)."""
    spec = create_app(Settings(redis_url="redis://127.0.0.1:1/0")).openapi()
    return [f"{method.upper()} {path}" for path, item in spec["paths"].items() for method in item]


@pytest.mark.parametrize("label", operations())
def test_no_input_causes_a_server_error(serve, auth, label):
    schema = schemathesis.openapi.from_url(f"{serve()}/openapi.json")
    operation = schema.find_operation_by_label(label)
    assert operation is not None, label
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def fuzz(case):
        case.call_and_validate(headers=auth, checks=[not_a_server_error])

    fuzz()
