"""Password hashing with argon2id (argon2-cffi's defaults follow RFC 9106)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from hongyan.errors import ValidationFailed

_hasher = PasswordHasher()
MIN_LENGTH = 10


class WeakPassword(ValidationFailed):
    code = "weak_password"
    message_zh = f"密码至少需要 {MIN_LENGTH} 个字符"
    message_en = f"A password needs at least {MIN_LENGTH} characters"


def hash_password(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise WeakPassword()
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# Verified against when a login names an unknown user, so both paths cost the same time.
DUMMY_HASH = _hasher.hash("hongyan-timing-equaliser")
