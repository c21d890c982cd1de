"""The template language: ``{name}`` placeholders with defaults, and nothing else (pure).

One language for every template on the platform: a transactional text sent through the API
(``template`` + ``params``), a stored verification or notification template, and a marketing
template rendered for a million contacts.

Syntax
    ``{name}``
        A placeholder: a name of letters (Chinese too), digits and ``_``, not starting with a
        digit nor with ``__``, at most 40 characters.
    ``{attr.key}``
        A tenant's custom contact attribute (``{attr.会员等级}``); ``key`` is a name as above.
    ``{name|default}``
        The default renders when the value is missing or empty: ``{name|您好}``. It is plain
        text of at most 40 characters without braces; ``{name|}`` defaults to nothing.
    ``{{`` and ``}}``
        Literal braces.

Anything else in braces is refused with the position of the mistake: attribute or index access
(``{a.b}``, ``{a[0]}``), format specs and conversions (``{a:>9}``, ``{a!r}``), spaces, an
empty ``{}``, an unbalanced brace. There is no expression, no call, no loop and no condition,
so a template can only place values; rendering never looks anything up on a Python object, and
a parse is one left-to-right pass (linear time). Which names a template may use, and how contact
fields render, is :mod:`hongyan.content.fields`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from hongyan.content.fields import ATTRIBUTE_PREFIX
from hongyan.errors import ValidationFailed

_TOKEN: Final = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME: Final = re.compile(r"[^\W\d]\w{0,39}")
MAX_VALUE: Final = 500
MAX_DEFAULT: Final = 40


class TemplateError(ValidationFailed):
    code = "template_invalid"


class UnknownParameter(ValidationFailed):
    code = "template_parameter_unknown"


class MissingParameter(ValidationFailed):
    code = "template_parameter_missing"


@dataclass(frozen=True, slots=True)
class Slot:
    """One placeholder: its key (``name``, ``attr.level``), default, and where it stands.

    ``start``/``end`` span the whole ``{…}`` in the template; ``default_at`` is where the
    default's text begins (None without a default).
    """

    key: str
    default: str | None
    start: int
    end: int
    default_at: int | None = None


#: A parsed template: literal text and placeholders, in order.
Piece = str | Slot


def _refuse(piece: str, at: int, why_en: str, why_zh: str) -> TemplateError:
    return TemplateError(
        f"{piece} is not a placeholder: {why_en} (write {{{{ and }}}} for literal braces)",
        f"{piece} 不是合法占位符：{why_zh}（字面花括号写作 {{{{ 和 }}}}）",
        details={"at": at, "end": at + len(piece)},
    )


def _slot(inner: str, piece: str, at: int) -> Slot:
    ref, bar, default = inner.partition("|")
    name = ref.removeprefix(ATTRIBUTE_PREFIX)
    if not _NAME.fullmatch(name):
        raise _refuse(
            piece,
            at,
            "use {name}, {attr.name} or {name|default}, a name being letters, digits and _",
            "请使用 {名称}、{attr.名称} 或 {名称|默认值}，名称由字母、数字、下划线组成",
        )
    if name.startswith("__"):
        raise _refuse(
            piece,
            at,
            "names may not start with __ (templates cannot reach Python internals)",
            "名称不能以 __ 开头（模板不能访问 Python 内部对象）",
        )
    if not bar:
        return Slot(ref, None, at, at + len(piece))
    if len(default) > MAX_DEFAULT:
        raise _refuse(
            piece,
            at,
            f"a default is at most {MAX_DEFAULT} characters",
            f"默认值最多 {MAX_DEFAULT} 个字符",
        )
    return Slot(ref, default, at, at + len(piece), at + 1 + len(ref) + 1)


def tokens(template: str) -> list[tuple[Piece, int]]:
    """Literal chunks, each with the position of its first character, and slots, in order.

    A chunk's characters stand at consecutive positions; a literal brace written ``{{`` or
    ``}}`` is a chunk of its own. TemplateError at the first mistake.
    """
    out: list[tuple[Piece, int]] = []
    last = 0
    for m in _TOKEN.finditer(template):
        if m.start() > last:
            out.append((template[last : m.start()], last))
        last = m.end()
        piece = m.group(0)
        if piece in ("{{", "}}"):
            out.append((piece[0], m.start()))
            continue
        inner = m.group(1)
        if inner is None:
            raise _refuse(piece, m.start(), "unbalanced brace", "花括号不成对")
        out.append((_slot(inner, piece, m.start()), m.start()))
    if last < len(template):
        out.append((template[last:], last))
    return out


def parse(template: str) -> tuple[Piece, ...]:
    """The template as literal text and :class:`Slot` s; TemplateError at the first mistake."""
    pieces: list[Piece] = []
    for piece, _at in tokens(template):
        if isinstance(piece, str) and pieces and isinstance(pieces[-1], str):
            pieces[-1] += piece
        else:
            pieces.append(piece)
    return tuple(pieces)


def placeholders(template: str) -> list[str]:
    """The placeholder keys in order of first use; TemplateError for anything else in braces."""
    keys: list[str] = []
    for piece in parse(template):
        if isinstance(piece, Slot) and piece.key not in keys:
            keys.append(piece.key)
    return keys


def value_text(key: str, value: object) -> str:
    """A parameter's text: text or a number, at most :data:`MAX_VALUE` characters."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TemplateError(
            f"Parameter {key} must be text or a number",
            f"参数 {key} 必须是文本或数字",
        )
    text = str(value)
    if len(text) > MAX_VALUE:
        raise TemplateError(
            f"Parameter {key} is longer than {MAX_VALUE} characters",
            f"参数 {key} 超过 {MAX_VALUE} 个字符",
        )
    return text


def render(template: str, params: Mapping[str, object]) -> str:
    """The template with every placeholder replaced by its parameter's text.

    A missing or empty parameter takes the placeholder's default; a missing one without a
    default is an error (MissingParameter), and so is a parameter the template does not use
    (UnknownParameter). An empty parameter without a default renders empty.
    """
    pieces = parse(template)
    slots = [p for p in pieces if isinstance(p, Slot)]
    used = {s.key for s in slots}
    unknown = sorted(set(params) - used)
    if unknown:
        raise UnknownParameter(
            f"Parameters not used by the template: {', '.join(unknown)}",
            f"模板中没有这些参数：{'、'.join(unknown)}",
            details={"unknown": unknown},
        )
    values = {key: value_text(key, value) for key, value in params.items()}
    missing: list[str] = []
    for s in slots:
        if s.key not in values and s.default is None and s.key not in missing:
            missing.append(s.key)
    if missing:
        raise MissingParameter(
            f"The template needs: {', '.join(missing)}",
            f"缺少模板参数：{'、'.join(missing)}",
            details={"missing": missing},
        )
    return "".join(
        p if isinstance(p, str) else (values.get(p.key) or p.default or "") for p in pieces
    )
