"""Console pages for content: the templates, the editor with its live lint, signatures, words.

The editor's text area posts to ``/console/content/lint`` as one types (htmx, 200 ms after the
last keystroke) and swaps only the lint panel: the character count, parts, split points and the
findings, highlighted in a copy of the text, each with its fix one click away
(``/console/content/fix`` returns the text area with that fix applied, which lints itself again
as it loads). Saving, submitting and withdrawing are ordinary form posts that redirect.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from hongyan.content import service, signatures, templates
from hongyan.content.fields import SPECIALS, STANDARD_FIELDS
from hongyan.content.lint import CATEGORIES, Finding, LintResult, fix_one, lint
from hongyan.content.wordlists import LISTS
from hongyan.errors import HongyanError, NotFound, PermissionDenied
from hongyan.security.roles import Permission, can
from hongyan.security.sessions import SessionPrincipal
from hongyan.web.console import (
    _check_csrf,
    _lang,
    _redirect,
    _render,
    _require,
    _runtime,
    _set_flash,
    _tenant_name,
)

SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Piece:
    """A run of the text for the highlighted copy: plain, marked, or a point (insert here)."""

    text: str
    severity: str | None = None  # the most severe finding covering it
    titles: tuple[str, ...] = ()
    point: bool = False


def highlight(text: str, findings: list[Finding], lang: str) -> list[Piece]:
    """``text`` cut where findings start and end; each run marked by what covers it."""
    cuts = {0, len(text)}
    for f in findings:
        cuts.update((min(f.start, len(text)), min(f.end, len(text))))
    order = sorted(cuts)
    pieces: list[Piece] = []
    for a, b in zip(order, [*order[1:], None], strict=True):
        for f in findings:  # points (where a fix inserts) before the text that follows them
            if f.start == f.end == a and f.fix is not None:
                pieces.append(Piece("", f.severity, (f.message(lang),), point=True))
        if b is None:
            break
        covering = [f for f in findings if f.start <= a and b <= f.end and f.start < f.end]
        if not covering:
            pieces.append(Piece(text[a:b]))
            continue
        worst = min(covering, key=lambda f: SEVERITY_RANK[f.severity])
        pieces.append(Piece(text[a:b], worst.severity, tuple(f.message(lang) for f in covering)))
    return pieces


def _allow(principal: SessionPrincipal, permission: Permission) -> None:
    if not can(principal.role, permission):
        raise PermissionDenied()


def _field(form: FormData, name: str, limit: int = 100_000) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def _category(value: str) -> str:
    return value if value in CATEGORIES else "marketing"


def _panel(request: Request, principal: SessionPrincipal, body: str, category: str) -> Response:
    """The lint panel for ``body`` (an htmx swap), or the problem with the text itself."""
    runtime = _runtime(request)
    lang = _lang(request, principal)
    result: LintResult | None = None
    problem: str | None = None
    if body.strip():
        try:
            with runtime.engine.connect() as conn:
                ctx = service.context(conn, principal.tenant_id, category)
            result = lint(body, ctx)
        except HongyanError as exc:
            problem = exc.message_en if lang == "en" else exc.message_zh
    return _render(
        request,
        "_lint_panel.html",
        lang=lang,
        principal=principal,
        result=result,
        problem=problem,
        pieces=highlight(body, result.findings, lang) if result else [],
        segments=_segments(result),
    )


def _segments(result: LintResult | None) -> list[str]:
    if result is None or result.parts <= 1:
        return []
    cuts = [0, *result.splits, len(result.preview)]
    return [result.preview[a:b] for a, b in itertools.pairwise(cuts)]


async def lint_panel(request: Request) -> Response:
    """The findings on a text (against the tenant's own word lists: a role that may read its
    templates)."""
    principal = _require(request)
    _allow(principal, Permission.READ_TEMPLATES)
    await _check_csrf(request, principal)
    form = await request.form()
    return _panel(request, principal, _field(form, "body"), _category(_field(form, "category")))


async def fix_text(request: Request) -> Response:
    """The text area with one finding's fix applied (it lints itself again as it loads)."""
    principal = _require(request)
    _allow(principal, Permission.READ_TEMPLATES)
    await _check_csrf(request, principal)
    form = await request.form()
    body = _field(form, "body")
    category = _category(_field(form, "category"))
    index = _field(form, "index", 6)
    runtime = _runtime(request)
    if index.isdigit():
        with runtime.engine.connect() as conn:
            ctx = service.context(conn, principal.tenant_id, category)
        # the text may have changed since the panel was drawn: then it comes back as it is
        with contextlib.suppress(HongyanError):
            body = fix_one(body, ctx, int(index))
    return _render(
        request, "_editor_body.html", lang=_lang(request, principal), principal=principal, body=body
    )


def _editor(
    request: Request,
    principal: SessionPrincipal,
    *,
    template: dict[str, Any] | None,
    form: dict[str, str],
    error: HongyanError | None = None,
    status: int = 200,
) -> Response:
    lang = _lang(request, principal)
    return _render(
        request,
        "content_editor.html",
        lang=lang,
        principal=principal,
        tenant_name=_tenant_name(request, principal),
        active="content",
        status=status,
        tpl=template,
        form=form,
        body=form["body"],
        error=(error.message_en if lang == "en" else error.message_zh) if error else None,
        error_findings=(error.details.get("findings", []) if error else []),
        categories=CATEGORIES,
        fields=[*STANDARD_FIELDS.values(), *SPECIALS.values()],
        can_edit=can(principal.role, Permission.MANAGE_TEMPLATES),
    )


async def content_page(request: Request) -> Response:
    """Templates, signatures and the tenant's own words."""
    principal = _require(request)
    _allow(principal, Permission.READ_TEMPLATES)
    runtime = _runtime(request)
    with runtime.engine.connect() as conn:
        items = templates.listing(conn, principal.tenant_id)
        sigs = signatures.listing(conn, principal.tenant_id)
        words = service.words(conn, principal.tenant_id)
    return _render(
        request,
        "content.html",
        lang=_lang(request, principal),
        principal=principal,
        tenant_name=_tenant_name(request, principal),
        active="content",
        templates=items,
        signatures=sigs,
        words=words,
        lists=LISTS,
        can_edit=can(principal.role, Permission.MANAGE_TEMPLATES),
        can_sign=can(principal.role, Permission.MANAGE_TENANT),
    )


async def editor_new(request: Request) -> Response:
    principal = _require(request)
    _allow(principal, Permission.MANAGE_TEMPLATES)
    category = _category(request.query_params.get("category", "marketing"))
    form = {"name": "", "category": category, "body": "", "link_url": ""}
    return _editor(request, principal, template=None, form=form)


def _template_id(value: str) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 9):
        raise NotFound("No such template", "找不到该模板")
    return int(value)


async def editor_page(request: Request, template_id: str) -> Response:
    principal = _require(request)
    _allow(principal, Permission.READ_TEMPLATES)
    runtime = _runtime(request)
    with runtime.engine.connect() as conn:
        item = templates.get(conn, principal.tenant_id, _template_id(template_id))
    form = {
        "name": item["name"],
        "category": item["category"],
        "body": item["body"],
        "link_url": item["link_url"] or "",
    }
    return _editor(request, principal, template=item, form=form)


async def editor_save(request: Request, template_id: str | None = None) -> Response:
    """Create or change a template, then save, submit, withdraw or archive it."""
    principal = _require(request)
    await _check_csrf(request, principal)
    _allow(principal, Permission.MANAGE_TEMPLATES)
    form = await request.form()
    fields = {
        "name": _field(form, "name", 100),
        "category": _category(_field(form, "category")),
        "body": _field(form, "body"),
        "link_url": _field(form, "link_url", 500),
    }
    action = _field(form, "action", 20)
    runtime = _runtime(request)
    actor = f"user:{principal.user_id}"
    tid = principal.tenant_id
    item: dict[str, Any] | None = None
    try:
        with runtime.engine.begin() as conn:
            if template_id is None:
                item = templates.create(
                    conn,
                    runtime.clock,
                    tid,
                    name=fields["name"],
                    category=fields["category"],
                    body=fields["body"],
                    link_url=fields["link_url"] or None,
                    actor=actor,
                )
                number = int(item["id"])
            else:
                number = _template_id(template_id)
                item = templates.get(conn, tid, number)
                if action in ("save", "submit"):
                    item = templates.update(
                        conn,
                        runtime.clock,
                        tid,
                        number,
                        name=fields["name"],
                        body=fields["body"],
                        link_url=fields["link_url"],
                        actor=actor,
                    )
            if action == "submit":
                ctx = service.context(conn, tid, item["category"])
                templates.submit(conn, runtime.clock, tid, number, ctx, actor=actor)
            elif action == "withdraw":
                templates.withdraw(conn, runtime.clock, tid, number, actor=actor)
            elif action == "archive":
                templates.archive(conn, runtime.clock, tid, number, actor=actor)
    except HongyanError as exc:
        return _editor(request, principal, template=item, form=fields, error=exc, status=422)
    response = _redirect(f"/console/content/templates/{number}")
    done = {
        "submit": ("已提交审核", "Submitted for review"),
        "withdraw": ("已撤回审核", "Withdrawn from review"),
        "archive": ("已归档", "Archived"),
    }.get(action, ("已保存", "Saved"))
    _set_flash(request, response, done[0], done[1], kind="info")
    return response


async def editor_update(request: Request, template_id: str) -> Response:
    return await editor_save(request, template_id)


async def signature_submit(request: Request) -> Response:
    principal = _require(request)
    await _check_csrf(request, principal)
    _allow(principal, Permission.MANAGE_TENANT)
    form = await request.form()
    runtime = _runtime(request)
    response = _redirect("/console/content")
    try:
        with runtime.engine.begin() as conn:
            signatures.submit(
                conn,
                runtime.clock,
                principal.tenant_id,
                _field(form, "text", 40),
                note=_field(form, "note", 200),
                actor=f"user:{principal.user_id}",
            )
    except HongyanError as exc:
        _set_flash(request, response, exc.message_zh, exc.message_en)
        return response
    _set_flash(request, response, "签名已提交审核", "Signature submitted for review", kind="info")
    return response


async def word_add(request: Request) -> Response:
    principal = _require(request)
    await _check_csrf(request, principal)
    _allow(principal, Permission.MANAGE_TEMPLATES)
    form = await request.form()
    runtime = _runtime(request)
    response = _redirect("/console/content#words")
    try:
        with runtime.engine.begin() as conn:
            service.add_word(
                conn,
                runtime.clock,
                principal.tenant_id,
                list_=_field(form, "list", 16),
                term=_field(form, "term", 40),
                replacement=_field(form, "replacement", 40) or None,
                actor=f"user:{principal.user_id}",
            )
    except HongyanError as exc:
        _set_flash(request, response, exc.message_zh, exc.message_en)
    return response


async def word_remove(request: Request, word_id: str) -> Response:
    principal = _require(request)
    await _check_csrf(request, principal)
    _allow(principal, Permission.MANAGE_TEMPLATES)
    runtime = _runtime(request)
    if not (word_id.isascii() and word_id.isdigit() and len(word_id) <= 9):
        raise NotFound()
    with runtime.engine.begin() as conn:
        service.remove_word(
            conn,
            runtime.clock,
            principal.tenant_id,
            int(word_id),
            actor=f"user:{principal.user_id}",
        )
    return _redirect("/console/content#words")


def install(app: FastAPI) -> None:
    """Add the pages; call before the console's catch-all ``/console/{name}`` route."""
    routes: list[tuple[str, Any, str]] = [
        ("/console/content", content_page, "GET"),
        ("/console/content/new", editor_new, "GET"),
        ("/console/content/new", editor_save, "POST"),
        ("/console/content/lint", lint_panel, "POST"),
        ("/console/content/fix", fix_text, "POST"),
        ("/console/content/templates/{template_id}", editor_page, "GET"),
        ("/console/content/templates/{template_id}", editor_update, "POST"),
        ("/console/content/signatures", signature_submit, "POST"),
        ("/console/content/words", word_add, "POST"),
        ("/console/content/words/{word_id}/delete", word_remove, "POST"),
    ]
    for path, endpoint, method in routes:
        app.add_api_route(path, endpoint, methods=[method], include_in_schema=False)
