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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from itertools import repeat
from operator import add, and_, mul, or_, rshift
from typing import Any, Final, NamedTuple

from hongyan.content.encoding import (
    MULTI_GSM7,
    MULTI_UCS2,
    SINGLE_GSM7,
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
from hongyan.content.wordlists import BOUNDARY, Matcher, fold, fold_char, fold_positions

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


def _parts_of(units: int, encoding: str) -> int:
    """Parts of a text whose characters all take one unit (wide ones go through check())."""
    single, multi = (SINGLE_UCS2, MULTI_UCS2) if encoding == "ucs2" else (SINGLE_GSM7, MULTI_GSM7)
    return 1 if units <= single else -(-units // multi)


class Rendered(NamedTuple):
    text: str
    encoding: str
    units: int
    parts: int
    problems: tuple[Problem, ...]


@dataclass(slots=True)
class Batch:
    """``check_many``'s answer, as columns: row ``i`` is ``texts[i]``, ``encodings[i]``,
    ``units[i]``, ``parts[i]`` and ``problems.get(i, ())``."""

    texts: list[str]
    encodings: list[str]
    units: list[int]
    parts: list[int]
    problems: dict[int, tuple[Problem, ...]]

    @classmethod
    def of(cls, rendered: list[Rendered]) -> Batch:
        batch = cls([], [], [], [], {})
        for i, r in enumerate(rendered):
            batch.texts.append(r.text)
            batch.encodings.append(r.encoding)
            batch.units.append(r.units)
            batch.parts.append(r.parts)
            if r.problems:
                batch.problems[i] = r.problems
        return batch

    def put(self, i: int, r: Rendered) -> None:
        self.texts[i], self.encodings[i], self.units[i], self.parts[i] = r[:4]
        if r.problems:
            self.problems[i] = r.problems

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> Rendered:
        return Rendered(
            self.texts[i], self.encodings[i], self.units[i], self.parts[i], self.problems.get(i, ())
        )

    def rendered(self) -> list[Rendered]:
        return [self[i] for i in range(len(self))]


class _SlotPlan:
    __slots__ = ("cache", "default", "key", "left", "problems", "right", "shared", "special")

    def __init__(self, slot: Slot, left: str, right: str) -> None:
        self.key = slot.key
        self.default = slot.default
        self.special = slot.key in SPECIALS
        self.left = left
        self.right = right
        # value -> what it adds (see _delta), plus _PROBLEM when it brings problems
        self.cache: dict[str, int] = {}
        self.problems: dict[str, tuple[Problem, ...]] = {}
        self.shared = False  # cache and problems are the matcher's, shared across templates

    def share(self, matcher: Matcher) -> None:
        """Use the matcher's verdicts: no term can span this placeholder's edges."""
        self.cache = matcher.verdicts
        self.problems = matcher.verdict_problems
        self.shared = True


def _context_free(matcher: Matcher, left: str, right: str) -> bool:
    """True when no term (exception or not) can run from the literal text next to a
    placeholder into its value, so a value's verdict is the same in every template."""
    lf, rf = fold(left), fold(right)
    if (lf and lf[-1].isascii() and lf[-1].isalnum()) or (
        rf and rf[0].isascii() and rf[0].isalnum()
    ):
        return False  # an ASCII word edge is judged on the neighbour
    for key in matcher.keys:
        for i in range(1, len(key)):
            if lf.endswith(key[:i]) or rf.startswith(key[i:]):
                return False
    return True


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


def _scanned_slot(piece: object) -> bool:
    """A placeholder whose value is scanned for words (not a special)."""
    return isinstance(piece, Slot) and piece.key not in SPECIALS


class CompiledTemplate:
    """One template for one tenant and category, ready to render for each recipient."""

    def __init__(self, source: str, ctx: LintContext, *, max_parts: int | None = None) -> None:
        self.source = source
        self.ctx = ctx
        self.lint: LintResult = lint(source, ctx)
        pieces = parse(source)  # TemplateError for a template that does not parse
        self._pieces = pieces
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
            # Another scanned placeholder within reach of a term, no boundary between: scan
            # whole. A special ({link}, {coupon}) is a boundary: its value is the platform's own.
            scanned = piece.key not in SPECIALS
            before = pieces[i - 2] if i > 1 else None
            after = pieces[i + 2] if i + 2 < n else None
            if scanned and (
                _scanned_slot(prev)
                or _scanned_slot(nxt)
                or (not left_closed and _scanned_slot(before))
                or (not right_closed and _scanned_slot(after))
            ):
                self.dense = True
            plan = _SlotPlan(piece, left, right)
            slots.append(plan)
        self._fmt = "".join(fmt)
        if not self.dense:  # values read alike in every context share one verdict
            for plan in slots:
                if not plan.special and _context_free(self._matcher, plan.left, plan.right):
                    plan.share(self._matcher)
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
            if slot.default is not None and not slot.shared:
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
        learn = self._learn
        cached_slots = tuple(s for s in self._fast_slots if not s.special)
        general = self._check
        caches = self._caches
        base = self._base
        n_special = self._n_special
        literal_ucs2 = self._literal_ucs2
        dense = self.dense
        render = self._fast_fmt.format
        max_parts = self.max_parts
        plain = _PLAIN.fullmatch
        # module constants as cells: a closure reads them faster than globals
        new, rendered_type = _new, Rendered
        problem_field, non_gsm, field16 = _PROBLEM_FIELD, _NON_GSM_FIELD, _FIELD
        wide_ucs2, wide_gsm, sept = _WIDE_UCS2_FIELD, _WIDE_GSM_FIELD, _SEPT
        single_ucs2, multi_ucs2, parts_of = SINGLE_UCS2, MULTI_UCS2, count_parts
        first_special = -n_special if n_special else None

        def check(values: Mapping[str, str], strict: bool = False) -> Rendered:
            try:
                got = get(values)
            except KeyError:
                got = fill(values, strict)
            if not all(got):
                got = fill(values, strict)
            try:
                acc = base + sum(map(dict.get, caches, got))  # type: ignore[arg-type]
            except TypeError:  # a value not seen yet (None in the sum): learn it, go on
                for slot, v in zip(cached_slots, got, strict=False):
                    if v not in slot.cache:
                        learn(slot, v)
                try:
                    acc = base + sum(map(dict.get, caches, got))  # type: ignore[arg-type]
                except TypeError:  # a value that is never remembered (an invalid one)
                    return general(values, strict=strict)
            if first_special is not None:
                joined = "".join(got[first_special:])
                if literal_ucs2:  # printable ASCII is one UCS-2 unit a character
                    if not (joined.isascii() and joined.isprintable()):
                        return general(values, strict=strict)
                    acc += len(joined)
                elif plain(joined):
                    acc += len(joined) * (1 + sept)
                else:
                    return general(values, strict=strict)
            if acc & problem_field or dense:
                return general(values, strict=strict)
            text = render(*got)
            if acc & non_gsm:  # a value (or the literal text) is not GSM-7
                units = acc & field16
                if units <= single_ucs2:
                    return new(rendered_type, (text, "ucs2", units, 1, ()))
                if acc & wide_ucs2:
                    parts = parts_of(text, "ucs2", units, True)
                else:
                    parts = -(-units // multi_ucs2)
                encoding = "ucs2"
            else:
                units = (acc >> 16) & field16
                parts = parts_of(text, "gsm7", units, bool(acc & wide_gsm))
                encoding = "gsm7"
            if parts > max_parts:
                problem = (("length.max", str(parts)),)
                return new(rendered_type, (text, encoding, units, parts, problem))
            return new(rendered_type, (text, encoding, units, parts, ()))

        return check

    def check_many(self, rows: Sequence[Mapping[str, str]], *, strict: bool = False) -> Batch:
        """``check`` for many recipients at once, the same results in the same order.

        The batch is worked a placeholder at a time with C-level maps (fetch the column, take
        the defaults, look the values up, add their units, render every text in one ``map``),
        so the Python work per recipient is a few list slots. Rows that need a closer look (a
        value with a problem, a two-unit character, a missing special) go through ``check``.
        The result is a :class:`Batch`: columns ready for a bulk insert into the outbox.
        """
        n = len(rows)
        if self.dense or n == 0:
            return Batch.of([self.check(r, strict) for r in rows])
        if not self._fast_slots:  # no placeholder: one text for everyone
            return Batch.of([self.check(rows[0], strict)] * n)
        cols: list[list[Any]] = []
        acc = [self._base] * n
        for slot in self._fast_slots:
            col: list[Any] = list(map(dict.get, rows, repeat(slot.key)))  # type: ignore[arg-type]
            if not all(col):
                if slot.special or (strict and slot.default is None):
                    return Batch.of([self.check(r, strict) for r in rows])  # raises where it must
                fallback = slot.default or ""
                col = [v or fallback for v in col]
            cols.append(col)
            if slot.special:
                joined = "".join(col)
                if self._literal_ucs2 and joined.isascii() and joined.isprintable():
                    acc = list(map(add, acc, map(len, col)))
                elif not self._literal_ucs2 and _PLAIN.fullmatch(joined):
                    acc = list(map(add, acc, map(mul, map(len, col), repeat(1 + _SEPT))))
                else:
                    return Batch.of([self.check(r, strict) for r in rows])
                continue
            known: list[Any] = list(map(slot.cache.get, col))
            if None in known:
                for v in {v for v, k in zip(col, known, strict=True) if k is None}:
                    self._learn(slot, v)
                known = list(map(slot.cache.get, col))
                if None in known:  # a value that is never remembered (an invalid one)
                    return Batch.of([self.check(r, strict) for r in rows])
            acc = list(map(add, acc, known))
        texts = list(map(self._fast_fmt.format, *cols))
        seen = reduce(or_, acc)  # every flag any row raised (the fields do not carry)
        if seen & _NON_GSM_FIELD and not self._literal_ucs2:  # a GSM-7 template, mixed rows
            encodings = ["ucs2" if a & _NON_GSM_FIELD else "gsm7" for a in acc]
            units = [a & _FIELD if a & _NON_GSM_FIELD else (a >> 16) & _FIELD for a in acc]
            parts = [_parts_of(u, e) for u, e in zip(units, encodings, strict=True)]
        else:
            encoding = "ucs2" if seen & _NON_GSM_FIELD else "gsm7"
            encodings = [encoding] * n
            if encoding == "ucs2":
                units = list(map(and_, acc, repeat(_FIELD)))
            else:
                units = list(map(and_, map(rshift, acc, repeat(16)), repeat(_FIELD)))
            single, multi = (
                (SINGLE_UCS2, MULTI_UCS2) if encoding == "ucs2" else (SINGLE_GSM7, MULTI_GSM7)
            )
            if max(units) <= single:
                parts = [1] * n
            else:
                parts = [1 if u <= single else -(-u // multi) for u in units]
        out = Batch(texts, encodings, units, parts, {})
        if (
            seen & (_PROBLEM_FIELD | _WIDE_UCS2_FIELD | _WIDE_GSM_FIELD)
            or max(parts) > self.max_parts
        ):
            for i, a in enumerate(acc):
                if (
                    a & (_PROBLEM_FIELD | _WIDE_UCS2_FIELD | _WIDE_GSM_FIELD)
                    or parts[i] > self.max_parts
                ):
                    out.put(i, self.check(rows[i], strict))
        return out

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
        if _INVALID.search(v):  # per placeholder: never a shared verdict
            return _delta(v) | _PROBLEM, (("value.invalid", slot.key),)
        if not self.dense and not self._matcher.term_chars.isdisjoint(fold(v)):
            # A finding touching the value holds one of its characters: others need no scan.
            problems = self._scan(slot.left, v, slot.right)
        if len(slot.cache) >= _CACHE_MAX:
            slot.cache.clear()
            slot.problems.clear()
            if slot.default is not None and not slot.shared:
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
        """Scan the whole rendered text; keep what overlaps a value that is not a default.
        A special's value is the platform's own: a boundary, never scanned."""
        chunks: list[tuple[str, int] | None] = []
        spans: list[tuple[int, int]] = []
        at = 0
        k = 0
        rendered: list[str] = []
        for piece in self._pieces:
            if isinstance(piece, str):
                text = piece
            else:
                slot = self._slots[k]
                text = vals[k]
                k += 1
                if slot.special:
                    chunks.append(None)
                    rendered.append(text)
                    at += len(text)
                    continue
                if text != slot.default:
                    if _INVALID.search(text):
                        return (("value.invalid", slot.key),)
                    spans.append((at, at + len(text)))
            chunks.append((text, at))
            rendered.append(text)
            at += len(text)
        folded, where = fold_positions(chunks)
        out: list[Problem] = []
        source = "".join(rendered)
        for hit in self._matcher.scan(folded, source, where):
            start, end = where[hit.start], where[hit.end - 1] + 1
            if any(start < b and end > a for a, b in spans):
                problem = self._problem(hit.entry.list, hit.entry.term)
                if problem[0]:
                    out.append(problem)
        return tuple(out)
