"""Property-based run of schemathesis over every operation of the live server's OpenAPI
document, with a valid API token and agent headers, on SQLite and PostgreSQL: no 5xx, and each
answer conforms to the documented schema. Bounded and derandomized: 25 examples per operation,
no shrinking, the same cases on every run."""

from __future__ import annotations

from typing import Any

import schemathesis
from contract_world import backed_up_point, make_tenant, start_restore
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

MAX_EXAMPLES = 25
BOUNDED = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _headers(server: Any) -> dict[str, str]:
    """A tenant with an agent, a job, a backup point and a restore run, so some generated ids
    hit real rows; the API token and agent headers ride on every request."""
    acme = make_tenant(server, "acme")
    agent = acme.enroll()
    start_restore(acme, backed_up_point(acme, agent))
    return {**acme.headers(), **agent.headers()}


def test_no_server_errors_and_answers_match_the_schema(make_server) -> None:
    server = make_server(auth_failure_limit="100000000", browse_wait_s="0")
    headers = _headers(server)
    schema = schemathesis.openapi.from_url(f"{server.url}/api/openapi.json")
    failures: list[str] = []
    answered_2xx: set[str] = set()
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @BOUNDED
        @given(case=operation.as_strategy())
        def exercise(case: Any) -> None:
            response = case.call_and_validate(
                base_url=server.url,
                headers=headers,
                checks=[not_a_server_error, response_schema_conformance],
                timeout=30,
            )
            if 200 <= response.status_code < 300:
                answered_2xx.add(case.operation.label)

        try:
            exercise()
        except (Exception, BaseExceptionGroup) as exc:  # every operation's failures, collected
            failures.append(f"{operation.label}: {exc}")
    assert operations > 40
    assert len(answered_2xx) > operations // 2, "the credentials must open most operations"
    assert not failures, "\n\n".join(failures)
