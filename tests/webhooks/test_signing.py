"""verify_signature: what we sign verifies; a changed byte, another secret, an old or future
timestamp, or a malformed header does not; nothing a sender puts in the header makes it raise."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.webhooks.signing import DEFAULT_TOLERANCE, sign, signature, verify_signature

secrets_ = st.text(min_size=1, max_size=64)
bodies = st.binary(max_size=512)
stamps = st.integers(min_value=0, max_value=4_000_000_000)


@given(secrets_, bodies, stamps, st.floats(min_value=-300, max_value=300))
def test_round_trip_within_the_window(secret: str, body: bytes, t: int, skew: float) -> None:
    assert verify_signature(secret, sign(secret, body, t), body, t + skew)


@given(secrets_, bodies, stamps, st.data())
def test_any_changed_body_is_rejected(
    secret: str, body: bytes, t: int, data: st.DataObject
) -> None:
    header = sign(secret, body, t)
    other = data.draw(bodies.filter(lambda b: b != body))
    assert not verify_signature(secret, header, other, t)
    if body:
        i = data.draw(st.integers(0, len(body) - 1))
        flipped = body[:i] + bytes([body[i] ^ data.draw(st.integers(1, 255))]) + body[i + 1 :]
        assert not verify_signature(secret, header, flipped, t)


@given(secrets_, secrets_, bodies, stamps)
def test_another_secret_is_rejected(a: str, b: str, body: bytes, t: int) -> None:
    if a != b:
        assert not verify_signature(b, sign(a, body, t), body, t)


@given(secrets_, bodies, stamps, st.floats(min_value=300.001, max_value=1e9))
def test_replays_outside_the_window_are_rejected(
    secret: str, body: bytes, t: int, late: float
) -> None:
    header = sign(secret, body, t)
    assert not verify_signature(secret, header, body, t + late)  # replayed later
    assert not verify_signature(secret, header, body, t - late)  # stamped in the future


@given(secrets_, bodies, stamps, st.integers(min_value=-(10**6), max_value=10**6))
def test_a_moved_timestamp_breaks_the_mac(secret: str, body: bytes, t: int, shift: int) -> None:
    """A replayer cannot refresh the timestamp: it is inside the MAC."""
    if shift and t + shift >= 0:
        forged = f"t={t + shift},v1={signature(secret, t, body)}"
        assert not verify_signature(secret, forged, body, t + shift)


@given(st.text(max_size=200), bodies)
def test_arbitrary_headers_never_raise(header: str, body: bytes) -> None:
    assert verify_signature("whsec_x", header, body, 1_800_000_000) in (True, False)


def test_header_shapes() -> None:
    body = b'{"type":"message.status"}'
    t = 1_800_000_000
    good = signature("s", t, body)
    wrong = signature("other", t, body)
    assert verify_signature("s", f"t={t},v1={good}", body, t)
    assert verify_signature("s", f" v0=abc , t={t} , v1={wrong}, v1={good}", body, t)
    assert verify_signature("s", f"t={t},v1={good},v2=future", body, t)
    for header in (
        "",
        f"v1={good}",  # no timestamp
        f"t={t}",  # no signature
        f"t={t},t={t},v1={good}",  # two timestamps
        f"t=-{t},v1={good}",
        f"t={t}.5,v1={good}",
        f"t={t},v1={good.upper()}",  # hex is lower case
        f"t={t},v1={good[:-1]}",
        f"t={t},v1={wrong}",
        f"t=١٨٠٠٠٠٠٠٠٠,v1={good}",  # Arabic-Indic digits are not a timestamp
    ):
        assert not verify_signature("s", header, body, t), header


def test_now_as_datetime_and_default_tolerance() -> None:
    t = 1_800_000_000
    header = sign("s", b"x", t)
    at = datetime.fromtimestamp(t + DEFAULT_TOLERANCE, UTC)
    assert verify_signature("s", header, b"x", at)
    assert not verify_signature("s", header, b"x", datetime.fromtimestamp(t + 301, UTC))
    with pytest.raises(ValueError):
        verify_signature("s", header, b"x", t, tolerance=0)
    with pytest.raises(ValueError):
        sign("s", b"x", -1)


def test_known_vector() -> None:
    """The documented construction, computed independently: HMAC-SHA256(secret, "<t>." + body)."""
    import hashlib
    import hmac

    body = b'{"id":"evt_1","type":"message.reply"}'
    expected = hmac.new(b"whsec_test", b"1800000000." + body, hashlib.sha256).hexdigest()
    assert sign("whsec_test", body, 1_800_000_000) == f"t=1800000000,v1={expected}"


def test_the_readme_snippet_agrees() -> None:
    """The verification code the README gives receivers accepts what we send."""
    import re
    import time
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Webhooks", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    scope: dict[str, object] = {}
    exec(code.group(1), scope)  # noqa: S102 (our own README)
    verify = scope["verify"]
    body = b'{"id":"evt_1","type":"message.status"}'
    now = int(time.time())
    assert verify("whsec_k", sign("whsec_k", body, now), body)  # type: ignore[operator]
    assert not verify("whsec_k", sign("whsec_k", body, now), body + b" ")  # type: ignore[operator]
    assert not verify("whsec_k", sign("whsec_k", body, now - 301), body)  # type: ignore[operator]
    assert not verify("whsec_x", sign("whsec_k", body, now), body)  # type: ignore[operator]
