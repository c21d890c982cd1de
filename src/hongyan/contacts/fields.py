"""A contact's fields: the standard ones, a tenant's custom attributes and their types.

Standard fields are columns of ``contacts`` (``phone``, ``name``, ``gender``, ``birthday``,
``province``, ``city``) and the ``contact_tags`` table (``tags``). Custom attributes live in
``contacts.attrs`` (JSON), and each tenant keeps a registry of their names and types
(``contact_fields``): ``text``, ``number``, ``date`` (ISO ``YYYY-MM-DD``) or ``boolean``. The
registry is filled by import mappings and edited through the API and CLI; templates use it to
know which ``{placeholders}`` exist, segment rules to type-check a comparison
(:func:`attribute_definitions`). An attribute name follows the placeholder rule (letters,
Chinese too, digits and ``_``, not starting with a digit, at most 40 characters).

The value parsers here are pure and shared by imports, the API and the console.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.clock import Clock
from hongyan.content.placeholders import TemplateError, placeholders
from hongyan.db.scope import TenantScope
from hongyan.db.tables import contact_fields
from hongyan.errors import Conflict, NotFound, ValidationFailed

STANDARD_FIELDS = ("phone", "name", "gender", "birthday", "province", "city", "tags", "time_zone")
TYPES = ("text", "number", "date", "boolean")
MAX_TEXT = 500
MAX_TAG = 64

# Column headers people use for the standard fields (compared lower-cased, without spaces).
HEADER_GUESSES: dict[str, tuple[str, ...]] = {
    "phone": (
        "phone", "mobile", "tel", "telephone", "cellphone", "phonenumber", "mobilephone",
        "手机", "手机号", "手机号码", "电话", "电话号码", "联系电话", "联系方式", "号码",
        "移动电话",
    ),
    "name": (
        "name", "fullname", "customer", "姓名", "名字", "客户", "客户名称", "客户姓名", "称呼",
    ),
    "gender": ("gender", "sex", "性别"),
    "birthday": ("birthday", "birthdate", "dob", "birth", "生日", "出生日期", "出生年月日"),
    "province": ("province", "state", "省", "省份", "所在省份"),
    "city": ("city", "市", "城市", "所在城市", "地市"),
    "tags": ("tags", "tag", "labels", "标签", "客户标签"),
    "time_zone": ("timezone", "tz", "时区"),
}  # fmt: skip
_GUESS = {alias: field for field, aliases in HEADER_GUESSES.items() for alias in aliases}


class FieldError(ValidationFailed):
    code = "contact_field_invalid"


@dataclass(frozen=True)
class AttributeDefinition:
    name: str
    type: str
    label: str


def check_attribute_name(name: str) -> str:
    """A custom attribute's name, checked: a valid placeholder name, not a standard field."""
    name = name.strip()
    try:
        ok = placeholders("{" + name + "}") == [name]
    except TemplateError:
        ok = False
    if not ok:
        raise FieldError(
            f"{name!r} cannot name an attribute: use letters (Chinese too), digits and _, "
            "not starting with a digit, at most 40 characters",
            f"“{name}”不能作为属性名：请使用字母（含中文）、数字和下划线，"
            "不以数字开头，最多 40 个字符",
        )
    if name.lower() in STANDARD_FIELDS:
        raise FieldError(
            f"{name!r} is a standard field, not a custom attribute",
            f"“{name}”是标准字段，不能作为自定义属性",
        )
    return name


def check_type(kind: str) -> str:
    if kind not in TYPES:
        raise FieldError(
            f"Attribute type must be one of {', '.join(TYPES)}",
            f"属性类型须为 {'、'.join(TYPES)} 之一",
        )
    return kind


def guess_field(header: str) -> str | None:
    """The standard field a column header most likely means, or None."""
    key = re.sub(r"[\s_\-:：()（）]", "", header).lower()
    return _GUESS.get(key)


# -- value parsers (pure) ------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "y", "t", "是", "对", "有", "✓", "√"}
_FALSE = {"0", "false", "no", "n", "f", "否", "不", "无", "✗", "×"}
_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d", "%Y年%m月%d日", "%d/%m/%Y")
_NUMBER_NOISE = str.maketrans("", "", ",，¥￥$ 元\u3000")


def parse_date(text: str) -> date:
    s = text.strip()
    if len(s) == 10 and s[4] == "-":
        try:
            return date.fromisoformat(s)  # the common case, in C
        except ValueError:
            pass
    if "T" in s or " " in s:  # a timestamp: keep its date
        s = s.replace("T", " ").split(" ")[0]
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(s, fmt).date()
        except ValueError:
            continue
    raise ValueError(text)


def parse_number(text: str) -> int | float:
    s = text.strip().translate(_NUMBER_NOISE)
    value = float(s)  # ValueError for anything else
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return int(value) if value.is_integer() and "." not in s and "e" not in s.lower() else value


def parse_boolean(text: str) -> bool:
    s = text.strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(text)


def parse_value(kind: str, text: str) -> Any:
    """A custom attribute's JSON value from its text; ValueError if the text is not one."""
    if kind == "number":
        return parse_number(text)
    if kind == "date":
        return parse_date(text).isoformat()
    if kind == "boolean":
        return parse_boolean(text)
    value = text.strip()
    if len(value) > MAX_TEXT:
        raise ValueError(text)
    return value


_GENDERS = {
    "f": "f", "female": "f", "woman": "f", "女": "f", "女士": "f", "女性": "f", "w": "f",
    "m": "m", "male": "m", "man": "m", "男": "m", "先生": "m", "男性": "m",
}  # fmt: skip


def parse_gender(text: str) -> str:
    g = _GENDERS.get(text.strip().lower())
    if g is None:
        raise ValueError(text)
    return g


def split_tags(text: str) -> list[str]:
    """Tags from one cell: separated by , ， ; ； | 、 or spaces; each at most 64 characters."""
    out = []
    for tag in re.split(r"[,，;；|、\s]+", text.strip()):
        if tag:
            if len(tag) > MAX_TAG:
                raise ValueError(tag)
            out.append(tag)
    return out


# -- the registry ----------------------------------------------------------------------------------


def attribute_definitions(conn: Connection, tenant_id: int) -> list[AttributeDefinition]:
    """The tenant's custom attributes, by name: what templates and segment rules may use."""
    rows = conn.execute(
        TenantScope(tenant_id)
        .select(
            contact_fields, contact_fields.c.name, contact_fields.c.type, contact_fields.c.label
        )
        .order_by(contact_fields.c.name)
    ).all()
    return [AttributeDefinition(r.name, r.type, r.label) for r in rows]


def define(
    conn: Connection,
    clock: Clock,
    tenant_id: int,
    name: str,
    kind: str,
    label: str | None = None,
) -> AttributeDefinition:
    """Add a custom attribute, or relabel one; its type cannot change once defined."""
    name, kind = check_attribute_name(name), check_type(kind)
    scope = TenantScope(tenant_id)
    existing = {d.name: d for d in attribute_definitions(conn, tenant_id)}
    now = clock.now()
    found = existing.get(name)
    if found is not None:
        if found.type != kind:
            raise Conflict(
                f"Attribute {name!r} is already defined as {found.type}",
                f"属性“{name}”已定义为 {found.type} 类型，不能更改类型",
            )
        if label is not None and label != found.label:
            conn.execute(
                scope.update(contact_fields)
                .where(contact_fields.c.name == name)
                .values(label=label[:100], updated_at=now)
            )
            return AttributeDefinition(name, kind, label[:100])
        return found
    conn.execute(
        scope.insert(contact_fields).values(
            name=name, type=kind, label=(label or "")[:100], created_at=now, updated_at=now
        )
    )
    return AttributeDefinition(name, kind, (label or "")[:100])


def remove(conn: Connection, tenant_id: int, name: str) -> None:
    """Forget an attribute's definition (stored values stay until overwritten)."""
    result = conn.execute(
        TenantScope(tenant_id).delete(contact_fields).where(contact_fields.c.name == name)
    )
    if result.rowcount != 1:
        raise NotFound(f"No attribute {name!r}", f"没有名为“{name}”的属性")


def count(conn: Connection, tenant_id: int) -> int:
    return int(
        conn.execute(TenantScope(tenant_id).select(contact_fields, sa.func.count())).scalar_one()
    )
