"""Every console form sent by every role: what the role may do it does, what it may not it is
refused, and a refusal changes nothing.

Each POST route under /console (the app's own routes, so a new one fails
``test_every_console_form_is_in_the_matrix`` until it has an entry in ``FORMS``) is listed with
the permission its handler checks and a real, valid form: path ids of rows made for it and the
fields an owner would send. Each route gets a fresh tenant (seeded as the API fuzz's: contacts,
a segment, approved templates, a draft campaign, a journey, a webhook) with one user of each
role, and is sent once by each, on a fresh session with its CSRF token: first by the roles that
lack the permission, then by those that hold it, the owner last. Rows a form acts on (a segment
to delete, a stopped number check to resume, a draft campaign to launch …) are made anew before
each send, so one role's write does not spoil the next role's form. Around each send every row
of every table is compared (``tests.db.support.snapshot``, after the background work a form
starts has ended), and so are the files kept under the imports folder:

- a role without the permission gets the console's refusal (403, the error page saying it is
  not allowed), and no row nor kept file changed;
- a role with it gets a 2xx or a redirect that is not to the login page; a form that writes
  changed some row (the upload form, which keeps the file and writes no row until the import
  starts, kept a file instead): this proves the form is real, so the refusals above are
  refusals of something that would have happened. A form that only reads (the live segment
  count, the builder's redraw, the template lint and its fix) changes nothing for any role;
  the lint and the fix read the tenant's word lists, so they need a role that reads templates
  (an auditor is refused them).

Not checked here: GET pages (read permissions; the fuzz in tests/web/test_console_fuzz.py sends
every page as the owner), what a successful form wrote beyond "some row" (each module's own
tests say that), the login, logout, staff review and public preference forms (outside /console:
no tenant role applies), and each variant of a form but one (a campaign's actions are one route
checking one permission: the matrix launches; a template's save, submit, withdraw and archive
are one route: it saves). The upload sends a three-line CSV in a multipart body.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy.engine import Connection

from hongyan.api.app import create_app
from hongyan.audience import segments
from hongyan.campaigns import service as campaigns
from hongyan.contacts import importer, number_status_jobs
from hongyan.contacts import service as contacts
from hongyan.content import service as content
from hongyan.content import templates
from hongyan.db.scope import TenantScope
from hongyan.db.tables import contact_imports
from hongyan.errors import PermissionDenied
from hongyan.runtime import Runtime
from hongyan.security import passwords
from hongyan.security.roles import Permission, Role, can
from hongyan.tenants import service as tenants
from tests.api.test_openapi_fuzz import VOLATILE, Seeded
from tests.db.support import changed, snapshot
from tests.web.test_console import PASSWORD, csrf_field, login

#: Threads the console starts for work after its response (an import, a number check, a
#: campaign's launch or an A/B decision); joined before the second snapshot.
BACKGROUND = re.compile(r"(import|number-check|launch|decide)-\d+")
#: A small real upload: a header the import recognises and two good rows.
CSV = "手机,姓名\n13812345678,李雷\n13900001111,韩梅\n".encode()
#: Senders in order: the roles lacking a form's permission first, the owner last.
ROLES = (Role.AUDITOR, Role.ANALYST, Role.OPERATOR, Role.OWNER)
TEMPLATE_BODY = "【鸿雁茶饮】会员日第二杯半价，今晚21点前有效，回T退订"


@dataclass(frozen=True)
class Sent:
    """One form as sent: the route's path ids, its fields, and a multipart file if any."""

    params: dict[str, str] = field(default_factory=dict)
    data: dict[str, str | list[str]] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes, str]] | None = None


class World:
    """A fresh tenant seeded as the API fuzz's, a user of each role, and the rows forms need."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        seeded = Seeded(runtime)
        self.tenant_id = seeded.tenant_id
        with runtime.engine.begin() as conn:
            for role in Role:
                tenants.create_user(
                    conn, runtime.clock, runtime.keyring, tenant_id=self.tenant_id,
                    email=self.email(role), name=role.value, role=role.value,
                    password=PASSWORD,
                )  # fmt: skip
            self.segment_id = int(segments.list_segments(conn, self.tenant_id)[0]["id"])
            self.template_id = campaigns.copy_choices(conn, self.tenant_id)[0]["template_id"]

    @staticmethod
    def email(role: Role) -> str:
        return f"{role.value}@tea.example"

    def begin(self) -> AbstractContextManager[Connection]:
        return self.runtime.engine.begin()

    def upload(self, data: bytes = CSV) -> Path:
        """A file kept as the upload form keeps it (its name is the form's token)."""
        return contacts.save_upload(self.runtime, self.tenant_id, io.BytesIO(data), 2**20)

    def kept_files(self) -> list[str]:
        """Every file under the imports folder (uploads, and files kept for a resume)."""
        root = self.runtime.settings.var_dir / "imports"
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- the rows a form acts on, made anew for each send (n: a number unique in the world) ----------


def _segment(world: World, n: int) -> int:
    with world.begin() as conn:
        rule = {"field": "country", "op": "eq", "value": "CN"}
        made = segments.create(
            conn, world.runtime.clock, world.tenant_id, name=f"待删人群{n}", rule=rule, actor="t"
        )
    return int(made["id"])


def _draft_campaign(world: World, n: int) -> int:
    with world.begin() as conn:
        made = campaigns.create(
            conn, world.runtime.clock, world.runtime.keyring, world.tenant_id,
            name=f"待发活动{n}", segment=world.segment_id,
            variants=[{"template_id": world.template_id}], actor="t",
        )  # fmt: skip
    return int(made["id"])


def _draft_template(world: World, n: int) -> int:
    with world.begin() as conn:
        made = templates.create(
            conn, world.runtime.clock, world.tenant_id, name=f"草稿{n}", category="marketing",
            body=TEMPLATE_BODY, actor="t",
        )  # fmt: skip
    return int(made["id"])


def _word(world: World, n: int) -> int:
    with world.begin() as conn:
        made = content.add_word(
            conn, world.runtime.clock, world.tenant_id, list_="forbidden", term=f"待删词{n}",
            actor="t",
        )  # fmt: skip
    return int(made["id"])


def _pending_check(world: World) -> int:
    """A number check that has not begun (the one a refused stop left, or a new one)."""
    runtime = world.runtime
    try:
        with world.begin() as conn:
            return number_status_jobs.start(
                conn, runtime.clock, runtime.settings, world.tenant_id, "t"
            )
    except number_status_jobs.CheckUnderWay as exc:
        return int(exc.details["id"])


def _stopped_check(world: World) -> int:
    """A number check stopped by hand before it began: failed, and resumable."""
    check_id = _pending_check(world)
    with world.begin() as conn:
        number_status_jobs.cancel(conn, world.runtime.clock, world.tenant_id, check_id, "t")
    return check_id


def _failed_import(world: World, n: int) -> int:
    """An import that failed after storing its first row, its file kept for a resume (as the
    importer leaves one that stopped half-way)."""
    runtime, tid = world.runtime, world.tenant_id
    path = world.upload(f"手机,姓名\n1370000{n:04d},甲\n1360000{n:04d},乙\n".encode())
    options = importer.ImportOptions(mapping={"手机": "phone", "姓名": "name"}, actor="t")
    with world.begin() as conn:
        import_id = contacts.create_import(conn, runtime.clock, tid, path, "half.csv", options)
        conn.execute(
            TenantScope(tid)
            .update(contact_imports)
            .where(contact_imports.c.id == import_id)
            .values(
                state="failed", finished_at=runtime.clock.now(),
                result={"rows": 1, "imported": 1, "line": 2},
                error={"code": "import_failed", "message": "stopped"},
            )
        )  # fmt: skip
    path.replace(contacts.kept_upload(runtime, tid, import_id))
    return import_id


# -- the forms an owner would send -----------------------------------------------------------------


def _rule_fields(**extra: str) -> dict[str, str | list[str]]:
    """The segment builder's fields: one condition (every contact in China)."""
    fields: dict[str, str | list[str]] = {
        "rows": "1", "match": "all", "field0": "country", "op0": "eq", "value0": "CN",
    }  # fmt: skip
    fields.update(extra)
    return fields


def builder_add_row(world: World, n: int) -> Sent:
    return Sent(data=_rule_fields(action="add"))


def live_count(world: World, n: int) -> Sent:
    return Sent(data=_rule_fields())


def segment_save(world: World, n: int) -> Sent:
    return Sent(data=_rule_fields(name=f"新人群{n}", description="角色矩阵"))


def rfm_recompute(world: World, n: int) -> Sent:
    return Sent()


def lifecycle_settings(world: World, n: int) -> Sent:
    return Sent(
        data={
            "new_days": "7", "active_days": str(10 + n), "dormant_days": "90",
            "lost_days": "180", "back": "/console/audiences/lifecycle",
        }
    )  # fmt: skip


def segment_snapshot(world: World, n: int) -> Sent:
    return Sent(
        params={"segment_id": str(world.segment_id)},
        data={"purpose": "marketing", "campaign_ref": f"矩阵{n}"},
    )


def segment_delete(world: World, n: int) -> Sent:
    return Sent(params={"segment_id": str(_segment(world, n))})


def campaign_create(world: World, n: int) -> Sent:
    return Sent(
        data={
            "name": f"新活动{n}", "segment": str(world.segment_id),
            "template": [str(world.template_id)], "when": "now", "on_window_end": "carry",
        }
    )  # fmt: skip


def campaign_launch(world: World, n: int) -> Sent:
    return Sent(params={"campaign_id": str(_draft_campaign(world, n)), "action": "launch"})


def import_upload(world: World, n: int) -> Sent:
    return Sent(
        data={"consent_source": "门店", "consent_proof": "登记表", "tags": "矩阵"},
        files={"file": ("people.csv", CSV, "text/csv")},
    )


def import_start(world: World, n: int) -> Sent:
    return Sent(
        data={
            "token": world.upload().name, "filename": "people.csv", "col0": "phone",
            "col1": "name", "consent_source": "门店", "consent_proof": "登记表", "tags": "矩阵",
        }
    )  # fmt: skip


def import_resume(world: World, n: int) -> Sent:
    return Sent(params={"import_id": str(_failed_import(world, n))})


def check_start(world: World, n: int) -> Sent:
    return Sent()


def check_cancel(world: World, n: int) -> Sent:
    return Sent(params={"check_id": str(_pending_check(world))})


def check_resume(world: World, n: int) -> Sent:
    return Sent(params={"check_id": str(_stopped_check(world))})


def template_create(world: World, n: int) -> Sent:
    return Sent(
        data={
            "name": f"新模板{n}", "category": "marketing", "body": TEMPLATE_BODY,
            "link_url": "", "action": "save",
        }
    )  # fmt: skip


def template_lint(world: World, n: int) -> Sent:
    return Sent(data={"body": "【鸿雁茶饮】最好的奶茶，回T退订", "category": "marketing"})


def template_fix(world: World, n: int) -> Sent:
    return Sent(
        data={"body": "【鸿雁茶饮】最好的奶茶，回T退订", "category": "marketing", "index": "0"}
    )


def template_save(world: World, n: int) -> Sent:
    return Sent(
        params={"template_id": str(_draft_template(world, n))},
        data={
            "name": f"改过的草稿{n}", "category": "marketing",
            "body": TEMPLATE_BODY.replace("半价", "八折"), "link_url": "", "action": "save",
        },
    )  # fmt: skip


def signature_submit(world: World, n: int) -> Sent:
    return Sent(data={"text": f"【鸿雁分店{n}】", "note": "新开的分店"})


def word_add(world: World, n: int) -> Sent:
    return Sent(data={"list": "forbidden", "term": f"新禁词{n}", "replacement": ""})


def word_remove(world: World, n: int) -> Sent:
    return Sent(params={"word_id": str(_word(world, n))})


def journey_create(world: World, n: int) -> Sent:
    return Sent(
        data={
            "name": f"新旅程{n}", "trigger": "add_to_cart", "exit_on": "order",
            "kind_0": "wait", "minutes_0": "60", "kind_1": "send",
            "template_1": str(world.template_id),
        }
    )  # fmt: skip


# -- the matrix ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Form:
    """A console form: the permission its handler checks (None: any logged-in user, with the
    session's CSRF token), what an allowed send changes (``ROWS``; ``FILE``: keeps an uploaded
    file and writes no row; ``NOTHING``: it only reads), and the form an owner would send."""

    permission: Permission | None
    effect: Literal["rows", "file", "nothing"]
    send: Callable[[World, int], Sent]


ROWS: Final = "rows"
FILE: Final = "file"
NOTHING: Final = "nothing"
P = Permission  # short, so that each entry fits on a line

#: Every console POST route: the permission its handler checks (read from the handler) and a
#: real form. The handlers: hongyan.web.audience, campaigns, contacts, content and journeys.
FORMS: dict[str, Form] = {
    # the segment builder's redraw and its live count read; the rest of audiences writes
    "/console/audiences/builder": Form(P.READ_CONTACTS, NOTHING, builder_add_row),
    "/console/audiences/preview": Form(P.READ_CONTACTS, NOTHING, live_count),
    "/console/audiences/save": Form(P.MANAGE_CONTACTS, ROWS, segment_save),
    "/console/audiences/recompute": Form(P.MANAGE_CONTACTS, ROWS, rfm_recompute),
    "/console/audiences/settings": Form(P.MANAGE_CONTACTS, ROWS, lifecycle_settings),
    "/console/audiences/segments/{segment_id}/snapshot": Form(
        P.MANAGE_CONTACTS, ROWS, segment_snapshot
    ),
    "/console/audiences/segments/{segment_id}/delete": Form(
        P.MANAGE_CONTACTS, ROWS, segment_delete
    ),
    "/console/campaigns/new": Form(P.SEND, ROWS, campaign_create),
    # one route for launch, pause, resume, cancel and decide: SEND checked before the action
    "/console/campaigns/{campaign_id}/{action}": Form(P.SEND, ROWS, campaign_launch),
    # the upload keeps the file and shows the mapping; no row until the import starts
    "/console/contacts/import": Form(P.MANAGE_CONTACTS, FILE, import_upload),
    "/console/contacts/import/start": Form(P.MANAGE_CONTACTS, ROWS, import_start),
    "/console/contacts/imports/{import_id}/resume": Form(P.MANAGE_CONTACTS, ROWS, import_resume),
    "/console/contacts/checks": Form(P.MANAGE_CONTACTS, ROWS, check_start),
    "/console/contacts/checks/{check_id}/cancel": Form(P.MANAGE_CONTACTS, ROWS, check_cancel),
    "/console/contacts/checks/{check_id}/resume": Form(P.MANAGE_CONTACTS, ROWS, check_resume),
    # the editor's lint and fix read the tenant's word lists and write nothing; a signature is
    # the brand: MANAGE_TENANT
    "/console/content/new": Form(P.MANAGE_TEMPLATES, ROWS, template_create),
    "/console/content/lint": Form(P.READ_TEMPLATES, NOTHING, template_lint),
    "/console/content/fix": Form(P.READ_TEMPLATES, NOTHING, template_fix),
    "/console/content/templates/{template_id}": Form(P.MANAGE_TEMPLATES, ROWS, template_save),
    "/console/content/signatures": Form(P.MANAGE_TENANT, ROWS, signature_submit),
    "/console/content/words": Form(P.MANAGE_TEMPLATES, ROWS, word_add),
    "/console/content/words/{word_id}/delete": Form(P.MANAGE_TEMPLATES, ROWS, word_remove),
    "/console/journeys/new": Form(P.SEND, ROWS, journey_create),
}


@pytest.fixture(autouse=True)
def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords hashed and checked with argon2id at its least cost: the matrix logs in four
    times a route, and the default cost (tenths of a second a hash, by design) would be most
    of its time. The login itself is the real one (tests/web/test_console.py tests it)."""
    monkeypatch.setattr(
        passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


def console_forms(app: FastAPI) -> list[str]:
    """The app's console POST routes (not in the API schema, under /console)."""
    out = []
    for route in app.routes:
        if not isinstance(route, APIRoute) or route.include_in_schema:
            continue
        if route.path.startswith("/console") and "POST" in (route.methods or ()):
            out.append(route.path)
    return sorted(out)


@pytest.mark.sqlite_only  # which routes there are does not depend on the database
def test_every_console_form_is_in_the_matrix(bare_runtime: Runtime) -> None:
    """A new console form fails here until ``FORMS`` says what it needs and how to send it; an
    entry whose route is gone fails too."""
    routes = console_forms(create_app(bare_runtime))
    assert len(routes) >= 20  # every console module's forms were found
    missing = [path for path in routes if path not in FORMS]
    assert not missing, f"console POST routes without an entry in FORMS: {missing}"
    stale = [path for path in FORMS if path not in routes]
    assert not stale, f"entries in FORMS for no console POST route: {stale}"


def _settle() -> None:
    """Wait for the work the previous request left running, which writes on its own."""
    for thread in threading.enumerate():
        if BACKGROUND.fullmatch(thread.name):
            thread.join(timeout=30)
            assert not thread.is_alive(), f"{thread.name} did not end"


def _url(path: str, params: dict[str, str]) -> str:
    for name, value in params.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"{path}: a path id without a value"
    return path


def _login(client: TestClient, role: Role) -> str:
    """Log in as ``role`` on a fresh session; its CSRF token, from a page."""
    client.cookies.clear()
    assert login(client, email=World.email(role)).status_code == 303
    return csrf_field(client.get("/console").text)


@dataclass(frozen=True)
class Outcome:
    """One send: the answer, the tables whose rows changed, and the kept files before and after."""

    response: httpx.Response
    tables: list[str]
    files: tuple[list[str], list[str]]

    def __str__(self) -> str:
        return f"{self.response.status_code} {self.response.text[:300]}"


def _send(client: TestClient, world: World, role: Role, path: str, sent: Sent) -> Outcome:
    _settle()
    token = _login(client, role)
    engine = world.runtime.engine
    before, files = snapshot(engine, VOLATILE), world.kept_files()
    response = client.post(
        _url(path, sent.params),
        data={**sent.data, "csrf_token": token},
        files=sent.files,
        follow_redirects=False,
    )
    _settle()
    tables = changed(before, snapshot(engine, VOLATILE))
    return Outcome(response, tables, (files, world.kept_files()))


@pytest.mark.parametrize("path", sorted(FORMS), ids=lambda path: f"POST {path}")
def test_each_role_sends_only_what_it_may(
    runtime: Runtime, path: str, subtests: pytest.Subtests
) -> None:
    """The route's form as each role, those lacking its permission first: refused with no row
    or file changed; done by those holding it (a writing form changed something)."""
    form = FORMS[path]
    world = World(runtime)
    allowed = [r for r in ROLES if form.permission is None or can(r, form.permission)]
    order = [r for r in ROLES if r not in allowed] + allowed
    assert order[-1] == Role.OWNER
    with TestClient(create_app(runtime)) as client:
        for n, role in enumerate(order):
            with subtests.test(msg=role.value):
                got = _send(client, world, role, path, form.send(world, n))
                files_before, files_after = got.files
                if role not in allowed:
                    assert got.response.status_code == 403, f"{role.value}: {got}"
                    assert PermissionDenied.message_zh in got.response.text, f"{role.value}: {got}"
                    assert not got.tables, f"{role.value} was refused but changed {got.tables}"
                    assert files_after == files_before, f"{role.value} was refused: {got.files}"
                    continue
                assert 200 <= got.response.status_code < 400, f"{role.value}: {got}"
                if got.response.is_redirect:
                    location = got.response.headers["location"]
                    assert not location.startswith("/login"), f"{role.value}: lost the session"
                if form.effect == ROWS:
                    assert got.tables, f"{role.value}'s form changed no row: {got}"
                    continue
                assert not got.tables, f"{role.value}'s {form.effect} form changed {got.tables}"
                if form.effect == FILE:
                    assert len(files_after) == len(files_before) + 1, got.files
                else:
                    assert form.effect == NOTHING and files_after == files_before, got.files
