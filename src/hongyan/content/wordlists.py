"""Word lists and the multi-pattern matcher behind the lint's word rules (pure).

The lists are data files in ``hongyan/content/words/`` (each names its source and licence):
``sensitive`` (with replacements), ``absolute``, ``forbidden``, ``vague`` and ``exception``.
A tenant adds words and exceptions of its own; :func:`matcher_for` builds (and caches) the
automaton for the platform's lists plus a tenant's.

Matching
    Text is *folded* one character at a time before matching, and so are the terms:

    - NFKC, so full-width letters and digits match their ASCII forms (``ＶＩＰ`` = ``vip``,
      ``１００％`` = ``100%``), then case-folded;
    - **noise is dropped**: spaces, control and zero-width characters, and every punctuation mark
      or symbol that is not listed below (``* . - _ · / | ~ # @ + =`` and emoji, ``★`` …), so
      ``免 费``, ``免*费``, ``免.费`` and ``免😀费`` all read ``免费``;
    - **sentence punctuation and brackets are kept as boundaries** (``，。！？；：、`` and their
      ASCII forms, all brackets): they separate words in real Chinese text, so a match never
      runs across them (``以免，费用…`` does not read ``免费``);
    - ``%`` and currency signs are kept as characters (``100%`` is a term).

    A term that starts or ends with an ASCII letter or digit only matches at an ASCII word edge,
    judged on the original text's neighbouring character (``100%`` is not found in ``1100%``,
    ``top1`` not in ``top10``, but ``TOP1 top10`` has it, the space being an edge).

    One pass of an Aho–Corasick automaton (``ahocorasick_rs``: the Rust ``aho-corasick`` crate)
    finds every occurrence of every term, overlapping ones included, in time linear in the text
    plus the matches whatever the number of terms. Then:

    - an **exception** (``最近``, ``最后``, ``第一次`` …) cancels any finding lying inside it,
      except a forbidden one: ``最后一天`` is not the absolute term ``最``;
    - where several findings of one list overlap, the longest is kept (``最佳`` over ``最``);
      where lists overlap on one span, the most severe list wins
      (forbidden > absolute > sensitive > vague).
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Final, Literal

import ahocorasick_rs

from hongyan.errors import ValidationFailed

ListName = Literal["sensitive", "absolute", "forbidden", "vague", "exception"]
LISTS: Final[tuple[ListName, ...]] = ("sensitive", "absolute", "forbidden", "vague", "exception")
# Most severe first: where two lists match the same span, the earlier one is reported.
SEVERITY_ORDER: Final[tuple[ListName, ...]] = ("forbidden", "absolute", "sensitive", "vague")

#: What a boundary folds to; never part of a term.
BOUNDARY: Final = "\x00"
_BOUNDARY_CHARS: Final = frozenset(
    "，。！？；：、,!?;:（）()【】[]「」『』《》〈〉<>{}｛｝［］〔〕"
)
MAX_TERM: Final = 20


@dataclass(frozen=True, slots=True)
class Entry:
    """One term of one list; ``replacement`` for sensitive words; ``tenant`` for a tenant's own."""

    list: ListName
    term: str
    replacement: str | None = None
    tenant: bool = False


@dataclass(frozen=True, slots=True)
class Hit:
    """A term found in folded text: ``[start, end)`` in folded coordinates."""

    start: int
    end: int
    entry: Entry


def _fold_one(ch: str) -> str:
    if ch in _BOUNDARY_CHARS:
        return BOUNDARY
    out: list[str] = []
    for c in unicodedata.normalize("NFKC", ch).casefold():
        if c in _BOUNDARY_CHARS:
            return BOUNDARY
        cat = unicodedata.category(c)
        if c == "%" or cat == "Sc":
            out.append(c)
        elif cat[0] in "CZPS":  # controls, format, separators (spaces), punctuation, symbols
            continue
        else:  # letters, marks, numbers
            out.append(c)
    return "".join(out)


class _FoldTable(dict[int, str]):
    """``str.translate`` table that folds each character, filled as characters are met."""

    def __missing__(self, code: int) -> str:
        folded = _fold_one(chr(code))
        if len(self) < 200_000:
            self[code] = folded
        return folded


_TABLE: Final = _FoldTable()


def fold(text: str) -> str:
    """The folded text (see the module doc); a boundary reads :data:`BOUNDARY`."""
    return text.translate(_TABLE)


def fold_char(ch: str) -> str:
    return _TABLE[ord(ch)]


def fold_positions(chunks: Iterable[tuple[str, int] | None]) -> tuple[str, list[int]]:
    """Fold pieces of a text whose characters stand at known positions.

    Each chunk is ``(text, position of its first character)``, its characters at consecutive
    positions; ``None`` is a boundary (a placeholder with no default). Returns the folded text
    and, for each of its characters, the position of the character it came from (-1 for a
    boundary chunk).
    """
    out: list[str] = []
    where: list[int] = []
    for chunk in chunks:
        if chunk is None:
            out.append(BOUNDARY)
            where.append(-1)
            continue
        text, at = chunk
        for i, ch in enumerate(text):
            f = _TABLE[ord(ch)]
            if f:
                out.append(f)
                where.extend([at + i] * len(f))
    return "".join(out), where


def _ascii_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def check_term(term: str, replacement: str | None = None) -> tuple[str, str | None]:
    """A term (and replacement) a tenant may add, stripped; ValidationFailed otherwise."""
    term = term.strip()
    folded = fold(term)
    if not folded or len(term) > MAX_TERM:
        raise ValidationFailed(
            f"A term is 1 to {MAX_TERM} characters with at least one letter or digit",
            f"词条须为 1 到 {MAX_TERM} 个字符，且至少包含一个文字或数字",
        )
    if BOUNDARY in folded:
        raise ValidationFailed(
            "A term cannot contain sentence punctuation or brackets (，。！？ 【】 …)",
            "词条不能包含标点或括号（，。！？【】等）",
        )
    if replacement is not None:
        replacement = replacement.strip()
        if len(replacement) > MAX_TERM or "{" in replacement or "}" in replacement:
            raise ValidationFailed(
                f"A replacement is at most {MAX_TERM} characters, without braces",
                f"替换词最多 {MAX_TERM} 个字符，且不能包含花括号",
            )
        replacement = replacement or None
    return term, replacement


def parse_list(name: ListName, text: str) -> list[Entry]:
    """Entries of one list file: ``term`` or ``term | replacement`` a line, ``#`` comments."""
    entries: list[Entry] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        term, bar, replacement = line.partition("|")
        term, repl = check_term(term, replacement if bar else None)
        entries.append(Entry(name, term, repl))
    return entries


@functools.cache
def platform_entries() -> tuple[Entry, ...]:
    """The platform's lists, read once from the package's data files."""
    folder = resources.files("hongyan.content").joinpath("words")
    out: list[Entry] = []
    for name in LISTS:
        out += parse_list(name, folder.joinpath(f"{name}.txt").read_text(encoding="utf-8"))
    return tuple(out)


class Matcher:
    """An Aho–Corasick automaton over folded terms; :meth:`scan` returns resolved hits."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        grouped: dict[str, list[Entry]] = {}
        for entry in entries:
            key = fold(entry.term)
            if key and BOUNDARY not in key:
                grouped.setdefault(key, []).append(entry)
        self.keys = tuple(grouped)
        self._found = tuple((key, tuple(found)) for key, found in grouped.items())
        self._automaton = ahocorasick_rs.AhoCorasick(self.keys) if grouped else None
        #: The longest folded term: how much context a window around a value needs.
        self.longest = max((len(k) for k in grouped), default=0)
        #: Every character of every folded term: a folded text with none of them has no match.
        self.chars = frozenset("".join(grouped))
        #: The same for the terms that make findings (not exceptions): a value with none of
        #: them brings no finding in.
        self.term_chars = frozenset(
            "".join(k for k, found in grouped.items() if any(e.list != "exception" for e in found))
        )
        #: What compiled templates learned about values that read the same in any context
        #: (hongyan.content.compiled): shared by every template linted with this matcher.
        self.verdicts: dict[str, int] = {}
        self.verdict_problems: dict[str, tuple[tuple[str, str], ...]] = {}
        self.entries = tuple(e for found in grouped.values() for e in found)

    def any(self, folded: str) -> bool:
        """True when some term (exceptions included) occurs in ``folded``: a quick look."""
        if self._automaton is None:
            return False
        return bool(self._automaton.find_matches_as_indexes(folded))

    def raw(self, folded: str, source: str | None = None, where: Sequence[int] = ()) -> list[Hit]:
        """Every occurrence at an acceptable edge, exceptions included, unresolved.

        With ``source`` and ``where`` (from :func:`fold_positions`), ASCII word edges are judged
        on the source text's neighbouring characters; without, on the folded text's.
        """
        if self._automaton is None or not folded:
            return []
        hits: list[Hit] = []
        for index, start, stop in self._automaton.find_matches_as_indexes(folded, overlapping=True):
            key, found = self._found[index]
            end = stop - 1
            if _ascii_alnum(key[0]) and _alnum_before(folded, start, source, where):
                continue
            if _ascii_alnum(key[-1]) and _alnum_after(folded, end, source, where):
                continue
            hits.extend(Hit(start, stop, e) for e in found)
        return hits

    def scan(self, folded: str, source: str | None = None, where: Sequence[int] = ()) -> list[Hit]:
        """Findings in folded text, exceptions applied and overlaps resolved, by position."""
        return resolve(self.raw(folded, source, where))


def _alnum_before(folded: str, start: int, source: str | None, where: Sequence[int]) -> bool:
    if source is not None and where:
        at = where[start] - 1
        return at >= 0 and _ascii_alnum(source[at])
    return start > 0 and _ascii_alnum(folded[start - 1])


def _alnum_after(folded: str, end: int, source: str | None, where: Sequence[int]) -> bool:
    if source is not None and where:
        at = where[end] + 1
        return at < len(source) and _ascii_alnum(source[at])
    return end + 1 < len(folded) and _ascii_alnum(folded[end + 1])


def resolve(hits: Sequence[Hit]) -> list[Hit]:
    """Apply exceptions and keep one finding per span (see the module doc)."""
    allowed = [(h.start, h.end) for h in hits if h.entry.list == "exception"]
    kept: list[Hit] = []
    for h in hits:
        if h.entry.list == "exception":
            continue
        if h.entry.list != "forbidden" and any(a <= h.start and h.end <= b for a, b in allowed):
            continue
        kept.append(h)
    rank = {name: i for i, name in enumerate(SEVERITY_ORDER)}
    # Longest first, then most severe: a hit inside an already kept hit of the same or a less
    # severe list is dropped; one on the same span of a less severe list too.
    kept.sort(key=lambda h: (h.start - h.end, rank[h.entry.list], h.start))
    out: list[Hit] = []
    for h in kept:
        if any(
            o.start <= h.start
            and h.end <= o.end
            and (o.entry.list == h.entry.list or rank[o.entry.list] <= rank[h.entry.list])
            for o in out
        ):
            continue
        out.append(h)
    out.sort(key=lambda h: (h.start, h.end))
    return out


@functools.lru_cache(maxsize=256)
def matcher_for(tenant_entries: tuple[Entry, ...] = ()) -> Matcher:
    """The platform's lists plus a tenant's; built once per distinct set of tenant words."""
    return Matcher((*platform_entries(), *tenant_entries))
