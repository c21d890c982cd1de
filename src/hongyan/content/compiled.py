"""A template compiled once, then rendered, checked and counted for each recipient (pure).

Campaigns render one approved template for up to millions of contacts. Everything that does not
depend on the recipient is done once, in :class:`CompiledTemplate`'s constructor: the template is
parsed, linted (:attr:`CompiledTemplate.lint`), turned into a positional ``str.format`` string
(literal braces escaped, so the only thing ``format`` does is place the values: no field names,
no attribute access), and its literal text is counted. Per recipient, :meth:`check` only looks at
the values:

- the text is ``fmt.format(*values)``;
- units are the literal text's units plus each value's, encoding GSM-7 only when the literal text
  and every value are GSM-7, and the parts follow from the units exactly as
  :func:`hongyan.content.encoding.measure` counts them (the same split for the rare text with a
  two-unit character);
- each value is scanned once for words, in a window with as much literal context on each side as
  the longest term, so a term made of literal text and a value (``免{x}`` with x = ``费``) is
  found too; the verdict is cached per placeholder and value (cities, tags and most names repeat).
  A template where two placeholders are closer than the longest term, with no punctuation between
  them, is scanned whole for each recipient instead (slower, equally right);
- a value with control characters or lone surrogates, or a text over the tenant's maximum parts,
  is a problem of that message.

Problems are ``(rule, detail)`` pairs: ``word.sensitive`` / ``word.absolute`` / ``word.forbidden``
with the term, ``value.invalid`` with the placeholder key, ``length.max`` with the parts. The
template's own findings are in :attr:`lint`, not repeated per message.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Final, NamedTuple

from hongyan.content.encoding import (
    MULTI_UCS2,
    SINGLE_UCS2,
    Encoding,
    count_parts,
    gsm7_septets,
    is_gsm7,
    utf16_units,
)
from hongyan.content.fields import SPECIALS
from hongyan.content.lint import LintContext, LintResult, lint
from hongyan.content.placeholders import MissingParameter, Slot, parse
from hongyan.content.wordlists import BOUNDARY, fold, fold_char, fold_positions

Problem = tuple[str, str]

_INVALID: Final = re.compile(
    "[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\ud800-\udfff]"
)
_FIELD_REF: Final = re.compile(r"\{\d+\}")
_CACHE_MAX: Final = 200_000  # values remembered per placeholder
# ASCII that is GSM-7 basic, one unit a character in either encoding: links and coupon codes.
_PLAIN: Final = re.compile(r"[A-Za-z0-9:/._\-?=&%#@!$()*+,;' ]*")

# What a value adds to a message, packed in one int so a message sums one number per value:
# UTF-16 units | septets << 16 | non-GSM values << 32 | wide UCS-2 values << 40 | wide GSM << 48
# | values with problems << 56 (each field a count, wide enough for any template).
_SEPT: Final = 1 << 16
_NONGSM: Final = 1 << 32
_WIDE_UCS2: Final = 1 << 40
_WIDE_GSM: Final = 1 << 48
_PROBLEM: Final = 1 << 56  # counts values that bring a problem: take the general path
_PROBLEM_FIELD: Final = 0xFF << 56
_FIELD: Final = 0xFFFF
_NON_GSM_FIELD: Final = _FIELD << 32
_WIDE_UCS2_FIELD: Final = _FIELD << 40
_WIDE_GSM_FIELD: Final = _FIELD << 48
_new = tuple.__new__


def _delta(v: str) -> int:
    if _PLAIN.fullmatch(v):
        return len(v) * (1 + _SEPT)
    ucs2 = utf16_units(v)
    out = ucs2 + (_WIDE_UCS2 if ucs2 > len(v) else 0)
    if is_gsm7(v):
        sept = gsm7_septets(v)
        out += sept * _SEPT + (_WIDE_GSM if sept > len(v) else 0)
    else:
        out += _NONGSM
    return out


_WORD_RULES: Final = {"sensitive": "word.sensitive", "absolute": "word.absolute"}


class Rendered(NamedTuple):
    text: str
    encoding: str
    units: int
    parts: int
    problems: tuple[Problem, ...]


class _SlotPlan:
    __slots__ = ("cache", "default", "key", "left", "problems", "right", "special")

    def __init__(self, slot: Slot, left: str, right: str) -> None:
        self.key = slot.key
        self.default = slot.default
        self.special = slot.key in SPECIALS
        self.left = left
        self.right = right
        # value -> what it adds (see _delta), plus _PROBLEM when it brings problems
        self.cache: dict[str, int] = {}
        self.problems: dict[str, tuple[Problem, ...]] = {}


def _context(text: str, need: int, *, backwards: bool) -> tuple[str, bool]:
    """Up to ``need`` folded characters of literal ``text`` next to a placeholder, and whether
    a boundary (sentence punctuation, bracket) stops the context before ``need`` is reached."""
    taken = 0
    chars = reversed(text) if backwards else iter(text)
    out: list[str] = []
    for ch in chars:
        f = fold_char(ch)
        if f == BOUNDARY:
            return ("".join(reversed(out)) if backwards else "".join(out)), True
        out.append(ch)
        taken += len(f)
        if taken > need:  # one more than needed: the ASCII edge of a term is judged on it
            break
    joined = "".join(reversed(out)) if backwards else "".join(out)
    return joined, taken > need


def _getter(keys: list[str]) -> Callable[[Mapping[str, str]], tuple[str, ...]]:
    """Fetch ``keys`` from a mapping in one C call (KeyError for a missing one)."""
    if not keys:
        return lambda _m: ()
    if len(keys) == 1:
        key = keys[0]
        return lambda m: (m[key],)
    return operator.itemgetter(*keys)


def _renumber(fmt: list[str], numbers: list[int]) -> str:
    """The format string with its n-th ``{n}`` field renumbered ``{numbers[n]}``."""
    out: list[str] = []
    k = 0
    for part in fmt:
        if _FIELD_REF.fullmatch(part):
            out.append("{%d}" % numbers[k])  # noqa: UP031  (a format string being built)
            k += 1
        else:
            out.append(part)
    return "".join(out)


class CompiledTemplate:
    """One template for one tenant and category, ready to render for each recipient."""

    def __init__(self, source: str, ctx: LintContext, *, max_parts: int | None = None) -> None:
        self.source = source
        self.ctx = ctx
        self.lint: LintResult = lint(source, ctx)
        pieces = parse(source)  # TemplateError for a template that does not parse
        self.max_parts = ctx.max_parts if max_parts is None else max_parts
        self._matcher = ctx.matcher
        need = self._matcher.longest
        fmt: list[str] = []
        literal: list[str] = []
        slots: list[_SlotPlan] = []
        self.dense = False  # see the module doc
        for i, piece in enumerate(pieces):
            if isinstance(piece, str):
                fmt.append(piece.replace("{", "{{").replace("}", "}}"))
                literal.append(piece)
                continue
            fmt.append("{%d}" % len(slots))  # noqa: UP031  (a format string being built)
            n = len(pieces)
            prev = pieces[i - 1] if i > 0 else None
            nxt = pieces[i + 1] if i + 1 < n else None
            left, left_closed = _context(
                prev if isinstance(prev, str) else "", need, backwards=True
            )
            right, right_closed = _context(
                nxt if isinstance(nxt, str) else "", need, backwards=False
            )
            # Another placeholder within reach of a term, no boundary between: scan whole.
            if (
                isinstance(prev, Slot)
                or isinstance(nxt, Slot)
                or (i > 1 and not left_closed)
                or (i + 2 < n and not right_closed)
            ):
                self.dense = True
            slots.append(_SlotPlan(piece, left, right))
        self._fmt = "".join(fmt)
        self._slots = tuple(slots)
        self._plan = tuple((s.key, s.default, s.cache, s) for s in slots)
        self._base = _delta("".join(literal))
        # The fast path: values fetched by one C call, cached placeholders first, then the
        # per-recipient specials (never cached), the format string numbered in that order.
        cached = [i for i, s in enumerate(slots) if not s.special]
        special = [i for i, s in enumerate(slots) if s.special]
        order = cached + special
        position = {slot_index: n for n, slot_index in enumerate(order)}
        self._fast_fmt = _renumber(fmt, [position[i] for i in range(len(slots))])
        self._fast_slots = tuple(slots[i] for i in order)
        self._get = _getter([slots[i].key for i in order])
        self._caches = tuple(slots[i].cache for i in cached)
        self._n_special = len(special)
        self._literal_ucs2 = bool(self._base & _NON_GSM_FIELD)
        #: ``check(values, strict=False) -> Rendered``: render for one recipient, count it and
        #: report what its values bring in. A value missing or empty takes the placeholder's
        #: default; without a default it renders empty, or with ``strict`` a missing one raises
        #: MissingParameter. ``{link}`` and ``{coupon}`` always need a value (a stand-in is
        #: never sent). Values are text. A closure, so its constants are cells.
        self.check: Callable[..., Rendered] = self._build_fast()
        for slot in self._slots:  # a default is the template's own text: linted already
            if slot.default is not None:
                slot.cache[slot.default] = _delta(slot.default)

    @property
    def keys(self) -> list[str]:
        seen: list[str] = []
        for s in self._slots:
            if s.key not in seen:
                seen.append(s.key)
        return seen

    # -- per recipient --------------------------------------------------------------------

    def _build_fast(self) -> Callable[[Mapping[str, str], bool], Rendered]:
        """The per-recipient path as a closure: its constants are cells, not attribute loads."""
        get = self._get
        fill = self._fill
        general = self._check
        caches = self._caches
        base = self._base
        n_special = self._n_special
        literal_ucs2 = self._literal_ucs2
        dense = self.dense
        render = self._fast_fmt.format
        max_parts = self.max_parts
        plain = _PLAIN.fullmatch

        def check(values: Mapping[str, str], strict: bool = False) -> Rendered:
            try:
                got = get(values)
            except KeyError:
                got = fill(values, strict)
            if not all(got):
                got = fill(values, strict)
            try:
                acc = base + sum(map(dict.get, caches, got))  # type: ignore[arg-type]
            except TypeError:  # a value not seen yet (None in the sum)
                return general(values, strict=strict)
            if n_special:
                joined = "".join(got[-n_special:])
                if literal_ucs2:  # printable ASCII is one UCS-2 unit a character
                    if not (joined.isascii() and joined.isprintable()):
                        return general(values, strict=strict)
                    acc += len(joined)
                elif plain(joined):
                    acc += len(joined) * (1 + _SEPT)
                else:
                    return general(values, strict=strict)
            if acc & _PROBLEM_FIELD or dense:
                return general(values, strict=strict)
            text = render(*got)
            if acc & _NON_GSM_FIELD:  # a value (or the literal text) is not GSM-7
                units = acc & _FIELD
                if units <= SINGLE_UCS2:
                    return _new(Rendered, (text, "ucs2", units, 1, ()))
                if acc & _WIDE_UCS2_FIELD:
                    parts = count_parts(text, "ucs2", units, True)
                else:
                    parts = -(-units // MULTI_UCS2)
                encoding = "ucs2"
            else:
                units = (acc >> 16) & _FIELD
                parts = count_parts(text, "gsm7", units, bool(acc & _WIDE_GSM_FIELD))
                encoding = "gsm7"
            if parts > max_parts:
                problem = (("length.max", str(parts)),)
                return _new(Rendered, (text, encoding, units, parts, problem))
            return _new(Rendered, (text, encoding, units, parts, ()))

        return check

    def _fill(self, values: Mapping[str, str], strict: bool) -> tuple[str, ...]:
        """The values in the fast path's order, defaults applied (missing ones per ``strict``)."""
        out: list[str] = []
        for slot in self._fast_slots:
            v = values.get(slot.key)
            if not v:
                v = slot.default if slot.default is not None else self._missing(slot, strict)
            out.append(v)
        return tuple(out)

    def _check(self, values: Mapping[str, str], *, strict: bool) -> Rendered:
        """The general path: any values, learning what it has not seen."""
        vals: list[str] = []
        add = vals.append
        get = values.get
        acc = self._base
        problems: tuple[Problem, ...] = ()
        for key, default, cache, slot in self._plan:
            v = get(key)
            if not v:
                v = default if default is not None else self._missing(slot, strict)
            known = cache.get(v)
            if known is None:
                known, brought = self._learn(slot, v)
            else:
                brought = slot.problems.get(v, ()) if known & _PROBLEM_FIELD else ()
            add(v)
            acc += known & ~_PROBLEM_FIELD
            problems += brought
        text = self._fmt.format(*vals)
        encoding: Encoding
        if acc & _NON_GSM_FIELD:  # a value (or the literal text) is not GSM-7
            encoding, units, wide = "ucs2", acc & _FIELD, acc & _WIDE_UCS2_FIELD
        else:
            encoding, units, wide = "gsm7", (acc >> 16) & _FIELD, acc & _WIDE_GSM_FIELD
        parts = count_parts(text, encoding, units, wide != 0)
        if self.dense:
            problems = self._dense_problems(vals)
        if parts > self.max_parts:
            problems += (("length.max", str(parts)),)
        return Rendered(text, encoding, units, parts, problems)

    def render(self, values: Mapping[str, str], *, strict: bool = False) -> str:
        text: str = self.check(values, strict).text
        return text

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _missing(slot: _SlotPlan, strict: bool) -> str:
        if slot.special:
            raise MissingParameter(
                f"{{{slot.key}}} needs its per-recipient value (a tracked link or a coupon code); "
                "a stand-in is never sent",
                f"{{{slot.key}}} 需要每位收件人的真实值（短链接或券码），不会发送示例值",
                details={"missing": [slot.key]},
            )
        if strict:
            raise MissingParameter(
                f"The template needs: {slot.key}",
                f"缺少模板参数：{slot.key}",
                details={"missing": [slot.key]},
            )
        return ""

    def _learn(self, slot: _SlotPlan, v: str) -> tuple[int, tuple[Problem, ...]]:
        """What a value adds and brings in; remembered, except per-recipient special values."""
        if slot.special:
            if _PLAIN.fullmatch(v):
                return len(v) * (1 + _SEPT), ()
            bad = not v.isprintable() or _INVALID.search(v) is not None  # no line breaks either
            return _delta(v), (("value.invalid", slot.key),) if bad else ()
        problems: tuple[Problem, ...] = ()
        if _INVALID.search(v):
            problems = (("value.invalid", slot.key),)
        elif not self.dense and not self._matcher.chars.isdisjoint(fold(v)):
            # A match touching the value holds one of its characters: others need no scan.
            problems = self._scan(slot.left, v, slot.right)
        if len(slot.cache) >= _CACHE_MAX:
            slot.cache.clear()
            slot.problems.clear()
            if slot.default is not None:
                slot.cache[slot.default] = _delta(slot.default)
        known = _delta(v)
        if problems:
            known |= _PROBLEM
            slot.problems[v] = problems
        slot.cache[v] = known
        return known, problems

    def _scan(self, left: str, v: str, right: str) -> tuple[Problem, ...]:
        window = left + v + right
        if not self._matcher.any(fold(window)):
            return ()
        folded, where = fold_positions([(window, 0)])
        lo, hi = len(left), len(left) + len(v)
        out: list[Problem] = []
        for hit in self._matcher.scan(folded, window, where):
            start, end = where[hit.start], where[hit.end - 1] + 1
            if start < hi and end > lo:
                out.append(self._problem(hit.entry.list, hit.entry.term))
        return tuple(p for p in out if p[0])

    def _problem(self, kind: str, term: str) -> Problem:
        if kind == "forbidden":
            return ("word.forbidden", term)
        return (_WORD_RULES.get(kind, ""), term)

    def _dense_problems(self, vals: list[str]) -> tuple[Problem, ...]:
        """Scan the whole rendered text; keep what overlaps a value that is not a default."""
        chunks: list[tuple[str, int] | None] = []
        spans: list[tuple[int, int]] = []
        at = 0
        pieces = parse(self.source)
        k = 0
        for piece in pieces:
            if isinstance(piece, str):
                text = piece
            else:
                slot = self._slots[k]
                text = vals[k]
                k += 1
                if text != slot.default:
                    if _INVALID.search(text):
                        return (("value.invalid", slot.key),)
                    if not slot.special:
                        spans.append((at, at + len(text)))
            chunks.append((text, at))
            at += len(text)
        rendered = "".join(c[0] for c in chunks if c is not None)
        folded, where = fold_positions(chunks)
        out: list[Problem] = []
        for hit in self._matcher.scan(folded, rendered, where):
            start, end = where[hit.start], where[hit.end - 1] + 1
            if any(start < b and end > a for a, b in spans):
                problem = self._problem(hit.entry.list, hit.entry.term)
                if problem[0]:
                    out.append(problem)
        return tuple(out)
