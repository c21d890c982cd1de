"""Console pages for audiences: the segment list and snapshots, a segment builder with a live
count, the RFM view (the 5 × 5 R × F grid with counts and revenue, the eight groups) and the
lifecycle funnel, each chart also a table.

The builder is a form of conditions joined by "all" or "any", each negatable; a rule that does
not fit that shape (nested groups) is edited as JSON. Structural changes (add or remove a
condition, change a field) re-render the form on the server (htmx swaps it); editing a value
refreshes the count and sample only. Without JavaScript the buttons post the form and the page
comes back. Charts are drawn by Apache ECharts, served from ``/static/vendor`` with the page's
data in a ``<script type="application/json">`` block (the CSP allows no inline script).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.engine import Connection

from hongyan.audience import recompute, rules, scoring, segments, service
from hongyan.audience.rules import OPERATORS, RuleInvalid, Schema
from hongyan.audience.scoring import Splits, Thresholds
from hongyan.errors import HongyanError, NotFound, ValidationFailed
from hongyan.security.roles import Permission, can
from hongyan.web.console import _check_csrf, _redirect, _set_flash
from hongyan.web.records import _Page

LIST_OPS = {"in", "not_in", "has_any", "has_all", "has_none"}
PAIR_OPS = {"between"}
DAY_OPS = {"within_days", "not_within_days"}
MAX_ROWS = 30


@dataclass
class Row:
    field: str = "lifecycle"
    op: str = "eq"
    value: str = ""
    value2: str = ""
    values: list[str] = dataclasses.field(default_factory=list)  # multi-selects
    negate: bool = False
    min_weight: str = ""
    within: str = ""


@dataclass
class Builder:
    match: str = "all"  # all / any
    rows: list[Row] = dataclasses.field(default_factory=list)
    mode: str = "form"  # form / json
    rule_json: str = ""
    name: str = ""
    description: str = ""
    segment_id: int | None = None


# -- rule ↔ form -----------------------------------------------------------------------------------


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def builder_of(rule: Any) -> Builder:
    """A saved rule in the form's shape, or JSON mode when it does not fit."""
    b = Builder()
    if isinstance(rule, dict) and len(rule) == 1 and ("all" in rule or "any" in rule):
        b.match = "all" if "all" in rule else "any"
        items = rule[b.match]
    else:
        items = [rule]
    rows = []
    for item in items if isinstance(items, list) else []:
        negate = isinstance(item, dict) and set(item) == {"not"}
        cond = item["not"] if negate else item
        if not isinstance(cond, dict) or "field" not in cond:
            return Builder(mode="json", rule_json=json.dumps(rule, ensure_ascii=False, indent=2))
        v = cond.get("value")
        row = Row(field=str(cond["field"]), op=str(cond.get("op", "")), negate=negate)
        if isinstance(v, dict):  # near
            row.value, row.value2 = _text(v.get("km")), _text(v.get("store"))
        elif isinstance(v, list) and row.op in PAIR_OPS and len(v) == 2:
            row.value, row.value2 = _text(v[0]), _text(v[1])
        elif isinstance(v, list):
            row.values = [_text(x) for x in v]
            row.value = "，".join(row.values)
        else:
            row.value = _text(v)
        row.min_weight = _text(cond.get("min_weight"))
        row.within = _text(cond.get("within_days"))
        rows.append(row)
    b.rows = rows
    return b


def _number(text: str, path: str) -> float | int:
    try:
        n = float(text.strip().replace(",", ""))
    except ValueError:
        raise RuleInvalid(
            f"{path}: a number", f"{path}：须为数字", details={"path": path}
        ) from None
    return int(n) if n.is_integer() and "." not in text else n


def _split(text: str) -> list[str]:
    import re

    return [p for p in re.split(r"[,，、;；\s]+", text.strip()) if p]


def _value(spec: rules.FieldSpec, row: Row, path: str) -> Any:
    kind, op = spec.kind, row.op
    if op in rules.NO_VALUE:
        return None
    if kind == "near":
        near: dict[str, Any] = {"km": _number(row.value, path + ".km")}
        if row.value2:
            near["store"] = int(row.value2) if row.value2.isdigit() else row.value2
        return near
    if kind == "segment":
        return int(row.value) if row.value.isdigit() else row.value
    if op in DAY_OPS or (kind == "date" and op == "within_days"):
        return int(_number(row.value, path))
    if op in PAIR_OPS:
        if kind == "number":
            return [_number(row.value, path + "[0]"), _number(row.value2, path + "[1]")]
        return [row.value.strip(), row.value2.strip()]
    if op in LIST_OPS:
        return row.values if kind == "enum" and row.values else _split(row.value)
    if kind == "number":
        return _number(row.value, path)
    return row.value.strip()


def rule_of(b: Builder, schema: Schema) -> Any:
    """The form as a rule tree, checked against the schema (RuleInvalid names the row)."""
    if b.mode == "json":
        try:
            rule = json.loads(b.rule_json or "{}")
        except json.JSONDecodeError as exc:
            raise RuleInvalid(
                f"rule: not valid JSON ({exc.msg})", f"规则：不是有效的 JSON（{exc.msg}）",
                details={"path": "rule"},
            ) from None  # fmt: skip
        rules.parse(rule, schema)
        return rule
    items = []
    for i, row in enumerate(b.rows):
        path = f"rule.{b.match}[{i}]"
        spec = schema.fields.get(row.field)
        if spec is None:
            rules.parse({"field": row.field, "op": row.op}, schema)  # the typed refusal
            continue
        cond: dict[str, Any] = {"field": row.field, "op": row.op}
        value = _value(spec, row, path + ".value")
        if value is not None:
            cond["value"] = value
        if spec.kind == "interest":
            if row.min_weight.strip():
                cond["min_weight"] = _number(row.min_weight, path + ".min_weight")
            if row.within.strip():
                cond["within_days"] = int(_number(row.within, path + ".within_days"))
        items.append({"not": cond} if row.negate else cond)
    rule = {b.match: items}
    rules.parse(rule, schema)
    return rule


async def _builder_from_form(request: Request) -> tuple[Builder, str]:
    form = await request.form()

    def text(name: str, limit: int = 2000) -> str:
        value = form.get(name)
        return value.strip()[:limit] if isinstance(value, str) else ""

    b = Builder(
        match="any" if text("match") == "any" else "all",
        mode="json" if text("mode") == "json" else "form",
        rule_json=text("rule_json", 20000),
        name=text("name", 100),
        description=text("description", 500),
        segment_id=int(text("segment_id")) if text("segment_id").isdigit() else None,
    )
    count = min(int(text("rows")) if text("rows").isdigit() else 0, MAX_ROWS)
    for i in range(count):
        if f"field{i}" not in form:
            continue
        b.rows.append(
            Row(
                field=text(f"field{i}", 60),
                op=text(f"op{i}", 30),
                value=text(f"value{i}", 1000),
                value2=text(f"value2_{i}", 1000),
                values=[v for v in form.getlist(f"values{i}") if isinstance(v, str)][:100],
                negate=bool(text(f"negate{i}")),
                min_weight=text(f"min_weight{i}", 20),
                within=text(f"within{i}", 20),
            )
        )
    return b, text("action", 40)


def _fix_ops(b: Builder, schema: Schema) -> None:
    """A field changed: keep the operator if the new field has it, else take its first."""
    for row in b.rows:
        spec = schema.fields.get(row.field)
        if spec is not None and row.op not in OPERATORS[spec.kind]:
            row.op = OPERATORS[spec.kind][0]
            row.value = row.value2 = ""
            row.values = []


def _apply(b: Builder, action: str, schema: Schema) -> None:
    if action == "add" and len(b.rows) < MAX_ROWS:
        b.rows.append(Row())
    elif action.startswith("remove:") and action[7:].isdigit():
        i = int(action[7:])
        if 0 <= i < len(b.rows):
            del b.rows[i]
    elif action == "to_json":
        try:
            rule = rule_of(b, schema)
        except HongyanError:
            rule = {b.match: []}
        b.mode, b.rule_json = "json", json.dumps(rule, ensure_ascii=False, indent=2)
    elif action == "to_form":
        try:
            back = builder_of(json.loads(b.rule_json or "{}"))
        except json.JSONDecodeError:
            back = Builder(mode="json", rule_json=b.rule_json)
        back.name, back.description, back.segment_id = b.name, b.description, b.segment_id
        b.__dict__.update(back.__dict__)
    _fix_ops(b, schema)


# -- labels ------------------------------------------------------------------------------------


def _labels(lang: str, schema: Schema) -> dict[str, Any]:
    zh = lang == "zh-CN"
    choice: dict[str, str] = {}
    for code, (z, e) in {**scoring.STAGE_NAMES, **scoring.GROUP_NAMES}.items():
        choice[code] = z if zh else e
    from hongyan.web.i18n import translate

    for c in rules.CARRIERS:
        choice[c] = translate(lang, f"carrier.{c}")
    choice.update({"f": "女" if zh else "female", "m": "男" if zh else "male"})
    choice.update(
        {
            "marketing": "营销" if zh else "marketing",
            "notification": "通知" if zh else "notification",
        }
    )
    groups: dict[str, list[tuple[str, str]]] = {}
    for spec in schema.fields.values():
        groups.setdefault(spec.group, []).append((spec.name, spec.zh if zh else spec.en))
    return {"choice": choice, "field_groups": groups}


# -- pages -----------------------------------------------------------------------------------------


def _can_manage(view: _Page) -> bool:
    return can(view.principal.role, Permission.MANAGE_CONTACTS)


def overview(request: Request) -> Response:
    view = _Page(request, Permission.READ_CONTACTS)
    with view.runtime.engine.begin() as conn:
        tid = view.principal.tenant_id
        return view.respond(
            conn,
            "audiences",
            active="audiences",
            error=None,
            segments=segments.list_segments(conn, tid),
            audiences=segments.list_audiences(conn, tid, limit=10),
            settings=service.get_settings(conn, tid),
            manage=_can_manage(view),
        )


def _builder_page(
    view: _Page,
    conn: Connection,
    b: Builder,
    *,
    partial: bool = False,
    status: int = 200,
    save_problem: HongyanError | None = None,
) -> HTMLResponse:
    tid = view.principal.tenant_id
    schema = service.load_schema(conn, tid)
    preview, problem = _preview(view, conn, b, schema)
    page = view.respond(
        conn,
        "audience_builder" if not partial else "_audience_body",
        active="audiences",
        error=None,
        b=b,
        schema=schema,
        ops=OPERATORS,
        list_ops=LIST_OPS,
        pair_ops=PAIR_OPS,
        day_ops=DAY_OPS,
        no_value=rules.NO_VALUE,
        preview=preview,
        problem=problem,
        manage=_can_manage(view),
        stores=list(schema.stores.values()),
        saved=[(i, n) for i, (n, _r) in schema.segments.items() if i != b.segment_id],
        save_problem=save_problem,
        **_labels(view.lang, schema),
    )
    page.status_code = status
    return page


def _preview(
    view: _Page, conn: Connection, b: Builder, schema: Schema
) -> tuple[dict[str, Any] | None, HongyanError | None]:
    try:
        rule = rule_of(b, schema)
        return segments.preview(
            conn, view.runtime.clock, view.principal.tenant_id, rule, sample=10
        ), None
    except HongyanError as exc:
        return None, exc


def new_segment(request: Request) -> Response:
    view = _Page(request, Permission.READ_CONTACTS)
    with view.runtime.engine.begin() as conn:
        return _builder_page(view, conn, Builder(rows=[Row(value="active")]))


def _segment_id(value: str) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 9):
        raise NotFound("No such segment", "找不到该人群")
    return int(value)


def edit_segment(request: Request, segment_id: str) -> Response:
    view = _Page(request, Permission.READ_CONTACTS)
    with view.runtime.engine.begin() as conn:
        seg = segments.get(conn, view.principal.tenant_id, _segment_id(segment_id))
        b = builder_of(seg["rule"])
        b.name, b.description, b.segment_id = seg["name"], seg["description"], int(seg["id"])
        return _builder_page(view, conn, b)


async def builder(request: Request) -> Response:
    """A structural change (add / remove a condition, a new field, JSON ↔ form): the form
    again, with its count."""
    view = _Page(request, Permission.READ_CONTACTS)
    await _check_csrf(request, view.principal)
    b, action = await _builder_from_form(request)
    with view.runtime.engine.begin() as conn:
        _apply(b, action, service.load_schema(conn, view.principal.tenant_id))
        partial = request.headers.get("hx-request") == "true"
        return _builder_page(view, conn, b, partial=partial)


async def preview(request: Request) -> Response:
    """The live count and sample for the form as it stands."""
    view = _Page(request, Permission.READ_CONTACTS)
    await _check_csrf(request, view.principal)
    b, _action = await _builder_from_form(request)
    with view.runtime.engine.begin() as conn:
        schema = service.load_schema(conn, view.principal.tenant_id)
        got, problem = _preview(view, conn, b, schema)
        return view.respond(
            conn, "_audience_preview", active="audiences", error=None, preview=got,
            problem=problem, **_labels(view.lang, schema),
        )  # fmt: skip


async def save(request: Request) -> Response:
    view = _Page(request, Permission.MANAGE_CONTACTS)
    await _check_csrf(request, view.principal)
    b, _action = await _builder_from_form(request)
    actor = f"user:{view.principal.user_id}"
    tid = view.principal.tenant_id
    try:
        with view.runtime.engine.begin() as conn:
            rule = rule_of(b, service.load_schema(conn, tid))
            if b.segment_id is None:
                seg = segments.create(
                    conn, view.runtime.clock, tid, name=b.name, rule=rule,
                    description=b.description, actor=actor,
                )  # fmt: skip
            else:
                seg = segments.update(
                    conn, view.runtime.clock, tid, b.segment_id, name=b.name, rule=rule,
                    description=b.description, actor=actor,
                )  # fmt: skip
    except HongyanError as exc:
        with view.runtime.engine.begin() as conn:
            return _builder_page(view, conn, b, status=422, save_problem=exc)
    response = _redirect(f"/console/audiences/segments/{seg['id']}")
    _set_flash(
        request, response, f"已保存人群“{seg['name']}”", f"Saved segment {seg['name']}", "info"
    )
    return response


async def snapshot(request: Request, segment_id: str) -> Response:
    view = _Page(request, Permission.MANAGE_CONTACTS)
    await _check_csrf(request, view.principal)
    form = await request.form()
    purpose = "notification" if form.get("purpose") == "notification" else "marketing"
    ref = form.get("campaign_ref")
    with view.runtime.engine.begin() as conn:
        aud = segments.snapshot(
            conn, view.runtime.clock, view.principal.tenant_id, segment=_segment_id(segment_id),
            purpose=purpose, campaign_ref=ref.strip()[:64] if isinstance(ref, str) else None,
            actor=f"user:{view.principal.user_id}",
        )  # fmt: skip
    c = aud["counts"]
    response = _redirect("/console/audiences")
    _set_flash(
        request,
        response,
        f"已冻结受众 #{aud['id']}：共匹配 {c['matched']} 人，纳入 {c['included']} 人；"
        f"排除 {c['suppressed']} 人（屏蔽名单）、{c['no_consent']} 人（未授权）",
        f"Audience #{aud['id']} frozen: {c['matched']} matched, {c['included']} included; "
        f"excluded {c['suppressed']} suppressed, {c['no_consent']} without consent",
        "info",
    )
    return response


async def delete(request: Request, segment_id: str) -> Response:
    view = _Page(request, Permission.MANAGE_CONTACTS)
    await _check_csrf(request, view.principal)
    with view.runtime.engine.begin() as conn:
        segments.delete(
            conn, view.runtime.clock, view.principal.tenant_id, _segment_id(segment_id),
            actor=f"user:{view.principal.user_id}",
        )  # fmt: skip
    return _redirect("/console/audiences")


def export(request: Request, segment_id: str) -> Response:
    from fastapi.responses import StreamingResponse

    view = _Page(request, Permission.MANAGE_CONTACTS)
    tid = view.principal.tenant_id
    with view.runtime.engine.begin() as conn:
        seg = segments.start_export(
            conn, view.runtime.clock, tid, _segment_id(segment_id),
            actor=f"user:{view.principal.user_id}",
        )  # fmt: skip
    return StreamingResponse(
        segments.csv_chunks(view.runtime.engine, view.runtime.clock, tid, seg["rule"]),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="segment-{seg["id"]}.csv"',
            "Cache-Control": "no-store",
        },
    )


# -- RFM and lifecycle ---------------------------------------------------------------------------


def rfm_page(request: Request) -> Response:
    view = _Page(request, Permission.READ_CONTACTS)
    zh = view.lang == "zh-CN"
    with view.runtime.engine.begin() as conn:
        tid = view.principal.tenant_id
        dist = recompute.distribution(conn, tid)
        revenue = recompute.group_revenue(conn, tid)
        cells = {(c["r"], c["f"]): c for c in recompute.grid(conn, tid)}
        settings = service.get_settings(conn, tid)
        grid = [
            [cells.get((r, f), {"buyers": 0, "revenue_fen": 0}) for f in range(1, 6)]
            for r in range(5, 0, -1)
        ]
        groups: list[dict[str, Any]] = [
            {
                "code": code,
                "name": names[0] if zh else names[1],
                "buyers": revenue[code]["buyers"],
                "revenue_fen": revenue[code]["revenue_fen"],
            }
            for code, names in scoring.GROUP_NAMES.items()
        ]
        chart = {
            "heatmap": [
                [f - 1, r - 1, int(c.get("buyers", 0)), int(c.get("revenue_fen", 0)) / 100]
                for r in range(1, 6)
                for f in range(1, 6)
                for c in [cells.get((r, f), {})]
            ],
            "groups": [[g["name"], g["buyers"], g["revenue_fen"] / 100] for g in groups],
            "labels": {
                "r": "R 近度" if zh else "R recency",
                "f": "F 频度" if zh else "F frequency",
                "buyers": "客户数" if zh else "Buyers",
                "revenue": "消费额（元）" if zh else "Revenue (yuan)",
            },
        }
        return view.respond(
            conn, "audience_rfm", active="audiences", error=None, dist=dist, grid=grid,
            groups=groups, settings=settings, chart=json.dumps(chart, ensure_ascii=False),
            manage=_can_manage(view),
        )  # fmt: skip


def lifecycle_page(request: Request) -> Response:
    view = _Page(request, Permission.READ_CONTACTS)
    zh = view.lang == "zh-CN"
    with view.runtime.engine.begin() as conn:
        tid = view.principal.tenant_id
        counts = recompute.lifecycle_now(conn, view.runtime.clock, tid)
        settings = service.get_settings(conn, tid)
        stages = [
            {"code": s, "name": scoring.STAGE_NAMES[s][0 if zh else 1], "contacts": counts[s]}
            for s in (*scoring.FUNNEL, "none")
        ]
        chart = {"funnel": [[s["name"], s["contacts"]] for s in stages if s["code"] != "none"]}
        return view.respond(
            conn, "audience_lifecycle", active="audiences", error=None, stages=stages,
            total=sum(counts.values()), settings=settings,
            chart=json.dumps(chart, ensure_ascii=False), manage=_can_manage(view),
            now=view.runtime.clock.now(),
        )  # fmt: skip


async def recompute_now(request: Request) -> Response:
    view = _Page(request, Permission.MANAGE_CONTACTS)
    await _check_csrf(request, view.principal)
    with view.runtime.engine.begin() as conn:
        figures = recompute.recompute_in(conn, view.runtime.clock, view.principal.tenant_id)
    response = _redirect("/console/audiences/rfm")
    b, secs = figures["buyers"], figures["seconds"]
    _set_flash(
        request,
        response,
        f"已重新计算：{b} 位购买客户，用时 {secs} 秒",
        f"Recomputed: {b} buyers in {secs} s",
        "info",
    )
    return response


async def settings_save(request: Request) -> Response:
    view = _Page(request, Permission.MANAGE_CONTACTS)
    await _check_csrf(request, view.principal)
    form = await request.form()

    def num(name: str) -> int | None:
        v = form.get(name)
        if not isinstance(v, str) or not v.strip():
            return None
        if not v.strip().isdigit():
            raise ValidationFailed(f"{name}: a whole number of days", f"{name}：须为整数天数")
        return int(v.strip())

    def split(name: str) -> float | None:
        v = form.get(name)
        if not isinstance(v, str) or v.strip() in ("", "mean"):
            return None
        try:
            return float(v)
        except ValueError:
            raise ValidationFailed(f"{name}: a score 1–5", f"{name}：须为 1–5 的分数") from None

    with view.runtime.engine.begin() as conn:
        t = service.get_settings(conn, view.principal.tenant_id).thresholds
        service.update_settings(
            conn, view.runtime.clock, view.principal.tenant_id,
            thresholds=Thresholds(
                num("new_days") or t.new_days, num("active_days") or t.active_days,
                num("dormant_days") or t.dormant_days, num("lost_days") or t.lost_days,
            ),
            splits=Splits(split("r_split"), split("f_split"), split("m_split")),
        )  # fmt: skip
    back = form.get("back")
    target = (
        back
        if back in ("/console/audiences/rfm", "/console/audiences/lifecycle")
        else "/console/audiences"
    )
    response = _redirect(str(target))
    _set_flash(request, response, "设置已保存", "Settings saved", "info")
    return response


def install(app: FastAPI) -> None:
    """Add the pages; call before the console's catch-all ``/console/{name}`` route."""
    routes: list[tuple[str, Any, str]] = [
        ("/console/audiences", overview, "GET"),
        ("/console/audiences/new", new_segment, "GET"),
        ("/console/audiences/builder", builder, "POST"),
        ("/console/audiences/preview", preview, "POST"),
        ("/console/audiences/save", save, "POST"),
        ("/console/audiences/rfm", rfm_page, "GET"),
        ("/console/audiences/lifecycle", lifecycle_page, "GET"),
        ("/console/audiences/recompute", recompute_now, "POST"),
        ("/console/audiences/settings", settings_save, "POST"),
        ("/console/audiences/segments/{segment_id}", edit_segment, "GET"),
        ("/console/audiences/segments/{segment_id}/snapshot", snapshot, "POST"),
        ("/console/audiences/segments/{segment_id}/delete", delete, "POST"),
        ("/console/audiences/segments/{segment_id}/export.csv", export, "GET"),
    ]
    for path, endpoint, method in routes:
        app.add_api_route(path, endpoint, methods=[method], include_in_schema=False)
