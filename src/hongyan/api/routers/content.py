"""Content: the compliance lint, templates and their review, signatures, the tenant's words."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from hongyan.api.deps import CONN, Principal, get_principal, get_runtime
from hongyan.api.params import Id
from hongyan.api.responses import errors
from hongyan.api.routing import api_router
from hongyan.content import service, signatures, templates
from hongyan.content.lint import MAX_TEXT
from hongyan.runtime import Runtime
from hongyan.security.roles import Permission

router = api_router("content")

CATEGORY = Field(pattern="^(verification|notification|marketing)$")


class LintIn(BaseModel):
    text: str = Field(max_length=100_000, description=f"At most {MAX_TEXT} characters are linted")
    category: str = Field(default="marketing", pattern="^(verification|notification|marketing)$")
    fix: bool = Field(default=False, description="Apply the safe fixes and lint the result")


class Localized(BaseModel):
    zh: str
    en: str


class FixOut(BaseModel):
    start: int
    end: int
    text: str
    safe: bool = Field(description="Applied by fix=true; others are offered only")


class FindingOut(BaseModel):
    rule: str = Field(description="Stable id, e.g. signature.missing, word.sensitive")
    severity: str = Field(description="error, warning or info")
    start: int = Field(description="Offset (characters) into the text; start == end: a point")
    end: int
    message: Localized
    suggestion: Localized | None
    fix: FixOut | None
    term: str | None


class LintOut(BaseModel):
    ok: bool = Field(description="No finding of severity error")
    text: str = Field(description="The text linted: with fix=true, the fixed text")
    fixed: bool = False
    encoding: str
    chars: int = Field(description="Units as the carrier counts them")
    parts: int
    per_part: int
    remaining: int
    splits: list[int] = Field(description="Offsets in preview where parts 2, 3 … begin")
    preview: str = Field(description="The text with sample values in its placeholders")
    chars_max: int
    parts_max: int
    findings: list[FindingOut]


@router.post("/lint", response_model=LintOut, summary="Check a text for compliance")
def lint_text(
    body: LintIn, who: Principal = Depends(get_principal), conn: Connection = CONN
) -> Any:
    """Findings against the tenant's own word lists: a role that reads templates."""
    who.require(Permission.READ_TEMPLATES)
    return service.run(conn, who.tenant_id, body.category, body.text, apply_fixes=body.fix)


# -- templates ------------------------------------------------------------------------------


class TemplateIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    category: str = CATEGORY
    body: str = Field(min_length=1, max_length=100_000)
    link_url: str | None = Field(default=None, max_length=500, description="Where {link} leads")


class TemplatePatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    body: str | None = Field(default=None, min_length=1, max_length=100_000)
    link_url: str | None = Field(default=None, max_length=500)


class VersionOut(BaseModel):
    id: int
    version: int
    body: str
    link_url: str | None
    status: str = Field(description="draft, pending, approved or rejected")
    reason: str | None = Field(description="Why it was rejected")
    findings: list[dict[str, Any]] = Field(description="The lint when it was submitted")
    created_at: datetime
    created_by: str
    submitted_at: datetime | None
    reviewed_at: datetime | None
    reviewed_by: str | None


class TemplateOut(BaseModel):
    id: int
    name: str
    category: str
    status: str = Field(description="Of the newest version")
    reason: str | None
    body: str = Field(description="The newest version's text")
    link_url: str | None
    version: int
    live_version: int | None = Field(description="The approved version messages are sent with")
    live_version_id: int | None
    archived: bool
    created_at: datetime
    updated_at: datetime
    versions: list[VersionOut]


class TemplateSummary(BaseModel):
    id: int
    name: str
    category: str
    version: int
    status: str
    reason: str | None
    body: str
    live_version_id: int | None
    updated_at: datetime


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.get("/templates", response_model=list[TemplateSummary], summary="The tenant's templates")
def list_templates(
    category: str | None = Query(default=None, max_length=20),
    archived: bool = False,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
) -> Any:
    who.require(Permission.READ_TEMPLATES)
    return templates.listing(conn, who.tenant_id, category=category, archived=archived)


@router.post(
    "/templates",
    response_model=TemplateOut,
    status_code=201,
    summary="A new template",
    responses=errors(409),
)
def create_template(
    body: TemplateIn,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> Any:
    who.require(Permission.MANAGE_TEMPLATES)
    return templates.create(
        conn,
        runtime.clock,
        who.tenant_id,
        name=body.name,
        category=body.category,
        body=body.body,
        link_url=body.link_url,
        actor=who.actor,
    )


@router.get("/templates/{template_id}", response_model=TemplateOut, summary="A template")
def show_template(
    template_id: Id, who: Principal = Depends(get_principal), conn: Connection = CONN
) -> Any:
    who.require(Permission.READ_TEMPLATES)
    return templates.get(conn, who.tenant_id, template_id)


@router.patch(
    "/templates/{template_id}",
    response_model=TemplateOut,
    summary="Rename or edit: a draft in place, else a new draft version",
    responses=errors(409),
)
def edit_template(
    template_id: Id,
    body: TemplatePatch,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> Any:
    who.require(Permission.MANAGE_TEMPLATES)
    return templates.update(
        conn,
        runtime.clock,
        who.tenant_id,
        template_id,
        name=body.name,
        body=body.body,
        link_url=body.link_url,
        actor=who.actor,
    )


@router.post(
    "/templates/{template_id}/submit",
    response_model=TemplateOut,
    summary="Submit the draft for review (refused while the lint finds errors)",
    responses=errors(409),
)
def submit_template(
    template_id: Id,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> Any:
    who.require(Permission.MANAGE_TEMPLATES)
    category = templates.get(conn, who.tenant_id, template_id)["category"]
    ctx = service.context(conn, who.tenant_id, category)
    return templates.submit(conn, runtime.clock, who.tenant_id, template_id, ctx, actor=who.actor)


@router.post(
    "/templates/{template_id}/withdraw",
    response_model=TemplateOut,
    summary="Withdraw",
    responses=errors(409),
)
def withdraw_template(
    template_id: Id,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> Any:
    who.require(Permission.MANAGE_TEMPLATES)
    return templates.withdraw(conn, runtime.clock, who.tenant_id, template_id, actor=who.actor)


@router.post("/templates/{template_id}/archive", response_model=TemplateOut, summary="Archive")
def archive_template(
    template_id: Id,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> Any:
    who.require(Permission.MANAGE_TEMPLATES)
    return templates.archive(conn, runtime.clock, who.tenant_id, template_id, actor=who.actor)


# -- signatures ------------------------------------------------------------------------------


class SignatureIn(BaseModel):
    text: str = Field(min_length=1, max_length=40, description="【品牌名】")
    note: str = Field(default="", max_length=200, description="For the reviewer: whose brand")


class SignatureOut(BaseModel):
    id: int
    text: str
    status: str = Field(description="pending, approved or rejected")
    is_default: bool
    note: str | None
    reason: str | None
    created_at: datetime
    reviewed_at: datetime | None
    reviewed_by: str | None


@router.get("/signatures", response_model=list[SignatureOut], summary="The tenant's signatures")
def list_signatures(who: Principal = Depends(get_principal), conn: Connection = CONN) -> Any:
    return signatures.listing(conn, who.tenant_id)


@router.post(
    "/signatures",
    response_model=SignatureOut,
    status_code=201,
    summary="Submit for review",
    responses=errors(409),
)
def submit_signature(
    body: SignatureIn,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> Any:
    who.require(Permission.MANAGE_TENANT)
    return signatures.submit(
        conn, runtime.clock, who.tenant_id, body.text, note=body.note, actor=who.actor
    )


@router.post(
    "/signatures/{signature_id}/default",
    response_model=SignatureOut,
    summary="Make default",
    responses=errors(409),
)
def default_signature(
    signature_id: Id,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> Any:
    who.require(Permission.MANAGE_TENANT)
    return signatures.set_default(conn, runtime.clock, who.tenant_id, signature_id, actor=who.actor)


@router.delete(
    "/signatures/{signature_id}",
    status_code=204,
    summary="Withdraw (not approved)",
    responses=errors(409),
)
def withdraw_signature(
    signature_id: Id,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> None:
    who.require(Permission.MANAGE_TENANT)
    signatures.withdraw(conn, runtime.clock, who.tenant_id, signature_id, actor=who.actor)


# -- words ---------------------------------------------------------------------------------------


class WordIn(BaseModel):
    list: str = Field(pattern="^(sensitive|absolute|forbidden|vague|exception)$")
    term: str = Field(min_length=1, max_length=40)
    replacement: str | None = Field(default=None, max_length=40)


class WordOut(BaseModel):
    id: int
    list: str
    term: str
    replacement: str | None


@router.get("/words", response_model=list[WordOut], summary="The tenant's own words")
def list_words(who: Principal = Depends(get_principal), conn: Connection = CONN) -> Any:
    who.require(Permission.READ_TEMPLATES)
    return service.words(conn, who.tenant_id)


@router.post(
    "/words",
    response_model=WordOut,
    status_code=201,
    summary="Add a word or exception",
    responses=errors(409),
)
def add_word(
    body: WordIn,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> Any:
    who.require(Permission.MANAGE_TEMPLATES)
    return service.add_word(
        conn,
        runtime.clock,
        who.tenant_id,
        list_=body.list,
        term=body.term,
        replacement=body.replacement,
        actor=who.actor,
    )


@router.delete("/words/{word_id}", status_code=204, summary="Remove a word")
def remove_word(
    word_id: Id,
    who: Principal = Depends(get_principal),
    conn: Connection = CONN,
    runtime: Runtime = Depends(get_runtime),
) -> None:
    who.require(Permission.MANAGE_TEMPLATES)
    service.remove_word(conn, runtime.clock, who.tenant_id, word_id, actor=who.actor)
