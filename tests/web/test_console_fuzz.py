"""The console fuzzed: every page and form under /console (and the login form), fed query strings
and form fields it does not expect, must never answer a 5xx nor raise. A bad value is the page's
own 4xx or its error page, as the API's are (tests/api/test_openapi_fuzz.py, which the console's
forms are not part of). Beside that, whatever the answer:

- a 4xx leaves every row of every table as it was (a refused form rolls back);
- no page shows a contact's full number or name that the request did not give (numbers and
  names are masked everywhere outside a person's data export, which the console does not have).

The fields are every ``name`` a console template writes, with values that break parsers: text with
U+0000 and other controls, digits past every integer column, dates that are not, formulas,
markup; path ids are the seeded rows' (1–3), numbers past BIGINT, and text. The owner of a tenant
seeded as the API fuzz's (contacts, a segment, approved templates, a draft campaign, a journey)
is logged in, and every POST carries the session's CSRF token, so the forms get past it. Each
route gets ``HONGYAN_FUZZ_EXAMPLES`` examples (default 15). Not covered: the multipart upload's
file (its form fields are), a compressed download (an XLSX report) for the masking check, and
other roles (tests/web/test_console_roles.py sends every form as each of them).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hongyan.api.app import create_app
from hongyan.runtime import Runtime
from hongyan.tenants import service as tenants
from tests.api.test_openapi_fuzz import VOLATILE, Seeded, bare_runtime
from tests.db.support import changed, snapshot
from tests.web.test_console import PASSWORD, csrf_field, login

__all__ = ["bare_runtime"]  # the fixture: webhook URLs checked for their shape only

EXAMPLES = int(os.environ.get("HONGYAN_FUZZ_EXAMPLES", "15"))
TEMPLATES = Path(__file__).parents[2] / "src" / "hongyan" / "web" / "templates"
#: Threads the console starts for work after a response (an import, a number check).
BACKGROUND = re.compile(r"(import|number-check)-\d+")
#: Ends the session the rest of the run needs.
SKIPPED = {("POST", "/logout")}


def _fields() -> list[str]:
    names: set[str] = set()
    for template in TEMPLATES.rglob("*.html"):
        names.update(re.findall(r'name="([A-Za-z_][A-Za-z0-9_]*)"', template.read_text()))
    names.discard("csrf_token")
    return sorted(names)


NASTY = st.sampled_from(
    [
        "", " ", "0", "1", "-1", "2", "3", "99999999999999999999999", "1e309", "NaN",
        "2026-12-01", "2026-13-40", "2026-12-01T25:61", "\x00", "a\x00b", "\u202e",
        "=cmd|'/C calc'!A0", "<script>alert(1)</script>", "{{ 7 * 7 }}", "../../etc/passwd",
        "13812345678", "+86 138 1234 5678", "全部", "a" * 5000,
    ]
)  # fmt: skip
VALUES = st.one_of(NASTY, st.text(max_size=30), st.integers(-(2**70), 2**70).map(str))
PATH_VALUES = st.one_of(
    st.integers(1, 3).map(str),
    st.integers(-(2**70), 2**70).map(str),
    st.text(min_size=1, max_size=12).filter(lambda s: s not in (".", "..")),
)


def _routes(app: object) -> list[tuple[str, str]]:
    out = []
    for route in app.routes:  # type: ignore[attr-defined]
        if not isinstance(route, APIRoute) or route.include_in_schema:
            continue
        if not (route.path.startswith("/console") or route.path in ("/login", "/logout")):
            continue
        for method in sorted(route.methods or ()):
            if (method, route.path) not in SKIPPED:
                out.append((method, route.path))
    return out


def _settle() -> None:
    for thread in threading.enumerate():
        if BACKGROUND.fullmatch(thread.name):
            thread.join(timeout=30)


#: Where a failed attempt is itself recorded (a failed login).
UNCHECKED = {"/login"}


def _fuzzer(
    client: TestClient,
    runtime: Runtime,
    seeded: Seeded,
    token: str,
    fields: list[str],
    route: tuple[str, str],
) -> Callable[[], None]:
    """Hypothesis's test of one route: its path ids, its query string or form fields."""
    method, path = route
    names = re.findall(r"{([^}]+)}", path)

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        params=st.fixed_dictionaries({n: PATH_VALUES for n in names}),
        form=st.dictionaries(st.sampled_from(fields), VALUES, max_size=6),
    )
    def fuzz(params: dict[str, str], form: dict[str, str]) -> None:
        _settle()
        url = path
        for name, value in params.items():
            url = url.replace("{" + name + "}", quote(value, safe=""))
        before = snapshot(runtime.engine, VOLATILE)
        if method == "GET":
            response = client.get(url, params=form, follow_redirects=False)
        else:
            data = {**form, "csrf_token": token}
            response = client.post(url, data=data, follow_redirects=False)
        assert response.status_code < 500, (method, url, form, response.text[:500])
        # still logged in: a lost session would fuzz the login redirect only
        if response.status_code in (302, 303) and path != "/login":
            assert not response.headers["location"].startswith("/login"), (url, form)
        if path not in UNCHECKED and 400 <= response.status_code < 500:
            _settle()
            diff = changed(before, snapshot(runtime.engine, VOLATILE))
            assert not diff, f"{method} {url} {form}: a {response.status_code} changed {diff}"
        given_text = unquote(url) + "\n" + "\n".join(form.values())
        leaked = seeded.leaked(response.content, given_text)
        assert not leaked, f"{method} {url} {form} showed {leaked}"

    return fuzz


def test_every_console_route_answers_bad_input_without_a_server_error(
    runtime: Runtime, subtests: pytest.Subtests
) -> None:
    seeded = Seeded(runtime)
    with runtime.engine.begin() as conn:
        tenant_id = tenants.get_tenant(conn, "tea").id
        tenants.create_user(
            conn, runtime.clock, runtime.keyring, tenant_id=tenant_id,
            email="fuzz@tea.example", name="模糊", role="owner", password=PASSWORD,
        )  # fmt: skip
    assert seeded.key
    app = create_app(runtime)
    fields = _fields()
    assert len(fields) > 40  # the templates were read
    routes = _routes(app)
    assert len(routes) > 50  # every console module's routes
    with TestClient(app) as client:
        assert login(client, email="fuzz@tea.example").status_code == 303
        token = csrf_field(client.get("/console").text)
        for route in routes:
            with subtests.test(msg=" ".join(route)):
                _fuzzer(client, runtime, seeded, token, fields, route)()
        _settle()
