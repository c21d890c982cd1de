"""The pure rules: URL shapes, refused addresses, event names, the retry schedule."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.webhooks.policy import (
    BASE_DELAY,
    MAX_ATTEMPTS,
    MAX_DELAY,
    InvalidWebhookUrl,
    UnknownEvent,
    check_events,
    check_url_shape,
    forbidden_address,
    nominal_delay,
    retry_delay,
)

REFUSED = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # shared address space (CGNAT)
    "0.0.0.0",  # noqa: S104
    "255.255.255.255",
    "224.0.0.1",
    "240.0.0.1",
    "198.18.0.1",  # benchmarking
    "192.0.2.1",  # documentation
    "::1",
    "::",
    "fe80::1",
    "fe80::1%2",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
]
ALLOWED = [
    "64:ff9b::808:808",
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "2a00:1450:4001::200e",
]


@pytest.mark.parametrize("address", REFUSED)
def test_refused_addresses(address: str) -> None:
    assert forbidden_address(address)


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses(address: str) -> None:
    assert not forbidden_address(address)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "x" * 501,
        "ftp://hooks.example.com/",
        "hooks.example.com/path",
        "https:///path",
        "https://user:pw@hooks.example.com/",
        "https://token@hooks.example.com/",
        "https://hooks.example.com/#frag",
        "https://hooks.example.com/#",
        "https://hooks example.com/",
        "https://hooks.example.com/\n",
        "https://hooks.example.com:0/",
        "https://hooks.example.com:99999/",
        "https://hooks.example.com:abc/",
        "javascript:alert(1)",
    ],
)
def test_bad_shapes(url: str) -> None:
    with pytest.raises(InvalidWebhookUrl):
        check_url_shape(url, https_only=False)


def test_https_only_in_production() -> None:
    with pytest.raises(InvalidWebhookUrl, match="https"):
        check_url_shape("http://hooks.example.com/x", https_only=True)
    assert check_url_shape("https://hooks.example.com/x?a=1", https_only=True).hostname == (
        "hooks.example.com"
    )
    assert check_url_shape("HTTP://Hooks.Example.com:8080/x", https_only=False).port == 8080


def test_events() -> None:
    assert check_events(["message.reply", "message.status", "message.reply"]) == [
        "message.reply",
        "message.status",
    ]
    assert check_events(["*"]) == ["*"]
    for bad in ([], ["message.sent"], ["message.status", "MESSAGE.REPLY"], ["webhook.test"]):
        with pytest.raises(UnknownEvent):
            check_events(bad)


def test_nominal_schedule_exhaustive() -> None:
    delays = [nominal_delay(n) for n in range(1, 61)]
    assert delays[0] == BASE_DELAY == timedelta(seconds=10)
    for n, d in enumerate(delays, start=1):
        assert d == timedelta(seconds=min(10 * 2 ** (n - 1), 6 * 3600))
    assert max(delays) == MAX_DELAY == timedelta(hours=6)
    # From the first attempt to the last: about a day.
    span = sum(delays[: MAX_ATTEMPTS - 1], timedelta())
    assert timedelta(hours=20) < span < timedelta(hours=26)
    with pytest.raises(ValueError):
        nominal_delay(0)


@given(st.integers(min_value=1, max_value=100), st.integers(min_value=0, max_value=2**32))
def test_jitter_stays_within_twenty_percent(failures: int, seed: int) -> None:
    nominal = nominal_delay(failures)
    d = retry_delay(failures, random.Random(seed))
    assert nominal * 0.8 <= d <= nominal * 1.2


def test_jitter_spreads_retries() -> None:
    rng = random.Random(7)
    assert len({retry_delay(3, rng) for _ in range(50)}) > 40
