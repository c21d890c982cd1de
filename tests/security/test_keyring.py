"""The key ring: AES-256-GCM round trips, tamper detection, rotation, blind index, masking."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hongyan.security.keyring import KeyRing, KeyRingError, mask_phone

K1 = bytes(range(32))
K2 = bytes(range(32, 64))
INDEX = b"i" * 32
CTX = "tenant:42:phone"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing({"k1": K1}, "k1", INDEX)


def ring_k1() -> KeyRing:
    return KeyRing({"k1": K1}, "k1", INDEX)


def ring_k1_k2() -> KeyRing:
    return KeyRing({"k1": K1, "k2": K2}, "k2", INDEX)


# --- encryption ------------------------------------------------------------------------------


@given(text=st.text(), context=st.text())
def test_round_trip(text: str, context: str) -> None:
    ring = ring_k1()
    assert ring.decrypt(ring.encrypt(text, context), context) == text


def test_blob_layout(ring: KeyRing) -> None:
    blob = ring.encrypt("13812345678", CTX)
    assert blob[0] == 1
    assert blob[1] == 2
    assert blob[2:4] == b"k1"
    # version, id length, id, 12-byte nonce, 11 bytes of ciphertext, 16-byte tag
    assert len(blob) == 1 + 1 + 2 + 12 + 11 + 16
    assert b"13812345678" not in blob
    assert KeyRing.key_id_of(blob) == "k1"


def test_nonce_freshness(ring: KeyRing) -> None:
    blobs = {ring.encrypt("13812345678", CTX) for _ in range(50)}
    assert len(blobs) == 50
    nonces = {blob[4:16] for blob in blobs}
    assert len(nonces) == 50


def test_wrong_context_fails(ring: KeyRing) -> None:
    blob = ring.encrypt("13812345678", "tenant:42:phone")
    for other in ("tenant:43:phone", "tenant:42:email", "", "tenant:42:phone "):
        with pytest.raises(KeyRingError, match="does not verify"):
            ring.decrypt(blob, other)


@settings(max_examples=200)
@given(data=st.data(), text=st.text(max_size=40))
def test_every_single_byte_flip_fails(data: st.DataObject, text: str) -> None:
    ring = ring_k1()
    blob = ring.encrypt(text, CTX)
    position = data.draw(st.integers(0, len(blob) - 1), label="position")
    mask = data.draw(st.integers(1, 255), label="xor mask")
    tampered = bytearray(blob)
    tampered[position] ^= mask
    with pytest.raises(KeyRingError):
        ring.decrypt(bytes(tampered), CTX)


def test_every_position_flip_fails_exhaustively(ring: KeyRing) -> None:
    blob = ring.encrypt("13812345678", CTX)
    for position in range(len(blob)):
        for mask in (0x01, 0x80, 0xFF):
            tampered = bytearray(blob)
            tampered[position] ^= mask
            with pytest.raises(KeyRingError):
                ring.decrypt(bytes(tampered), CTX)


def test_truncated_blobs_fail(ring: KeyRing) -> None:
    blob = ring.encrypt("13812345678", CTX)
    for length in range(len(blob)):
        with pytest.raises(KeyRingError):
            ring.decrypt(blob[:length], CTX)


def test_extended_blob_fails(ring: KeyRing) -> None:
    blob = ring.encrypt("13812345678", CTX)
    with pytest.raises(KeyRingError):
        ring.decrypt(blob + b"\x00", CTX)


def test_bad_version_fails(ring: KeyRing) -> None:
    blob = ring.encrypt("13812345678", CTX)
    for version in (0, 2, 255):
        with pytest.raises(KeyRingError, match="version"):
            ring.decrypt(bytes([version]) + blob[1:], CTX)
        with pytest.raises(KeyRingError):
            KeyRing.key_id_of(bytes([version]) + blob[1:])


@pytest.mark.parametrize(
    "garbled",
    [
        b"",
        b"\x01",
        b"\x01\x00" + b"\x00" * 28,  # empty key id
        b"\x01\x05k1",  # id runs past the end
        b"\x01\x02k!" + b"\x00" * 28,  # id outside the alphabet
        b"\x01\x02\xff\xfe" + b"\x00" * 28,  # id not ASCII
        b"\x01\x21" + b"a" * 33 + b"\x00" * 28,  # id too long
        b"\x01\x02k1" + b"\x00" * 27,  # shorter than nonce + tag
    ],
)
def test_key_id_of_garbled(garbled: bytes) -> None:
    with pytest.raises(KeyRingError):
        KeyRing.key_id_of(garbled)
    with pytest.raises(KeyRingError):
        ring_k1().decrypt(garbled, CTX)


def test_non_bytes_blob_is_refused(ring: KeyRing) -> None:
    with pytest.raises(KeyRingError, match="bytes"):
        ring.decrypt("not bytes", CTX)  # type: ignore[arg-type]


def test_memoryview_blob_is_accepted(ring: KeyRing) -> None:
    blob = ring.encrypt("13812345678", CTX)
    assert ring.decrypt(memoryview(blob), CTX) == "13812345678"  # type: ignore[arg-type]


def test_unknown_key_id_fails() -> None:
    other = KeyRing({"k9": K2}, "k9", INDEX)
    blob = other.encrypt("13812345678", CTX)
    with pytest.raises(KeyRingError, match="'k9'"):
        ring_k1().decrypt(blob, CTX)


def test_same_id_different_key_fails() -> None:
    impostor = KeyRing({"k1": K2}, "k1", INDEX)
    blob = impostor.encrypt("13812345678", CTX)
    with pytest.raises(KeyRingError, match="does not verify"):
        ring_k1().decrypt(blob, CTX)


# --- rotation --------------------------------------------------------------------------------


def test_rotation() -> None:
    old, new = ring_k1(), ring_k1_k2()
    blob = old.encrypt("13812345678", CTX)
    assert old.active_key_id == "k1"
    assert new.active_key_id == "k2"
    assert not old.needs_rotation(blob)
    assert new.needs_rotation(blob)
    assert new.decrypt(blob, CTX) == "13812345678"

    rotated = new.reencrypt(blob, CTX)
    assert KeyRing.key_id_of(rotated) == "k2"
    assert not new.needs_rotation(rotated)
    assert new.decrypt(rotated, CTX) == "13812345678"
    with pytest.raises(KeyRingError, match="'k2'"):
        old.decrypt(rotated, CTX)

    # the blind index does not change with rotation
    assert old.blind_index("13812345678", CTX) == new.blind_index("13812345678", CTX)


def test_reencrypt_keeps_context_binding() -> None:
    blob = ring_k1().encrypt("13812345678", CTX)
    with pytest.raises(KeyRingError):
        ring_k1_k2().reencrypt(blob, "tenant:7:phone")


def test_needs_rotation_on_garbled_blob() -> None:
    with pytest.raises(KeyRingError):
        ring_k1_k2().needs_rotation(b"\x02garbage")


# --- blind index -----------------------------------------------------------------------------


def test_blind_index_deterministic_and_separated(ring: KeyRing) -> None:
    a = ring.blind_index("13812345678", CTX)
    assert len(a) == 32
    assert a == ring.blind_index("13812345678", CTX)
    assert a == KeyRing({"k1": K1}, "k1", INDEX).blind_index("13812345678", CTX)
    assert a != ring.blind_index("13812345679", CTX)
    assert a != ring.blind_index("13812345678", "tenant:43:phone")
    other_index = KeyRing({"k1": K1}, "k1", b"j" * 32)
    assert a != other_index.blind_index("13812345678", CTX)
    # independent of the data keys
    assert a == ring_k1_k2().blind_index("13812345678", CTX)


def test_blind_index_is_hmac_sha256() -> None:
    import hashlib
    import hmac

    expected = hmac.new(INDEX, b"ctx\x00value", hashlib.sha256).digest()
    assert ring_k1().blind_index("value", "ctx") == expected


@given(
    value=st.text(),
    context=st.text().filter(lambda s: "\x00" not in s),
    key=st.binary(min_size=32, max_size=200),
)
@settings(max_examples=200)
def test_indexer_is_hmac_sha256_for_any_key_length(value: str, context: str, key: bytes) -> None:
    # keys over SHA-256's 64-byte block are hashed first, as RFC 2104 says
    import hashlib
    import hmac

    ring = KeyRing({"k1": K1}, "k1", key)
    expected = hmac.new(key, f"{context}\x00{value}".encode(), hashlib.sha256).digest()
    assert ring.indexer(context)(value) == expected
    assert ring.blind_index(value, context) == expected


def test_indexer_refuses_nul_in_context(ring: KeyRing) -> None:
    with pytest.raises(KeyRingError, match="NUL"):
        ring.indexer("a\x00b")


@given(texts=st.lists(st.text(), max_size=30), context=st.text())
def test_sealer_round_trips_like_encrypt(texts: list[str], context: str) -> None:
    ring = ring_k1_k2()
    seal = ring.sealer(context)
    blobs = [seal(t) for t in texts]
    assert [ring.decrypt(b, context) for b in blobs] == texts
    assert all(ring.key_id_of(b) == "k2" for b in blobs)


def test_sealer_nonces_are_fresh_across_pool_refills(ring: KeyRing) -> None:
    seal = ring.sealer(CTX)
    nonces = {seal("13812345678")[4:16] for _ in range(2500)}  # more than two pools
    assert len(nonces) == 2500


def test_sealer_draws_new_nonces_in_a_forked_child(ring: KeyRing) -> None:
    import os

    seal = ring.sealer(CTX)
    parent = seal("x")[4:16]  # the pool is filled in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, seal("x")[4:16])
        os._exit(0)
    os.close(write)
    child_nonce = os.read(read, 12)
    os.waitpid(pid, 0)
    os.close(read)
    # Without the fork check both would pop the same next nonce from the inherited pool.
    assert child_nonce != seal("x")[4:16]
    assert child_nonce != parent


def test_blind_index_refuses_nul_in_context(ring: KeyRing) -> None:
    # "a\x00b" + "\x00" + "c" would collide with "a" + "\x00" + "b\x00c"
    with pytest.raises(KeyRingError, match="NUL"):
        ring.blind_index("c", "a\x00b")
    # NUL inside the value is fine: the first NUL always ends the context
    assert len(ring.blind_index("b\x00c", "a")) == 32


@given(value=st.text(), context=st.text().filter(lambda s: "\x00" not in s), other=st.text())
def test_blind_index_context_separation_property(value: str, context: str, other: str) -> None:
    ring = ring_k1()
    if other != context and "\x00" not in other:
        assert ring.blind_index(value, context) != ring.blind_index(value, other)


# --- construction and parsing ----------------------------------------------------------------


def test_parse_ok_and_whitespace_tolerant() -> None:
    spec = f"  k1 : {b64(K1)} ,\n k2:{b64(K2).rstrip('=')} , "
    ring = KeyRing.parse(spec, " k2 ", f" {b64(INDEX)}\n")
    assert ring.active_key_id == "k2"
    assert ring.key_ids == ("k1", "k2")
    assert ring.decrypt(ring_k1().encrypt("x", CTX), CTX) == "x"
    assert ring.blind_index("x", CTX) == ring_k1().blind_index("x", CTX)


@pytest.mark.parametrize(
    ("spec", "active", "index", "message"),
    [
        ("", "k1", b64(INDEX), "no data keys"),
        (" , ", "k1", b64(INDEX), "no data keys"),
        (f"k1{b64(K1)}", "k1", b64(INDEX), "id:base64key"),
        ("k1:not*base64!", "k1", b64(INDEX), "base64"),
        (f"k1:{b64(K1).replace('A', '+', 1)}", "k1", b64(INDEX), "base64"),  # standard alphabet
        ("k1:", "k1", b64(INDEX), "empty"),
        ("k1:QUJD", "k1", b64(INDEX), "32 bytes"),  # 3 bytes
        (f"k1:{b64(bytes(33))}", "k1", b64(INDEX), "32 bytes"),
        (f"k1:{b64(bytes(16))}", "k1", b64(INDEX), "32 bytes"),  # AES-128 is not accepted
        (f"k1:{b64(K1)[:-3]}", "k1", b64(INDEX), "base64"),  # length 41 mod 4 == 1
        (f"k1:{b64(K1)}", "k2", b64(INDEX), "not among"),
        (f"k1:{b64(K1)},k2:{b64(K2)}", "k3", b64(INDEX), "not among"),
        (f"k1:{b64(K1)}", "", b64(INDEX), "key id"),
        (f"bad id:{b64(K1)}", "bad id", b64(INDEX), "key id"),
        (f"k.1:{b64(K1)}", "k.1", b64(INDEX), "key id"),
        (f"{'k' * 33}:{b64(K1)}", "k" * 33, b64(INDEX), "key id"),
        (f":{b64(K1)}", "k1", b64(INDEX), "key id"),
        (f"k1:{b64(K1)},k1:{b64(K2)}", "k1", b64(INDEX), "twice"),
        (f"k1:{b64(K1)}", "k1", b64(bytes(31)), "at least 32"),
        (f"k1:{b64(K1)}", "k1", "", "empty"),
        (f"k1:{b64(K1)}", "k1", "%%%", "base64"),
    ],
)
def test_parse_errors(spec: str, active: str, index: str, message: str) -> None:
    with pytest.raises(KeyRingError, match=re.escape(message)):
        KeyRing.parse(spec, active, index)


def test_parse_accepts_long_index_key() -> None:
    ring = KeyRing.parse(f"k1:{b64(K1)}", "k1", b64(bytes(64)))
    assert len(ring.blind_index("x", "y")) == 32


@pytest.mark.parametrize(
    ("keys", "active", "index", "message"),
    [
        ({}, "k1", INDEX, "at least one"),
        ({"k1": b"short"}, "k1", INDEX, "32 bytes"),
        ({"k1": "x" * 32}, "k1", INDEX, "bytes"),
        ({"k1\n": K1}, "k1\n", INDEX, "key id"),
        ({"ключ": K1}, "ключ", INDEX, "key id"),
        ({"k1": K1}, "k2", INDEX, "not among"),
        ({"k1": K1}, "k1", b"x" * 31, "at least 32"),
    ],
)
def test_init_errors(keys: dict[str, bytes], active: str, index: bytes, message: str) -> None:
    with pytest.raises(KeyRingError, match=re.escape(message)):
        KeyRing(keys, active, index)


def test_repr_hides_keys() -> None:
    text = repr(ring_k1_k2())
    assert "k1" in text and "k2" in text
    assert b64(K1)[:10] not in text and "\\x00\\x01" not in text


def test_generate_key_round_trip() -> None:
    keys = {KeyRing.generate_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", key)
    k1, k2, index = KeyRing.generate_key(), KeyRing.generate_key(), KeyRing.generate_key()
    ring = KeyRing.parse(f"k1:{k1},k2:{k2}", "k2", index)
    assert ring.decrypt(ring.encrypt("13812345678", CTX), CTX) == "13812345678"
    assert len(ring.blind_index("13812345678", CTX)) == 32


# --- masking ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+8613812345678", "138****5678"),
        ("8613812345678", "138****5678"),
        ("13812345678", "138****5678"),
        (" 138 1234 5678 ", "138****5678"),
        ("138-1234-5678", "138****5678"),
        ("+86 138 1234 5678", "138****5678"),
        ("１３８１２３４５６７８", "138****5678"),  # full-width digits
        ("+447700900123", "+447****0123"),
        ("+14155550123", "+141****0123"),
        ("+861012345678", "+861****5678"),  # 12 digits: not the 13-digit Chinese mobile form
        ("02112345678", "021****5678"),
        ("1234567", "12****67"),
        ("0755123456", "07****56"),
        ("123456", "****56"),
        ("12345", "****45"),
        ("123", "****23"),
        ("12", "****"),
        ("1", "****"),
        ("", ""),
        ("   ", ""),
        ("+", ""),
        ("abc", ""),
    ],
)
def test_mask_phone_table(number: str, masked: str) -> None:
    assert mask_phone(number) == masked


def _digit_count(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


@given(st.text(alphabet="0123456789", min_size=11, max_size=11), st.sampled_from(["", "+", "+86"]))
def test_mask_phone_never_leaks_eight_consecutive_digits(digits: str, prefix: str) -> None:
    masked = mask_phone(prefix + digits)
    assert _digit_count(masked) <= 7
    for start in range(len(digits) - 7):
        assert digits[start : start + 8] not in masked
    assert "****" in masked


@given(st.text())
def test_mask_phone_never_more_than_seven_digits(text: str) -> None:
    masked = mask_phone(text)
    assert _digit_count(masked) <= 7
    assert masked == "" or "****" in masked
    assert set(masked) <= set("+*0123456789")
