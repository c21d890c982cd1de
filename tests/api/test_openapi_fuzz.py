"""The REST API fuzzed from its own OpenAPI schema (schemathesis): every operation under /api/v1,
fed requests that fit the schema and requests that do not, must answer

- never a 5xx: bad input is a 4xx with the bilingual error body;
- only with a status the schema documents for it, a body matching that status's schema (our
  ErrorBody for every error) and a documented content type;
- when it answers 4xx, with no row added, removed or changed in any table (a request that fails
  rolls back; a key's time of last use aside);
- never with a contact's full number or name that the request did not give (masked everywhere
  but the data export, which is asked with the number).

Then every request that changed rows (up to three an operation) is sent again with an analyst's
key, who may read but not write: each is refused (403) and changes no row.

It runs against one tenant seeded with contacts, a segment, approved templates, a draft campaign,
a journey and a webhook, authenticated as its owner's API key (the review queue as a platform
reviewer's); half the generated path ids are those of the seeded rows, so operations also get past
their lookups. Each operation gets ``HONGYAN_FUZZ_EXAMPLES`` examples (default 15: about 16 s on
SQLite and 18 s on PostgreSQL on the 2-core machine; under CI=true the same examples every run, see
the ``hongyan`` Hypothesis profile in tests/conftest.py). Search further locally with a few
hundred (past the suite's 300 s timeout): ``HONGYAN_FUZZ_EXAMPLES=300 pytest --timeout=0
tests/api/test_openapi_fuzz.py``.

No operation is excluded; one case is skipped: revoking the fuzz's own key, which the rest of the
run needs. Webhook URLs are checked for their shape only (``webhook_allow_private``), since
resolving random host names would send DNS queries off this machine; nothing reaches a carrier or
a webhook endpoint, as no dispatcher or delivery worker runs in tests (a launch or a test delivery
only queues rows). Schemathesis drives the multipart upload of POST /contacts/imports itself. Not
covered: roles other than owner, analyst and reviewer, writes the fuzz never got past the
services' own checks (most generated bodies fail them; the test asks for at least 15 operations
that wrote), and the console (tests/web/test_console_fuzz.py fuzzes its pages and forms).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from schemathesis import checks
from schemathesis.generation import GenerationMode

from hongyan.api.app import create_app
from hongyan.campaigns import journeys
from hongyan.campaigns import service as campaigns
from hongyan.clock import FixedClock
from hongyan.runtime import Runtime
from hongyan.security import apikeys
from hongyan.security.roles import Role
from hongyan.staff import service as staff
from hongyan.webhooks import service as webhooks
from tests import conftest
from tests.api.test_api import auth
from tests.campaigns.support import make_shop
from tests.content.support import REVIEWER
from tests.db.support import changed, snapshot

EXAMPLES = int(os.environ.get("HONGYAN_FUZZ_EXAMPLES", "15"))

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]

#: Threads the API starts for work after a response (an upload's import, an A/B decision, a
#: number check).
BACKGROUND = re.compile(r"(import|launch|decide|number-check)-\d+")


@pytest.fixture
def bare_runtime(tmp_path: Path, database_url: str, clock: FixedClock) -> Iterator[Runtime]:
    """As the shared one, with webhook URLs checked for their shape only: no DNS look-ups."""
    settings_ = conftest.test_settings(tmp_path, database_url).model_copy(
        update={"webhook_allow_private": True}
    )
    runtime = Runtime.create(settings_, clock=clock)
    yield runtime
    runtime.close()


class Seeded:
    """The fuzzed tenant: its owner's key (and that key's id), a platform reviewer's key, and
    the contacts' numbers and names, which no answer but the data export may show."""

    def __init__(self, runtime: Runtime) -> None:
        shop = make_shop(runtime, 10)
        self.tenant_id = shop.tenant_id
        self.secrets = [p[3:] for p in shop.phones] + [f"李{i}" for i in range(0, 10, 2)]
        clock, keyring = runtime.clock, runtime.keyring
        with runtime.engine.begin() as conn:
            owner = apikeys.create(conn, clock, shop.tenant_id, "fuzz", Role.OWNER)
            self.key, self.key_id = owner.key, owner.id
            reviewer = staff.get_by_email(conn, REVIEWER)  # who approved the shop's templates
            self.staff_key = staff.create_key(conn, clock, reviewer, "fuzz")[1]
            variants = [{"template_version_id": v} for v in shop.versions[:2]]
            campaigns.create(
                conn, clock, keyring, shop.tenant_id, name="会员日", segment=shop.segment_id,
                variants=variants, actor="fuzz",
            )  # fmt: skip
            template_id = campaigns.copy_choices(conn, shop.tenant_id)[0]["template_id"]
            journeys.create(
                conn, clock, shop.tenant_id, name="欢迎", trigger="registration",
                steps=[{"kind": "send", "template_id": template_id}], actor="fuzz",
            )  # fmt: skip
            webhooks.create(
                conn, clock, keyring, webhooks.UrlPolicy(https_only=False, allow_private=True),
                shop.tenant_id, url="https://shop.example/hook", actor="fuzz",
            )  # fmt: skip

    def headers(self, case: schemathesis.Case) -> dict[str, str]:
        path = case.operation.path
        return auth(self.staff_key if path.startswith("/api/v1/review/") else self.key)

    def revokes_itself(self, case: schemathesis.Case) -> bool:
        return (
            case.method == "DELETE"
            and case.operation.path == "/api/v1/api-keys/{key_id}"
            and case.path_parameters == {"key_id": self.key_id}
        )

    def leaked(self, answer: bytes, asked: str) -> list[str]:
        """The contacts' numbers and names an answer shows that its request did not give."""
        return [s for s in self.secrets if s.encode() in answer and s not in asked]


def asked(request: Any) -> str:
    """A request's URL and body as text (percent-escapes undone), to tell an answer that shows
    what it was given from one that shows what it holds."""
    from urllib.parse import unquote

    body = request.body or b""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = unquote(str(request.url)) + "\n" + str(body)
    try:  # a JSON body's strings, unescaped (schemathesis writes non-ASCII as \uXXXX)
        import json

        text += "\n" + json.dumps(json.loads(body), ensure_ascii=False)
    except ValueError:
        pass
    return text


def _known_ids(
    _context: schemathesis.HookContext, path_parameters: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    """Half the time, path ids that exist: the seeded rows are the first few of their tables
    (random integers almost never are)."""
    if not path_parameters:
        return st.just(path_parameters)
    known: dict[str, st.SearchStrategy[Any]] = {
        name: st.integers(1, 3)
        for name, value in path_parameters.items()
        if isinstance(value, int) and not isinstance(value, bool)
    }
    if "ref" in path_parameters:  # a campaign's or journey's id or name
        known["ref"] = st.sampled_from(["1", "会员日", "欢迎"])
    if not known:
        return st.just(path_parameters)
    return st.one_of(
        st.just(path_parameters),
        st.fixed_dictionaries(known).map(lambda ids: {**path_parameters, **ids}),
    )


def _settle() -> None:
    """Wait for the work the previous requests left running, which writes on its own."""
    for thread in threading.enumerate():
        if BACKGROUND.fullmatch(thread.name):
            thread.join(timeout=30)


#: Bookkeeping an authenticated request updates.
VOLATILE = ("api_keys.last_used_at", "staff_api_keys.last_used_at")


def test_every_operation_answers_as_documented(runtime: Runtime, subtests: pytest.Subtests) -> None:
    """``EXAMPLES`` cases an operation as the owner (the review queue as a reviewer); then every
    request that changed rows (up to three an operation) again as an analyst, who may read but
    not write: refused, and no row changed."""
    seeded = Seeded(runtime)
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", create_app(runtime))
    schema.hook("flatmap_path_parameters")(_known_ids)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 100  # every router is in the schema
    writes: dict[str, list[schemathesis.Case]] = {}

    for operation in operations:
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

        # No health check: a schema's own shape (deep bodies, rare valid values) is no failure.
        @settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck))
        @given(case=cases)
        def fuzz(case: schemathesis.Case) -> None:
            if seeded.revokes_itself(case):
                reject()  # the rest of the run needs the key
            _settle()
            before = snapshot(runtime.engine, VOLATILE)
            response = case.call(headers=seeded.headers(case))
            case.validate_response(response, checks=CHECKS)
            # The key is always valid: a 401 would mean the fuzz lost it and tested nothing.
            assert response.status_code != 401, response.text
            _settle()
            diff = changed(before, snapshot(runtime.engine, VOLATILE))
            if 400 <= response.status_code < 500:
                assert not diff, f"a {response.status_code} changed {diff}"
            elif diff and not case.operation.path.startswith("/api/v1/review/"):
                writes.setdefault(case.operation.label, [])
                if len(writes[case.operation.label]) < 3:
                    writes[case.operation.label].append(case)
            leaked = seeded.leaked(response.content, asked(response.request))
            assert not leaked, f"{case.operation.label} showed {leaked}"

        with subtests.test(msg=operation.label):
            fuzz()

    assert len(writes) >= 15, sorted(writes)  # the fuzz got past the services' own checks
    with runtime.engine.begin() as conn:  # (made now: the fuzz may have revoked earlier keys)
        analyst = apikeys.create(conn, runtime.clock, seeded.tenant_id, "analyst", Role.ANALYST)
    for label, done in writes.items():
        with subtests.test(msg=f"{label} as an analyst"):
            for case in done:
                _settle()
                before = snapshot(runtime.engine, VOLATILE)
                response = case.call(headers=auth(analyst.key))
                _settle()
                assert response.status_code == 403, (label, response.text[:300])
                diff = changed(before, snapshot(runtime.engine, VOLATILE))
                assert not diff, f"{label} as an analyst changed {diff}"
