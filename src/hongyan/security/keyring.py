"""The key ring that protects phone numbers at rest.

Encryption is AES-256-GCM (``cryptography``'s AESGCM) with a fresh 96-bit random nonce per value.
A ``context`` string (for example ``"tenant:42:phone"``) is bound as associated data, so a
ciphertext copied to another tenant or column fails to decrypt.

Blob layout (version 1)::

    0x01 | key-id length (1 byte) | key id (ASCII) | nonce (12 bytes) | ciphertext + 16-byte tag

The key id inside every blob lets old and new data keys live side by side while
``hongyan keys rotate`` moves values to the active key (:meth:`KeyRing.needs_rotation`,
:meth:`KeyRing.reencrypt`).

Lookups and de-duplication use a blind index: HMAC-SHA256(index key, context NUL value), 32 bytes,
deterministic. The index key is never rotated by ``keys rotate``: changing it would require a full
rebuild of every blind index from decrypted values.

Keys are written as URL-safe base64 (padding optional); :meth:`KeyRing.generate_key` makes one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import unicodedata
from collections.abc import Callable, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KeyRing", "KeyRingError", "mask_phone"]

VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
DATA_KEY_BYTES = 32
MIN_INDEX_KEY_BYTES = 32
KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_URLSAFE_B64 = re.compile(r"[A-Za-z0-9_-]*={0,2}")


# Counts the forks this process came from: a nonce pool drawn before a fork is dropped after it
# (cheaper than asking the kernel for the pid at every encryption).
_forks = [0]


def _forked() -> None:
    _forks[0] += 1


os.register_at_fork(after_in_child=_forked)


class KeyRingError(Exception):
    """Bad key material, an unknown key id, or a ciphertext that does not verify."""


def _check_key_id(key_id: object, what: str) -> str:
    if not isinstance(key_id, str) or not KEY_ID.fullmatch(key_id):
        raise KeyRingError(
            f"{what} {key_id!r} is not a valid key id: use 1 to 32 characters of A-Z a-z 0-9 _ -"
        )
    return key_id


def _b64decode(text: str, what: str) -> bytes:
    """Strict URL-safe base64; padding is optional, anything outside the alphabet is refused."""
    text = text.strip()
    if not text:
        raise KeyRingError(f"{what} is empty")
    if not _URLSAFE_B64.fullmatch(text):
        raise KeyRingError(f"{what} is not valid URL-safe base64 (alphabet A-Z a-z 0-9 - _)")
    bare = text.rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    except (binascii.Error, ValueError) as exc:
        raise KeyRingError(f"{what} is not valid URL-safe base64 ({exc})") from exc
    if base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") != bare:
        raise KeyRingError(f"{what} is not valid URL-safe base64 (bad length or last character)")
    return raw


class KeyRing:
    """AES-256-GCM data keys (one active) plus the HMAC key for blind indexes."""

    def __init__(
        self, data_keys: Mapping[str, bytes], active_key_id: str, index_key: bytes
    ) -> None:
        if not data_keys:
            raise KeyRingError("the key ring needs at least one data key")
        ciphers: dict[str, AESGCM] = {}
        for key_id, key in data_keys.items():
            _check_key_id(key_id, "data key id")
            if not isinstance(key, bytes | bytearray):
                raise KeyRingError(f"data key {key_id!r} must be bytes")
            if len(key) != DATA_KEY_BYTES:
                raise KeyRingError(
                    f"data key {key_id!r} is {len(key)} bytes; AES-256 needs exactly "
                    f"{DATA_KEY_BYTES} bytes"
                )
            ciphers[key_id] = AESGCM(bytes(key))
        _check_key_id(active_key_id, "active key id")
        if active_key_id not in ciphers:
            raise KeyRingError(
                f"active key {active_key_id!r} is not among the data keys "
                f"({', '.join(sorted(ciphers))})"
            )
        if not isinstance(index_key, bytes | bytearray):
            raise KeyRingError("the index key must be bytes")
        if len(index_key) < MIN_INDEX_KEY_BYTES:
            raise KeyRingError(
                f"the index key is {len(index_key)} bytes; it must be at least "
                f"{MIN_INDEX_KEY_BYTES} bytes"
            )
        self._ciphers = ciphers
        self._active = active_key_id
        # HMAC (RFC 2104) from its two keyed SHA-256 states, prepared once: copying a state per
        # value costs half of what copying an ``hmac.HMAC`` object does.
        block = bytes(index_key) if len(index_key) <= 64 else hashlib.sha256(index_key).digest()
        block = block.ljust(64, b"\x00")
        self._index_inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._index_outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def __repr__(self) -> str:  # never shows key material
        return f"KeyRing(key_ids={sorted(self._ciphers)!r}, active={self._active!r})"

    @classmethod
    def parse(cls, data_keys_spec: str, active_key_id: str, index_key_b64: str) -> KeyRing:
        """Build a ring from ``"k1:<base64>,k2:<base64>"``, an active key id, a base64 index key."""
        keys: dict[str, bytes] = {}
        for part in data_keys_spec.split(","):
            part = part.strip()
            if not part:
                continue
            key_id, sep, material = part.partition(":")
            if not sep:
                raise KeyRingError(
                    "data keys are written as id:base64key pairs separated by commas, "
                    f"got an entry without ':' (entry {len(keys) + 1})"
                )
            key_id = _check_key_id(key_id.strip(), "data key id")
            if key_id in keys:
                raise KeyRingError(f"data key id {key_id!r} appears twice")
            keys[key_id] = _b64decode(material, f"data key {key_id!r}")
        if not keys:
            raise KeyRingError("no data keys given: expected id:base64key[,id:base64key...]")
        index_key = _b64decode(index_key_b64, "the index key")
        return cls(keys, active_key_id.strip(), index_key)

    @staticmethod
    def generate_key() -> str:
        """A new random 32-byte key as URL-safe base64 (without padding)."""
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")

    @property
    def active_key_id(self) -> str:
        return self._active

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._ciphers))

    def encrypt(self, plaintext: str, context: str) -> bytes:
        kid = self._active.encode("ascii")
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._ciphers[self._active].encrypt(
            nonce, plaintext.encode("utf-8"), context.encode("utf-8")
        )
        return bytes([VERSION, len(kid)]) + kid + nonce + sealed

    def sealer(self, context: str) -> Callable[[str], bytes]:
        """:meth:`encrypt` under ``context`` for many values, as a function: the header, the
        associated data and the cipher are prepared once, and nonces are drawn from the operating
        system a thousand at a time instead of one call each (still a fresh random 96-bit nonce
        per value; the pool is dropped in a forked child, so two processes never share one)."""
        kid = self._active.encode("ascii")
        head = bytes([VERSION, len(kid)]) + kid
        aad = context.encode("utf-8")
        seal = self._ciphers[self._active].encrypt
        nonces: list[bytes] = []
        drawn_in = [-1]  # the fork generation the pool was drawn in

        def encrypt(plaintext: str) -> bytes:
            if not nonces or drawn_in[0] != _forks[0]:
                block = os.urandom(NONCE_BYTES * 1024)
                nonces[:] = [block[i : i + NONCE_BYTES] for i in range(0, len(block), NONCE_BYTES)]
                drawn_in[0] = _forks[0]
            nonce = nonces.pop()
            return head + nonce + seal(nonce, plaintext.encode("utf-8"), aad)

        return encrypt

    @staticmethod
    def _split(blob: bytes) -> tuple[str, bytes, bytes]:
        if isinstance(blob, bytearray | memoryview):
            blob = bytes(blob)
        if not isinstance(blob, bytes):
            raise KeyRingError(f"ciphertext must be bytes, not {type(blob).__name__}")
        if len(blob) < 2:
            raise KeyRingError("ciphertext is truncated (no header)")
        if blob[0] != VERSION:
            raise KeyRingError(f"ciphertext has unknown format version {blob[0]}")
        n = blob[1]
        header = 2 + n
        if len(blob) < header:
            raise KeyRingError("ciphertext is truncated (in the key id)")
        try:
            key_id = blob[2:header].decode("ascii")
        except UnicodeDecodeError as exc:
            raise KeyRingError("ciphertext has a garbled key id") from exc
        if not KEY_ID.fullmatch(key_id):
            raise KeyRingError("ciphertext has a garbled key id")
        if len(blob) < header + NONCE_BYTES + TAG_BYTES:
            raise KeyRingError("ciphertext is truncated (shorter than nonce and tag)")
        return key_id, blob[header : header + NONCE_BYTES], blob[header + NONCE_BYTES :]

    @staticmethod
    def key_id_of(blob: bytes) -> str:
        """The id of the data key that made ``blob`` (header only; no decryption)."""
        return KeyRing._split(blob)[0]

    def decrypt(self, blob: bytes, context: str) -> str:
        key_id, nonce, sealed = self._split(blob)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise KeyRingError(
                f"ciphertext was made with data key {key_id!r}, which is not in the key ring"
            )
        try:
            raw = cipher.decrypt(nonce, sealed, context.encode("utf-8"))
        except InvalidTag as exc:
            raise KeyRingError(
                "ciphertext does not verify: it was tampered with or belongs to another context"
            ) from exc
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:  # authentic but not ours; should not happen
            raise KeyRingError("decrypted value is not UTF-8 text") from exc

    def needs_rotation(self, blob: bytes) -> bool:
        return self.key_id_of(blob) != self._active

    def reencrypt(self, blob: bytes, context: str) -> bytes:
        """Decrypt with whichever loaded key made ``blob``; encrypt again with the active key."""
        return self.encrypt(self.decrypt(blob, context), context)

    def blind_index(self, value: str, context: str) -> bytes:
        """HMAC-SHA256(index key, context NUL value): 32 deterministic bytes for lookups."""
        return self.indexer(context)(value)

    def indexer(self, context: str) -> Callable[[str], bytes]:
        """:meth:`blind_index` under ``context`` for many values, as a function (the context is
        hashed into the keyed state once)."""
        if "\x00" in context:
            raise KeyRingError("a blind-index context must not contain NUL")
        inner = self._index_inner.copy()
        inner.update(context.encode("utf-8") + b"\x00")
        start, finish = inner.copy, self._index_outer.copy

        def index(value: str) -> bytes:
            i = start()
            i.update(value.encode("utf-8"))
            o = finish()
            o.update(i.digest())
            return o.digest()

        return index


def _decimal_digits(text: str) -> str:
    """All decimal digits of ``text`` as ASCII (full-width digits count; superscripts do not)."""
    return "".join(str(unicodedata.decimal(ch)) for ch in text if ch.isdecimal())


def mask_phone(number: str) -> str:
    """Mask a phone number for display; never shows more than 7 of its digits.

    ``+8613812345678`` and ``13812345678`` → ``138****5678``; ``+447700900123`` →
    ``+447****0123``;
    7 to 10 digits → first 2, ``****``, last 2; 3 to 6 digits → ``****`` and the last 2;
    fewer → ``****``; no digits → ``""``.
    """
    number = number.strip()
    plus = number.startswith(("+", "＋"))
    digits = _decimal_digits(number)
    if not digits:
        return ""
    if len(digits) == 13 and digits.startswith("86"):
        digits, plus = digits[2:], False
    if len(digits) >= 11:
        masked = f"{digits[:3]}****{digits[-4:]}"
    elif len(digits) >= 7:  # short (landline, foreign) numbers keep less of themselves
        masked = f"{digits[:2]}****{digits[-2:]}"
    elif len(digits) >= 3:
        masked = f"****{digits[-2:]}"
    else:
        masked = "****"
    return ("+" if plus else "") + masked
