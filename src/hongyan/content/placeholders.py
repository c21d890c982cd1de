"""Filling ``{name}`` placeholders: the whole template language a sender may use (pure).

A placeholder is a name in braces: letters (Chinese too), digits and ``_``, not starting with a
digit. ``{{`` and ``}}`` are literal braces. Nothing else is accepted: no attribute or index
access (``{a.b}``, ``{a[0]}``), no format specs or conversions (``{a:>9}``, ``{a!r}``), no
expressions, so a template can only place values, never run anything. A value is text or a
number; a missing or unknown parameter is an error, never a silent blank.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from hongyan.errors import ValidationFailed

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"^[^\W\d]\w{0,39}$")
MAX_VALUE = 500


class TemplateError(ValidationFailed):
    code = "template_invalid"


class UnknownParameter(ValidationFailed):
    code = "template_parameter_unknown"


class MissingParameter(ValidationFailed):
    code = "template_parameter_missing"


def placeholders(template: str) -> list[str]:
    """The placeholder names in order of first use; TemplateError for anything else in braces."""
    names: list[str] = []
    for m in _TOKEN.finditer(template):
        piece = m.group(0)
        if piece in ("{{", "}}"):
            continue
        inner = m.group(1)
        if inner is None or not _NAME.match(inner):
            shown = piece
            raise TemplateError(
                f"{shown!s} is not a placeholder: use {{name}} with letters, digits and _ "
                "(write {{ and }} for literal braces)",
                f"{shown!s} 不是合法占位符：请使用 {{名称}}（字母、数字、下划线；"
                "字面花括号写作 {{ 和 }}）",
                details={"at": m.start()},
            )
        if inner not in names:
            names.append(inner)
    return names


def render(template: str, params: Mapping[str, object]) -> str:
    """The template with every placeholder replaced by its parameter's text."""
    names = placeholders(template)
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise UnknownParameter(
            f"Parameters not used by the template: {', '.join(unknown)}",
            f"模板中没有这些参数：{'、'.join(unknown)}",
            details={"unknown": unknown},
        )
    missing = [n for n in names if n not in params]
    if missing:
        raise MissingParameter(
            f"The template needs: {', '.join(missing)}",
            f"缺少模板参数：{'、'.join(missing)}",
            details={"missing": missing},
        )
    values: dict[str, str] = {}
    for name in names:
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise TemplateError(
                f"Parameter {name} must be text or a number",
                f"参数 {name} 必须是文本或数字",
            )
        text = str(value)
        if len(text) > MAX_VALUE:
            raise TemplateError(
                f"Parameter {name} is longer than {MAX_VALUE} characters",
                f"参数 {name} 超过 {MAX_VALUE} 个字符",
            )
        values[name] = text

    def fill(m: re.Match[str]) -> str:
        piece = m.group(0)
        if piece in ("{{", "}}"):
            return piece[0]
        return values[m.group(1)]

    return _TOKEN.sub(fill, template)
