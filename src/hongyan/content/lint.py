"""The compliance lint: what is wrong with a text, why, and the fix (pure).

:func:`lint` reads a text (a template: placeholders allowed) against a :class:`LintContext` (the
tenant's category, signatures, policy and words) and returns a :class:`LintResult`: the encoding,
the character count and parts as the carrier counts them, the split points, and findings, each
with a stable rule id, a severity, where it is (``start``/``end``, character offsets into the text
as given; ``start == end`` marks a point, such as where a missing signature goes, and ``0, 0`` the
text as a whole), a message and a suggestion in Chinese and English, and a fix when there is one.
:func:`fix` applies the safe fixes (signature, unsubscribe, ad mark, word replacements, control
characters) and lints again.

Rules (stable ids; docs/content.md has the reasons and the choices):

=====================  ========  ===========================================================
rule                   severity  when
=====================  ========  ===========================================================
text.control           error     control, zero-width or direction-override characters
placeholder.syntax     error     braces that are not a placeholder (``{a.b}``, ``{``)
placeholder.unknown    error     a name the template may not use (see fields.py)
placeholder.no_default warning   a marketing contact field without a default
signature.missing      error     no 【signature】 starting within the first 15 characters
signature.unapproved   error     the signature is not one of the tenant's approved ones
                                 (a warning while it waits for review)
unsubscribe.missing    error     marketing without 回T退订 / 回TD退订 / 退订回T / 回复TD退订 /
                                 拒收请回复R or an equivalent
ad.mark                error     marketing without the advertising mark the policy asks for
word.sensitive         error     a sensitive word (a warning outside marketing)
word.absolute          error     an advertising-law absolute term (a warning outside marketing)
word.forbidden         error     a term no carrier passes
copy.vague             warning   大促, 钜惠 … and no concrete benefit anywhere in the text
copy.no_deadline       warning   a promotion with no time limit
length.parts           warning   more than one part: the count and the cost
length.max             error     more parts than the tenant's maximum
length.varies          info      long contact values would take more parts
link.raw               warning   a long raw URL instead of a tracked {link}
category.forbidden     error     marketing from a tenant whose policy allows notifications only
=====================  ========  ===========================================================

Every step is linear in the length of the text (regular expressions without nested
quantifiers, one Aho–Corasick pass), and texts are at most :data:`MAX_TEXT` characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal

from hongyan.content.encoding import (
    SINGLE_GSM7,
    SINGLE_UCS2,
    SmsPlan,
    measure,
    plan,
    split_points,
)
from hongyan.content.fields import ATTRIBUTE_PREFIX, STANDARD_FIELDS, Names
from hongyan.content.placeholders import Slot, TemplateError, tokens
from hongyan.content.wordlists import (
    Hit,
    Matcher,
    fold_positions,
    matcher_for,
)
from hongyan.errors import ValidationFailed

Severity = Literal["error", "warning", "info"]
Category = Literal["verification", "notification", "marketing"]
CATEGORIES: Final[tuple[Category, ...]] = ("verification", "notification", "marketing")

#: The longest text the lint reads: far beyond any SMS (a 6-part message is 402 characters).
MAX_TEXT: Final = 5000
#: A signature must start within the first 15 characters (seed guidance: 前15字符).
SIGNATURE_WITHIN: Final = 15
#: A raw URL longer than this should be a tracked short link.
RAW_URL_MAX: Final = 24

SEVERITY_RANK: Final = {"error": 0, "warning": 1, "info": 2}

_CONTROL: Final = re.compile(
    "[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]+"
)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_SIGNATURE: Final = re.compile(r"【([^【】\n]{1,30})】")
_AD_MARK: Final = re.compile(r"[(（\[［【<〈]\s*广\s*告\s*[)）\]］】>〉]|广\s*告\s*[:：]")
_URL: Final = re.compile(r"(?:https?://|www\.)[A-Za-z0-9\-._~:/?#@!$&'*+,;=%]+", re.IGNORECASE)
# On folded text (see wordlists): lower case, no spaces or symbols, boundaries as \x00.
_UNSUBSCRIBE: Final = re.compile(
    r"回复?[a-z0-9]{1,4}(?:退订|退定|拒收|取消|退)"
    r"|(?:退订|退定|拒收|取消订阅)请?(?:回复?|发送?|短信)[a-z0-9]{1,4}"
    r"|回复?退订|(?:reply|text|txt)stop|stopto(?:optout|unsubscribe|end|quit|cancel)"
)
_QUANTIFIED: Final = re.compile(
    r"\d+(?:元|块|折|%|倍|积分|分|件|杯|份|张)|[满减省送返赠抵]\d+|[一二两三四五六七八九]折"
    r"|半价|买[一二三1-9]送[一二三1-9]|第[二2][件杯份]|免单|包邮"
)
_PROMO: Final = re.compile(
    r"优惠|折扣|[0-9一二三四五六七八九]折|立减|满\d+减|特价|促销|秒杀|抢购|特惠|福利|半价|券"
    r"|返现|大促|钜惠|巨惠|包邮|买[一二三1-9]送"
)
_DEADLINE: Final = re.compile(
    r"截止|截至|\d+[月./-]\d+[日号]?|\d+[日号](?:前|止|截止|结束)|\d+[点时:]|今[天日晚]|明[天日晚]"
    r"|本周|本月|周末|当[天日]|即日|限时|仅限\d|\d+(?:天|小时|分钟|日)内|最后[一二两三\d]*[天日]|倒计时|仅剩"
    r"|到期|过期|有效期|前有效|内有效|结束|星期[一二三四五六日天]|周[一二三四五六日天]"
    r"|这周|下周|月底|月初|年底"
)


class TextEmpty(ValidationFailed):
    code = "text_empty"
    message_zh = "短信内容不能为空"
    message_en = "The text is empty"


class TextTooLong(ValidationFailed):
    code = "text_too_long"


class TextInvalid(ValidationFailed):
    code = "text_invalid"


@dataclass(frozen=True, slots=True)
class Fix:
    """Replace ``text[start:end]`` with ``text``; ``safe`` fixes are applied by ``--fix``."""

    start: int
    end: int
    text: str
    safe: bool
    order: int = 0  # among fixes at one point: lower ends up first

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "text": self.text, "safe": self.safe}


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    severity: Severity
    start: int
    end: int
    message_zh: str
    message_en: str
    suggestion_zh: str | None = None
    suggestion_en: str | None = None
    fix: Fix | None = None
    term: str | None = None

    def message(self, lang: str) -> str:
        return self.message_en if lang == "en" else self.message_zh

    def suggestion(self, lang: str) -> str | None:
        return self.suggestion_en if lang == "en" else self.suggestion_zh

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "start": self.start,
            "end": self.end,
            "message": {"zh": self.message_zh, "en": self.message_en},
            "suggestion": (
                {"zh": self.suggestion_zh, "en": self.suggestion_en} if self.suggestion_zh else None
            ),
            "fix": self.fix.as_dict() if self.fix else None,
            "term": self.term,
        }


@dataclass(frozen=True)
class LintContext:
    """Everything the lint needs to know about the tenant, as plain data."""

    category: Category = "marketing"
    approved_signatures: tuple[str, ...] = ()
    pending_signatures: tuple[str, ...] = ()
    default_signature: str | None = None
    marketing_allowed: bool = True
    require_ad_mark: bool = False
    ad_mark: str = "（广告）"
    unsubscribe_text: str = "回T退订"
    max_parts: int = 6
    price_per_part: Decimal | None = None
    currency: str = "CNY"
    attributes: frozenset[str] = frozenset()
    matcher: Matcher = field(default_factory=matcher_for)

    @property
    def names(self) -> Names:
        return Names.for_category(self.category, self.attributes)


@dataclass(frozen=True)
class LintResult:
    text: str
    ok: bool
    encoding: str
    chars: int  # units as the carrier counts them (septets or UTF-16 code units)
    parts: int
    per_part: int
    remaining: int
    splits: list[int]  # offsets in the preview where parts 2.. begin
    preview: str  # the text with sample values in its placeholders (itself without any)
    chars_max: int  # with every contact value at its longest
    parts_max: int
    findings: list[Finding]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "encoding": self.encoding,
            "chars": self.chars,
            "parts": self.parts,
            "per_part": self.per_part,
            "remaining": self.remaining,
            "splits": self.splits,
            "preview": self.preview,
            "chars_max": self.chars_max,
            "parts_max": self.parts_max,
            "findings": [f.as_dict() for f in self.findings],
        }


# ---------------------------------------------------------------------------------- input


def check_input(text: str) -> None:
    """Refuse what cannot be linted at all: empty, too long, or not valid Unicode text."""
    if not text.strip():
        raise TextEmpty()
    if len(text) > MAX_TEXT:
        raise TextTooLong(
            f"The text has {len(text)} characters; the lint reads at most {MAX_TEXT}",
            f"文本共 {len(text)} 个字符，最多 {MAX_TEXT} 个",
            details={"length": len(text), "max": MAX_TEXT},
        )
    bad = _SURROGATE.search(text)
    if bad is not None:
        raise TextInvalid(
            f"The text holds a lone UTF-16 surrogate at {bad.start()}: it is not valid Unicode",
            f"文本第 {bad.start()} 个字符是无效的 Unicode 代理字符",
            details={"at": bad.start()},
        )


# ---------------------------------------------------------------------------------- the lint


@dataclass
class _Doc:
    """A text read once: its tokens, the preview with a map back, the folded stream."""

    text: str
    toks: list[tuple[Any, int]]
    preview: str
    src_start: list[int]  # preview offset -> first source offset it came from
    src_end: list[int]  # preview offset -> source offset just past it
    worst: str
    folded: str
    where: list[int]  # folded offset -> source offset (-1: a placeholder with no default)


def _read(text: str, names: Names) -> tuple[_Doc, Finding | None]:
    syntax: Finding | None = None
    try:
        toks: list[tuple[Any, int]] = list(tokens(text))
    except TemplateError as exc:
        at = int(exc.details.get("at", 0))
        end = int(exc.details.get("end", at + 1))
        syntax = Finding(
            "placeholder.syntax",
            "error",
            at,
            end,
            exc.message_zh,
            exc.message_en,
            "占位符写作 {name}、{attr.名称} 或 {name|默认值}；原样的花括号写作 {{ 和 }}",
            "Write placeholders as {name}, {attr.key} or {name|default}; "
            "literal braces as {{ and }}",
        )
        toks = [(text, 0)]
    preview: list[str] = []
    src_start: list[int] = []
    src_end: list[int] = []
    worst: list[str] = []
    chunks: list[tuple[str, int] | None] = []
    for tok, at in toks:
        if isinstance(tok, str):
            preview.append(tok)
            worst.append(tok)
            src_start.extend(range(at, at + len(tok)))
            src_end.extend(range(at + 1, at + len(tok) + 1))
            chunks.append((tok, at))
            continue
        spec = names.spec(tok.key)
        sample = spec.sample if spec else text[tok.start : tok.end]
        preview.append(sample)
        src_start.extend([tok.start] * len(sample))
        src_end.extend([tok.end] * len(sample))
        if spec is None:
            worst.append(sample)
        else:
            worst.append(spec.sample if spec.special else "中" * spec.max_len)
        if tok.default and tok.default_at is not None:
            chunks.append((tok.default, tok.default_at))
        else:
            chunks.append(None)
    folded, where = fold_positions(chunks)
    doc = _Doc(text, toks, "".join(preview), src_start, src_end, "".join(worst), folded, where)
    return doc, syntax


def _span(doc: _Doc, start: int, end: int) -> tuple[int, int]:
    """Source span of folded ``[start, end)``."""
    return doc.where[start], doc.where[end - 1] + 1


def _money(value: Decimal, currency: str) -> str:
    sign = "¥" if currency == "CNY" else f"{currency} "
    return f"{sign}{value.quantize(Decimal('0.01'))}"


def lint(text: str, ctx: LintContext) -> LintResult:
    """Every finding for ``text`` in ``ctx``; typed errors only for input that is not text."""
    check_input(text)
    names = ctx.names
    doc, syntax = _read(text, names)
    findings: list[Finding] = []
    if syntax is not None:
        findings.append(syntax)
    findings += _controls(text)
    findings += _placeholders(doc, ctx, names)
    signature_end = _signature(text, ctx, findings)
    marketing = ctx.category == "marketing"
    if marketing:
        findings += _marketing(doc, ctx, signature_end)
    findings += _words(doc, ctx)
    findings += _links(text)
    sms = plan(doc.preview)
    worst = measure(doc.worst)
    findings += _length(doc, ctx, sms, worst.parts)
    findings.sort(key=lambda f: (f.start, SEVERITY_RANK[f.severity], f.rule))
    return LintResult(
        text=text,
        ok=not any(f.severity == "error" for f in findings),
        encoding=sms.encoding,
        chars=sms.units,
        parts=sms.parts,
        per_part=sms.per_part,
        remaining=sms.remaining,
        splits=split_points(sms),
        preview=doc.preview,
        chars_max=max(worst.units, sms.units),
        parts_max=max(worst.parts, sms.parts),
        findings=findings,
    )


def _controls(text: str) -> list[Finding]:
    return [
        Finding(
            "text.control",
            "error",
            m.start(),
            m.end(),
            "包含不可见的控制字符（如制表符、零宽字符、方向控制符）",
            "Holds invisible control characters (tab, zero-width, direction override)",
            "删除这些字符",
            "Remove them",
            Fix(m.start(), m.end(), "", safe=True),
        )
        for m in _CONTROL.finditer(text)
    ]


def _placeholders(doc: _Doc, ctx: LintContext, names: Names) -> list[Finding]:
    out: list[Finding] = []
    allowed = "、".join(f"{{{k}}}" for k in (*STANDARD_FIELDS, "link", "coupon"))
    for tok, _at in doc.toks:
        if not isinstance(tok, Slot):
            continue
        spec = names.spec(tok.key)
        if spec is None:
            if tok.key.startswith(ATTRIBUTE_PREFIX):
                key = tok.key[len(ATTRIBUTE_PREFIX) :]
                zh = f"没有名为“{key}”的自定义属性"
                en = f"There is no custom attribute named {key!r}"
            else:
                zh = f"营销模板不能使用占位符 {{{tok.key}}}：它不是联系人字段"
                en = f"A marketing template cannot use {{{tok.key}}}: it is not a contact field"
            out.append(
                Finding(
                    "placeholder.unknown",
                    "error",
                    tok.start,
                    tok.end,
                    zh,
                    en,
                    f"可用：{allowed}，以及 {{attr.属性名}}",
                    f"Available: {allowed.replace('、', ', ')} and {{attr.key}}",
                    term=tok.key,
                )
            )
            continue
        if (
            ctx.category == "marketing"
            and tok.default is None
            and not spec.special
            and not names.params
        ):
            fix = (
                Fix(tok.end - 1, tok.end - 1, f"|{spec.suggested_default}", safe=False)
                if spec.suggested_default
                else None
            )
            example = spec.suggested_default or "…"
            out.append(
                Finding(
                    "placeholder.no_default",
                    "warning",
                    tok.start,
                    tok.end,
                    f"联系人缺少“{spec.label_zh}”时，{{{tok.key}}} 会显示为空",
                    f"For a contact without {spec.label_en.lower()}, {{{tok.key}}} renders empty",
                    f"加上默认值，如 {{{tok.key}|{example}}}",
                    f"Give it a default, e.g. {{{tok.key}|{example}}}",
                    fix,
                    term=tok.key,
                )
            )
    return out


def _signature(text: str, ctx: LintContext, out: list[Finding]) -> int:
    """Check the signature; returns where it ends (0 without one at the start)."""
    m = _SIGNATURE.search(text)
    default = ctx.default_signature
    if m is None or m.start() >= SIGNATURE_WITHIN:
        late = m is not None
        out.append(
            Finding(
                "signature.missing",
                "error",
                0,
                0,
                "签名须位于短信开头（前15个字符内）" if late else "短信开头缺少【签名】",
                "The 【signature】 must start within the first 15 characters"
                if late
                else "No 【signature】 at the start of the text",
                f"在开头加上已审核的签名{default}" if default else "请先提交签名并等待审核通过",
                f"Start the text with the approved signature {default}"
                if default
                else "Submit a signature for review first",
                Fix(0, 0, default, safe=True, order=0) if default else None,
            )
        )
        return 0
    found = m.group(0)
    if found in ctx.approved_signatures:
        return m.end()
    if found in ctx.pending_signatures:
        out.append(
            Finding(
                "signature.unapproved",
                "warning",
                m.start(),
                m.end(),
                f"签名{found}正在审核中，审核通过后才能发送",
                f"The signature {found} is waiting for review; it can send once approved",
                term=found,
            )
        )
        return m.end()
    fix = Fix(m.start(), m.end(), default, safe=True) if default and default != found else None
    out.append(
        Finding(
            "signature.unapproved",
            "error",
            m.start(),
            m.end(),
            f"签名{found}不是本租户已审核通过的签名",
            f"{found} is not one of this tenant's approved signatures",
            f"改用已审核的签名{default}" if default else "请先提交该签名审核",
            f"Use the approved signature {default}" if default else "Submit it for review first",
            fix,
            term=found,
        )
    )
    return m.end()


def _marketing(doc: _Doc, ctx: LintContext, signature_end: int) -> list[Finding]:
    out: list[Finding] = []
    text = doc.text
    if not ctx.marketing_allowed:
        out.append(
            Finding(
                "category.forbidden",
                "error",
                0,
                0,
                "该租户的策略不允许发送营销短信（仅限通知类短信，如金融行业）",
                "This tenant's policy allows notifications only, no marketing",
                "改为通知类内容，或联系平台调整策略",
                "Send it as a notification, or ask the platform to change the policy",
            )
        )
    if not _UNSUBSCRIBE.search(doc.folded):
        end = len(text)
        tail = text.rstrip()[-1:] if text.strip() else ""
        joiner = "" if tail in ("，", "。", "！", "？", ",", ".", "!", "?", " ", "") else "，"
        out.append(
            Finding(
                "unsubscribe.missing",
                "error",
                end,
                end,
                "营销短信缺少退订方式（如“回T退订”“拒收请回复R”）",
                "Marketing text without an opt-out instruction (such as 回T退订 or 拒收请回复R)",
                f"在末尾加上“{ctx.unsubscribe_text}”",
                f"End the text with {ctx.unsubscribe_text}",
                Fix(end, end, joiner + ctx.unsubscribe_text, safe=True),
            )
        )
    if ctx.require_ad_mark:
        after = text[signature_end:].lstrip()
        if not (_AD_MARK.search(text) or after.startswith("广告")):
            out.append(
                Finding(
                    "ad.mark",
                    "error",
                    signature_end,
                    signature_end,
                    "租户策略要求营销短信带有“广告”标识",
                    "The tenant's policy asks for the advertising mark (广告) in marketing texts",
                    f"在签名后加上“{ctx.ad_mark}”",
                    f"Put {ctx.ad_mark} after the signature",
                    Fix(signature_end, signature_end, ctx.ad_mark, safe=True, order=1),
                )
            )
    promo = _PROMO.search(doc.folded)
    if promo is not None and not _DEADLINE.search(doc.folded):
        start, end = _span(doc, promo.start(), promo.end())
        out.append(
            Finding(
                "copy.no_deadline",
                "warning",
                start,
                end,
                "促销内容没有写明时间限制",
                "The promotion states no time limit",
                "加上截止时间，如“今晚21点前有效”“3月31日截止”",
                "Add a deadline, such as 今晚21点前有效 (until 21:00 tonight)",
            )
        )
    return out


def _word(hit: Hit, doc: _Doc, ctx: LintContext) -> Finding | None:
    start, end = _span(doc, hit.start, hit.end)
    term = hit.entry.term
    marketing = ctx.category == "marketing"
    kind = hit.entry.list
    if kind == "forbidden":
        return Finding(
            "word.forbidden",
            "error",
            start,
            end,
            f"“{term}”属于违禁内容，运营商一律拦截",
            f"“{term}” is forbidden content that no carrier passes",
            "删除该内容",
            "Remove it",
            term=term,
        )
    if kind == "absolute":
        if len(hit.entry.term) == 1 and hit.end < len(doc.folded):
            # A bare 最 stands for its compound: show 最低 rather than 最.
            nxt = doc.folded[hit.end]
            if "\u4e00" <= nxt <= "\u9fff":
                end = doc.where[hit.end] + 1
                term = term + nxt
        return Finding(
            "word.absolute",
            "error" if marketing else "warning",
            start,
            end,
            f"“{term}”属于绝对化用语，广告中禁止使用（《广告法》第九条）",
            f"“{term}” is an absolute term that advertising may not use (Advertising Law, Art. 9)",
            "删除，或改为可以证实的具体描述",
            "Remove it, or state a fact that can be proven",
            term=term,
        )
    if kind == "sensitive":
        repl = hit.entry.replacement
        safe_span = -1 not in doc.where[hit.start : hit.end] and _one_token(doc, start, end)
        return Finding(
            "word.sensitive",
            "error" if marketing else "warning",
            start,
            end,
            f"“{term}”是运营商重点拦截的敏感词",
            f"“{term}” is a sensitive word that carriers hold back",
            f"改为“{repl}”" if repl else "请换一种说法",
            f"Write “{repl}” instead" if repl else "Say it another way",
            Fix(start, end, repl, safe=True) if repl and safe_span else None,
            term=term,
        )
    return None


def _one_token(doc: _Doc, start: int, end: int) -> bool:
    """True when the source span lies inside one literal chunk or one default."""
    for tok, at in doc.toks:
        if isinstance(tok, str):
            if at <= start and end <= at + len(tok):
                return True
        elif (
            tok.default_at is not None
            and tok.default is not None
            and tok.default_at <= start
            and end <= tok.default_at + len(tok.default)
        ):
            return True
    return False


def _words(doc: _Doc, ctx: LintContext) -> list[Finding]:
    hits = ctx.matcher.scan(doc.folded, doc.text, doc.where)
    out = [f for f in (_word(h, doc, ctx) for h in hits) if f is not None]
    if ctx.category == "marketing":
        vague = [h for h in hits if h.entry.list == "vague"]
        if vague and not _QUANTIFIED.search(doc.folded):
            for h in vague:
                start, end = _span(doc, h.start, h.end)
                out.append(
                    Finding(
                        "copy.vague",
                        "warning",
                        start,
                        end,
                        f"“{h.entry.term}”过于笼统，文中没有具体的优惠",
                        f"“{h.entry.term}” is vague and the text states no concrete benefit",
                        "写明具体利益点，如“立减200元”“满199减80”“第二杯半价”",
                        "State the benefit in numbers, such as 立减200元 or 满199减80",
                        term=h.entry.term,
                    )
                )
    return out


def _links(text: str) -> list[Finding]:
    out: list[Finding] = []
    for m in _URL.finditer(text):
        url = m.group(0).rstrip(".,;:!?'")
        if len(url) <= RAW_URL_MAX:
            continue
        end = m.start() + len(url)
        out.append(
            Finding(
                "link.raw",
                "warning",
                m.start(),
                end,
                f"长链接占用 {len(url)} 个字符，且无法统计点击",
                f"A raw link takes {len(url)} characters and its clicks cannot be counted",
                "改用 {link}：可追踪点击的短链接",
                "Use {link}: a short link whose clicks are tracked",
                Fix(m.start(), end, "{link}", safe=False),
                term=url,
            )
        )
    return out


def _source_at(doc: _Doc, preview_offset: int) -> int:
    if preview_offset >= len(doc.src_start):
        return len(doc.text)
    return doc.src_start[preview_offset]


def _length(doc: _Doc, ctx: LintContext, sms: SmsPlan, worst: int) -> list[Finding]:
    out: list[Finding] = []
    parts, segments = sms.parts, sms.segments
    end = len(doc.text)
    if parts > ctx.max_parts:
        offset = sum(len(s) for s in segments[: ctx.max_parts])
        out.append(
            Finding(
                "length.max",
                "error",
                _source_at(doc, offset),
                end,
                f"短信需拆分为 {parts} 条，超过上限 {ctx.max_parts} 条",
                f"The text needs {parts} parts; the limit is {ctx.max_parts}",
                "删减内容",
                "Shorten the text",
            )
        )
    elif parts > 1:
        offset = len(segments[0])
        cost_zh = cost_en = ""
        if ctx.price_per_part is not None:
            each = _money(ctx.price_per_part, ctx.currency)
            per10k = _money(ctx.price_per_part * parts * 10000, ctx.currency)
            cost_zh = f"（每条 {each}，每万人约 {per10k}）"
            cost_en = f" ({each} a part, about {per10k} per 10,000 recipients)"
        single = SINGLE_UCS2 if sms.encoding == "ucs2" else SINGLE_GSM7
        out.append(
            Finding(
                "length.parts",
                "warning",
                _source_at(doc, offset),
                end,
                f"超过一条短信的长度：将按 {parts} 条计费{cost_zh}",
                f"Longer than one SMS: billed as {parts} parts{cost_en}",
                f"精简到 {single} 个字符以内，每位收件人只计 1 条",
                f"Keep it within {single} characters to pay for one part per recipient",
            )
        )
    if worst > max(parts, 1) and worst > 1:
        out.append(
            Finding(
                "length.varies",
                "info",
                0,
                0,
                f"联系人的姓名等字段较长时，最多会拆分为 {worst} 条",
                f"With long contact values (names …) a message can take up to {worst} parts",
            )
        )
    return out


# ---------------------------------------------------------------------------------- fixes


def apply(text: str, fixes: Sequence[Fix]) -> str:
    """``text`` with ``fixes`` applied; a fix overlapping one already applied is skipped."""
    chosen: list[Fix] = []
    for f in sorted(fixes, key=lambda f: (f.start, f.end, f.order)):
        if any(f.start < c.end and c.start < f.end for c in chosen):
            continue  # overlapping spans: the first wins
        chosen.append(f)
    out = text
    # Right to left; at one point a replacement goes before an insertion, and of two insertions
    # the higher order first, so the lower one ends up in front.
    for f in sorted(chosen, key=lambda f: (f.start, f.end, f.order), reverse=True):
        out = out[: f.start] + f.text + out[f.end :]
    return out


def fix(text: str, ctx: LintContext) -> tuple[str, LintResult]:
    """Apply the safe fixes and lint the result: (fixed text, its findings)."""
    first = lint(text, ctx)
    fixes = [f.fix for f in first.findings if f.fix is not None and f.fix.safe]
    if not fixes:
        return text, first
    fixed = apply(text, fixes)
    return fixed, lint(fixed, ctx)


def fix_one(text: str, ctx: LintContext, index: int) -> str:
    """The text with the fix of finding ``index`` applied (safe or not): the editor's button."""
    findings = lint(text, ctx).findings
    if not 0 <= index < len(findings) or findings[index].fix is None:
        raise ValidationFailed("That finding has no fix", "该问题没有可用的修复")
    f = findings[index].fix
    assert f is not None
    return apply(text, [f])


__all__ = [
    "CATEGORIES",
    "MAX_TEXT",
    "Category",
    "Finding",
    "Fix",
    "LintContext",
    "LintResult",
    "TextEmpty",
    "TextInvalid",
    "TextTooLong",
    "apply",
    "check_input",
    "fix",
    "fix_one",
    "lint",
]
