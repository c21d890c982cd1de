"""Link codes and coupon codes (pure).

A link code is 7 random characters of ``[0-9A-Za-z]`` (62^7 ≈ 3.5 × 10^12 codes: guessing one of
a million live links takes some 3.5 million tries, which the redirector's miss limit stops long
before). A coupon code is 8 characters of an upper-case alphabet without the look-alikes
(0/O, 1/I/L, no lower case), so it can be read aloud and typed from a phone's screen.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.content.fields import COUPON_LENGTH, SHORT_LINK_LENGTH

LINK_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
LINK_CODE_LENGTH: Final = 7
#: Upper-case letters and digits without 0, O, 1, I, L.
COUPON_ALPHABET: Final = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
DEFAULT_LINK_BASE: Final = "https://hy.cx"

_LINK_CODE = re.compile(f"[0-9A-Za-z]{{{LINK_CODE_LENGTH}}}")
_COUPON_RE = re.compile(f"(?<![0-9A-Za-z])[{COUPON_ALPHABET}]{{{COUPON_LENGTH}}}(?![0-9A-Za-z])")

assert len(DEFAULT_LINK_BASE) + 1 + LINK_CODE_LENGTH == SHORT_LINK_LENGTH
assert not set("01OIL") & set(COUPON_ALPHABET)


def new_link_code() -> str:
    return "".join(secrets.choice(LINK_ALPHABET) for _ in range(LINK_CODE_LENGTH))


def new_coupon_code(length: int = COUPON_LENGTH) -> str:
    return "".join(secrets.choice(COUPON_ALPHABET) for _ in range(length))


def is_link_code(text: str) -> bool:
    """The shape of a link code: anything else is a miss without a database lookup."""
    return _LINK_CODE.fullmatch(text) is not None


def short_url(base: str, code: str) -> str:
    return f"{base.rstrip('/')}/{code}"


def normalise_coupon(text: str) -> str:
    """What a customer typed, as stored: upper case, no spaces or dashes."""
    return re.sub(r"[\s\-]", "", text).upper()


def coupons_in(text: str) -> list[str]:
    """Coupon-shaped words in a message text (the sandbox's shoppers read them)."""
    return _COUPON_RE.findall(text)


def link_base_problem(base: str) -> str | None:
    """Why a tenant's link base cannot be used, or None: http(s), a host, no path."""
    m = re.fullmatch(r"https?://([A-Za-z0-9.-]+)(:\d+)?/?", base)
    if m is None:
        return "expects http(s)://host, without a path"
    if "." not in m.group(1) and m.group(1) != "localhost":
        return "expects a domain name"
    return None


def insert_unique(
    conn: Connection,
    count: int,
    draw: Callable[[], str],
    insert: Callable[[list[str]], None],
    what: str,
) -> list[str]:
    """Draw ``count`` distinct random codes and ``insert`` them in a savepoint; should one
    collide with a stored code (the table's unique constraint refuses the insert), the whole
    batch is drawn again. Returns the codes in the order given to ``insert``."""
    dbapi = conn.dialect.loaded_dbapi
    for _attempt in range(5):
        drawn: set[str] = set()
        while len(drawn) < count:
            drawn.add(draw())
        code_list = list(drawn)
        try:
            with conn.begin_nested():
                insert(code_list)
        except (dbapi.IntegrityError, sa.exc.IntegrityError):  # driver-level or through Core
            continue  # a drawn code is stored already: draw the batch again
        return code_list
    raise RuntimeError(f"could not draw unique {what} codes")  # pragma: no cover
