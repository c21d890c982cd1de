"""The lint against a tenant's data, and the tenant's own words.

:func:`context` gathers, in three small queries, what the pure lint needs to know about a tenant:
its policy, its signatures, its words, and the price per part of the channel its marketing goes
out on. The custom attribute names are a parameter: they come from the contacts capability's
attribute registry (see :func:`attribute_names`).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from hongyan.channels import service as channel_store
from hongyan.clock import Clock
from hongyan.content.lint import CATEGORIES, Category, LintContext, LintResult, fix, lint
from hongyan.content.wordlists import LISTS, Entry, ListName, check_term, matcher_for
from hongyan.db.scope import TenantScope
from hongyan.db.tables import content_words
from hongyan.dispatch.routing import route_for
from hongyan.dispatch.states import Lane
from hongyan.errors import Conflict, NotFound, ValidationFailed
from hongyan.security import audit
from hongyan.tenants import service as tenants


class UnknownCategory(ValidationFailed):
    code = "category_unknown"


def category_of(value: str) -> Category:
    if value not in CATEGORIES:
        raise UnknownCategory(
            f"Unknown category {value!r}: verification, notification or marketing",
            f"未知类别 {value!r}：须为 verification、notification 或 marketing",
        )
    return value


def attribute_names(conn: Connection, tenant_id: int) -> frozenset[str]:
    """The tenant's custom contact attribute keys, for ``{attr.key}`` placeholders: the
    contacts capability's registry (``contacts.fields``)."""
    from hongyan.contacts.fields import attribute_definitions

    return frozenset(d.name for d in attribute_definitions(conn, tenant_id))


def tenant_entries(conn: Connection, tenant_id: int) -> tuple[Entry, ...]:
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(
            content_words, content_words.c.list, content_words.c.term, content_words.c.replacement
        )
        .order_by(content_words.c.id)
    )
    return tuple(Entry(r.list, r.term, r.replacement, tenant=True) for r in rows)


def price_per_part(conn: Connection, tenant_id: int, lane: Lane) -> Decimal | None:
    """What one part costs on the channel the tenant's messages of ``lane`` go out on first
    (its route for China Mobile numbers, else the channel of highest priority); None when
    no channel has a price."""
    channels = [c for c in channel_store.list_channels(conn) if c["enabled"]]
    if not channels:
        return None
    route = route_for(channel_store.tenant_routes(conn, tenant_id), lane, "cmcc")
    by_name = {c["name"]: c for c in channels}
    names = [n for n in route.channels if n in by_name] if route else [c["name"] for c in channels]
    if not names:
        return None
    price = Decimal(by_name[names[0]]["price_per_part"])
    return price if price > 0 else None


def context(
    conn: Connection,
    tenant_id: int,
    category: str,
    *,
    attributes: Iterable[str] | None = None,
) -> LintContext:
    """Everything the lint needs about the tenant, for texts of ``category``."""
    cat = category_of(category)
    policy = tenants.policy_of(conn, tenant_id)
    sigs = tenants.signatures_of(conn, tenant_id)
    approved = tuple(s["text"] for s in sigs if s["status"] == "approved")
    default = next(
        (s["text"] for s in sigs if s["status"] == "approved" and s["is_default"]),
        approved[0] if approved else None,
    )
    return LintContext(
        category=cat,
        approved_signatures=approved,
        pending_signatures=tuple(s["text"] for s in sigs if s["status"] == "pending"),
        default_signature=default,
        marketing_allowed=bool(policy["marketing_allowed"]),
        require_ad_mark=bool(policy["require_ad_mark"]),
        ad_mark=policy["ad_mark"],
        unsubscribe_text=policy["unsubscribe_text"],
        max_parts=int(policy["max_parts"]),
        price_per_part=price_per_part(conn, tenant_id, Lane[cat.upper()]),
        attributes=frozenset(
            attribute_names(conn, tenant_id) if attributes is None else attributes
        ),
        matcher=matcher_for(tenant_entries(conn, tenant_id)),
    )


def run(
    conn: Connection, tenant_id: int, category: str, text: str, *, apply_fixes: bool = False
) -> dict[str, Any]:
    """``hongyan lint`` and ``POST /api/v1/lint``: the result, with the fixed text on request."""
    ctx = context(conn, tenant_id, category)
    result: LintResult
    if apply_fixes:
        fixed, result = fix(text, ctx)
        return {**result.as_dict(), "text": fixed, "fixed": fixed != text}
    result = lint(text, ctx)
    return {**result.as_dict(), "text": text}


# -- a tenant's words -------------------------------------------------------------------------


def list_name(value: str) -> ListName:
    if value not in LISTS:
        raise ValidationFailed(
            f"Unknown list {value!r}: one of {', '.join(LISTS)}",
            f"未知词表 {value!r}：须为 {'、'.join(LISTS)} 之一",
        )
    return value


def words(conn: Connection, tenant_id: int) -> list[dict[str, Any]]:
    stmt = (
        TenantScope(tenant_id)
        .select(content_words)
        .order_by(content_words.c.list, content_words.c.term)
    )
    return [{k: v for k, v in r.items() if k != "tenant_id"} for r in conn.execute(stmt).mappings()]


def add_word(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    *,
    list_: str,
    term: str,
    replacement: str | None = None,
    actor: str,
) -> dict[str, Any]:
    name = list_name(list_)
    term, repl = check_term(term, replacement)
    if repl is not None and name != "sensitive":
        raise ValidationFailed(
            "Only sensitive words take a replacement", "只有敏感词可以设置替换词"
        )
    try:
        with conn.begin_nested():
            result = conn.execute(
                TenantScope(tenant_id).insert(content_words),
                {
                    "list": name,
                    "term": term,
                    "replacement": repl,
                    "created_at": clock.now(),
                    "created_by": actor,
                },
            )
    except IntegrityError:
        raise Conflict(f"{term!r} is already on the {name} list", f"“{term}”已在该词表中") from None
    assert result.inserted_primary_key is not None
    word_id = int(result.inserted_primary_key[0])
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="words.add",
        target=f"word:{word_id}",
        detail={"list": name, "term": term},
    )
    return {"id": word_id, "list": name, "term": term, "replacement": repl}


def remove_word(
    conn: Connection, clock: Clock, tenant_id: int, word_id: int, *, actor: str
) -> None:
    scope = TenantScope(tenant_id)
    result = conn.execute(scope.delete(content_words).where(content_words.c.id == word_id))
    if result.rowcount != 1:
        raise NotFound("No such word", "找不到该词条")
    audit.record(
        conn,
        clock,
        tenant_id=tenant_id,
        actor=actor,
        action="words.remove",
        target=f"word:{word_id}",
    )


__all__ = [
    "add_word",
    "attribute_names",
    "category_of",
    "context",
    "list_name",
    "price_per_part",
    "remove_word",
    "run",
    "words",
]
