"""Log lines never carry phone numbers or API secrets."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.logs import RedactingFilter, redact


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sent to +8613812345678 ok", "sent to 138****5678 ok"),
        ("sent to 13812345678", "sent to 138****5678"),
        ("number 138-1234-5678.", "number 138****5678."),
        ("key hy_0123456789ab_SECRETsecret-xyz used", "key hy_0123456789ab_… used"),
        ("Authorization: Bearer abc.def", "Authorization: Bearer …"),
        ("status 200 in 12 ms, id 4521", "status 200 in 12 ms, id 4521"),
        ("at 2026-11-23 02:00:00", "at 2026-11-23 02:00:00"),
    ],
)
def test_redact(raw: str, expected: str) -> None:
    assert redact(raw) == expected


@given(st.integers(min_value=13000000000, max_value=19999999999), st.text(max_size=20))
def test_no_mobile_survives(number: int, noise: str) -> None:
    line = f"{noise} to {number} {noise}"
    assert str(number) not in redact(line)


def test_filter_rewrites_records(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("hongyan.test")
    log.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO):
        log.info("reply from %s", "+8619912345678")
    assert "19912345678" not in caplog.text and "199****5678" in caplog.text


def test_tracebacks_are_redacted() -> None:
    import io

    from hongyan.logs import RedactingFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(message)s"))
    log = logging.getLogger("hongyan.test.tb")
    log.addHandler(handler)
    try:
        raise ValueError("could not send to +8613812345678")
    except ValueError:
        log.exception("send failed")
    log.removeHandler(handler)
    assert "ValueError" in stream.getvalue() and "13812345678" not in stream.getvalue()
