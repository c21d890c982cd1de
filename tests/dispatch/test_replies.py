"""Replies: opt-out keywords, sender numbers, and where a reply lands (both databases)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from hongyan.channels.base import ChannelSpec, Inbound
from hongyan.contacts import suppression
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import (
    consent_records,
    inbound_messages,
    messages,
    suppressions,
    tenants,
    unrouted_inbound,
    webhook_deliveries,
    webhook_endpoints,
)
from hongyan.dispatch import outbox
from hongyan.dispatch.outbox import NewMessage
from hongyan.dispatch.replies import (
    OPT_OUT_KEYWORDS,
    apply_inbound,
    e164_of,
    is_opt_out,
    normalise_reply,
)
from hongyan.dispatch.states import Lane
from hongyan.runtime import Runtime
from hongyan.tenants.service import create_tenant, set_sms_ext
from tests.content.support import approved_version

PROMO = "【鸿雁茶饮】周末第二杯半价，今晚21点前有效，回T退订"

ME = "+8613812345678"
OTHER = "+8613987654321"
ISSUE_KEYWORDS = ("T", "TD", "R", "退订", "拒收", "取消", "STOP", "UNSUBSCRIBE")


def full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


# -- opt-out keywords (pure) ----------------------------------------------------------------------


def test_the_issue_keywords_are_all_opt_outs() -> None:
    assert set(ISSUE_KEYWORDS) <= OPT_OUT_KEYWORDS
    for word in OPT_OUT_KEYWORDS:
        assert normalise_reply(word) == word  # stored in normal form, or it could never match


@pytest.mark.parametrize("word", ISSUE_KEYWORDS)
def test_every_issue_keyword_in_every_form(word: str) -> None:
    forms = {
        word,
        word.lower(),
        word.capitalize(),
        full_width(word),
        full_width(word.lower()),
        f" {word} ",
        f"\t{word}\n",
        f"{word}。",
        f"{word}!",
        f"{word.lower()}！！",
        f"【{word}】",
        f"「{word}」",
        f"“{word}”",
        f"（{word}）",
        f"  {full_width(word)}。 ",
        f"{word}\u200b",  # a zero-width space pasted along
        f"{word}～",
        f"{word}...",
        f"{word}👍",
    }
    for text in forms:
        assert is_opt_out(text), repr(text)


@pytest.mark.parametrize(
    "text",
    [
        " TD。",
        "【退订】",
        "Stop!",
        "ＴＤ",
        "ｓｔｏｐ",
        "ｔｄ",
        "unsubscribe",
        "UnSubScribe.",
        "t d",  # spaces inside are dropped too
        "退订！",
        "『拒收』",
        "R ",
    ],
)
def test_opt_out_examples(text: str) -> None:
    assert is_opt_out(text)


@pytest.mark.parametrize(
    "text",
    [
        "我不想退订",
        "TDX",
        "请问几点关门？",
        "T恤还有吗",
        "",
        "   ",
        "。。。",
        "好的",
        "STOPPED",
        "don't stop",
        "退订了吗",
        "T1",
        "TD 退订 谢谢",
        "RT",
        "1",
    ],
)
def test_not_opt_outs(text: str) -> None:
    assert not is_opt_out(text)


def test_normalise_reply_examples() -> None:
    assert normalise_reply(" ｔｄ。") == "TD"
    assert normalise_reply("【退订】") == "退订"
    assert normalise_reply("Stop!") == "STOP"
    assert normalise_reply("T 恤 还有吗？") == "T恤还有吗"
    assert normalise_reply("") == ""


decoration = st.text(
    alphabet=" \t\n。，！？!?.,;:…、【】「」()（）“”\"'~～-_*#·\u3000\u200b", max_size=4
)


@given(
    st.sampled_from(sorted(OPT_OUT_KEYWORDS)), decoration, decoration, st.booleans(), st.booleans()
)
def test_keywords_survive_any_decoration(
    word: str, before: str, after: str, lower: bool, wide: bool
) -> None:
    text = word.lower() if lower else word
    text = full_width(text) if wide else text
    assert is_opt_out(before + text + after)


@given(st.text(max_size=30))
def test_normalise_reply_is_idempotent_and_bare(text: str) -> None:
    once = normalise_reply(text)
    assert normalise_reply(once) == once
    assert not any(ch.isspace() for ch in once)
    assert is_opt_out(text) == (once in OPT_OUT_KEYWORDS)


@given(st.sampled_from(sorted(OPT_OUT_KEYWORDS)), st.text(alphabet="ABCXYZ恤吗我0123", min_size=1))
def test_a_keyword_with_more_words_is_not_an_opt_out(word: str, more: str) -> None:
    text = word + more
    assert is_opt_out(text) == (normalise_reply(text) in OPT_OUT_KEYWORDS)
    if normalise_reply(text) not in OPT_OUT_KEYWORDS:
        assert not is_opt_out(text)


# -- sender numbers (pure) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "13812345678",
        "8613812345678",
        "+8613812345678",
        "008613812345678",
        " +86 138 1234 5678 ",
        "+86-138-1234-5678",
        "+86 (138) 1234.5678",
        "１３８１２３４５６７８",
        "＋８６１３８１２３４５６７８",
        "００８６１３８１２３４５６７８",
    ],
)
def test_e164_of_chinese_forms(source: str) -> None:
    assert e164_of(source) == ME


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("+447700900123", "+447700900123"),
        ("00447700900123", "+447700900123"),
        ("447700900123", "+447700900123"),
        ("+14155550100", "+14155550100"),
        ("+123456789012345", "+123456789012345"),  # 15 digits: the E.164 maximum
        ("00123456789012345", "+123456789012345"),
    ],
)
def test_e164_of_foreign_forms(source: str, expected: str) -> None:
    assert e164_of(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        "",
        "   ",
        "+",
        "00",
        "abc",
        "TD",
        "10086",  # a short code is not a subscriber
        "+1234567890123456",  # 16 digits
        "1234567890123456",
        "+0123456789",
        "0013812",
        "138abc12345678",
        "+86138123456789\n+1",
        "一三八一二三四五六七八",
        "+8613812345678x",
    ],
)
def test_e164_of_garbage_is_none(source: str) -> None:
    assert e164_of(source) is None


@given(st.text(max_size=25))
def test_e164_of_gives_e164_or_none(source: str) -> None:
    got = e164_of(source)
    if got is not None:
        assert got.startswith("+") and got[1:].isascii() and got[1:].isdigit()
        assert 8 <= len(got) <= 16 and got[1] != "0"


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_e164_of_every_form_of_a_mobile_agrees(national: str) -> None:
    want = "+86" + national
    for form in (national, "86" + national, "+86" + national, "0086" + national):
        assert e164_of(form) == want
        assert e164_of(full_width(form)) == want


# -- apply_inbound (both databases) ---------------------------------------------------------------

SPEC = ChannelSpec(name="sb", kind="smpp", config={"source_addr": "10690"})


def tenant(runtime: Runtime, slug: str, ext: str | None = None) -> int:
    with runtime.engine.begin() as conn:
        tid = create_tenant(conn, runtime.clock, slug=slug, name=slug).id
        if ext is not None:
            set_sms_ext(conn, tid, ext)
    return tid


def sent(runtime: Runtime, tenant_id: int, to: str, *, at_offset: timedelta | None = None) -> int:
    """A message the tenant sent to ``to``, submitted ``at_offset`` from now (default now)."""
    with runtime.engine.begin() as conn:
        mid, _ = outbox.enqueue(
            conn,
            runtime.clock,
            runtime.keyring,
            tenant_id,
            NewMessage(to, "【茶】您好"),
            max_parts=6,
        )
        conn.execute(
            TenantScope(tenant_id)
            .update(messages)
            .where(messages.c.id == mid)
            .values(
                state="submitted", submitted_at=runtime.clock.now() + (at_offset or timedelta())
            )
        )
    return mid


def reply(runtime: Runtime, source: str, text: str, dest: str = "10690") -> dict[str, Any]:
    with runtime.engine.begin() as conn:
        [result] = apply_inbound(
            conn, runtime.clock, runtime.keyring, SPEC, [Inbound(source, dest, text)]
        )
    return result


def rows(runtime: Runtime, table: sa.Table, tenant_id: int | None = None) -> list[Any]:
    with runtime.engine.connect() as conn:
        if tenant_id is None:
            stmt = unscoped(sa.select(table).order_by(table.c.id), "test")
        else:
            stmt = TenantScope(tenant_id).select(table).order_by(table.c.id)
        return list(conn.execute(stmt))


def endpoint(runtime: Runtime, tenant_id: int, events: list[str], *, active: bool = True) -> int:
    with runtime.engine.begin() as conn:
        result = conn.execute(
            TenantScope(tenant_id).insert(webhook_endpoints),
            {
                "url": "http://127.0.0.1:9/hook",
                "secret_cipher": runtime.keyring.encrypt("whsec", f"tenant:{tenant_id}:webhook"),
                "events": events,
                "active": active,
                "created_at": runtime.clock.now(),
            },
        )
        assert result.inserted_primary_key is not None
        return int(result.inserted_primary_key[0])


def test_attribution_by_extension_code(runtime: Runtime) -> None:
    a = tenant(runtime, "tea", "01")
    b = tenant(runtime, "noodle", "02")
    a_msg = sent(runtime, a, ME)
    # Addressed to B's code: B's, even though only A ever messaged the number.
    got = reply(runtime, ME, "你好", dest="1069002")
    assert (got["tenant_id"], got["kind"]) == (b, "reply")
    [row] = rows(runtime, inbound_messages, b)
    assert row.message_id is None  # B never sent to this number
    assert (row.destination, row.text, row.channel, row.phone_masked) == (
        "1069002",
        "你好",
        "sb",
        "138****5678",
    )
    assert runtime.keyring.decrypt(row.phone_cipher, f"tenant:{b}:phone") == ME
    # A sub-code after the extension (106900155: A's 01 and then 55) is still A's, and the
    # reply is linked to A's last message to the number.
    got = reply(runtime, ME, "收到", dest="+106900155")
    assert got["tenant_id"] == a
    assert rows(runtime, inbound_messages, a)[0].message_id == a_msg


def test_attribution_by_the_last_message_when_the_extension_is_unknown(runtime: Runtime) -> None:
    a = tenant(runtime, "tea", "01")
    b = tenant(runtime, "noodle", "02")
    a_msg = sent(runtime, a, ME)
    for dest in ("10690", "1069099", "95555", ""):  # no code, an unknown code, another sender
        got = reply(runtime, ME, "几点开门", dest=dest)
        assert got["tenant_id"] == a, dest
    assert {r.message_id for r in rows(runtime, inbound_messages, a)} == {a_msg}
    assert rows(runtime, inbound_messages, b) == []
    # The sender's number in any carrier form finds the same message.
    assert reply(runtime, "8613812345678", "好")["tenant_id"] == a
    assert reply(runtime, "１３８１２３４５６７８", "好")["tenant_id"] == a


def test_the_latest_submitted_message_wins_between_two_tenants(runtime: Runtime) -> None:
    a = tenant(runtime, "tea")
    b = tenant(runtime, "noodle")
    # A's message was planned first (lower id) but submitted last: A's is the latest.
    a_msg = sent(runtime, a, ME, at_offset=timedelta(minutes=5))
    b_msg = sent(runtime, b, ME, at_offset=timedelta(minutes=1))
    assert a_msg < b_msg
    assert reply(runtime, ME, "是谁")["tenant_id"] == a
    runtime.clock.advance(timedelta(hours=1))
    b_again = sent(runtime, b, ME)
    got = reply(runtime, ME, "又是谁")
    assert got["tenant_id"] == b
    assert rows(runtime, inbound_messages, b)[-1].message_id == b_again
    # A message planned but never submitted does not count.
    with runtime.engine.begin() as conn:
        outbox.enqueue(conn, runtime.clock, runtime.keyring, a, NewMessage(ME, "x"), max_parts=6)
    assert reply(runtime, ME, "再问")["tenant_id"] == b
    # Another number's messages do not count either.
    sent(runtime, a, OTHER, at_offset=timedelta(hours=2))
    assert reply(runtime, ME, "还是")["tenant_id"] == b


def test_the_latest_submitted_wins_across_many_tenants(runtime: Runtime) -> None:
    """Tenants are looked up 500 at a time; the newest submit wins across those chunks too."""
    first = tenant(runtime, "first")
    with runtime.engine.begin() as conn:
        conn.execute(
            sa.insert(tenants),
            [
                {
                    "slug": f"t{i:04d}",
                    "name": f"t{i}",
                    "timezone": "UTC",
                    "created_at": runtime.clock.now(),
                }
                for i in range(520)
            ],
        )
        last = int(conn.execute(sa.select(sa.func.max(tenants.c.id))).scalar_one())
    early_planned = sent(runtime, first, ME, at_offset=timedelta(minutes=10))
    later_planned = sent(runtime, last, ME, at_offset=timedelta(minutes=1))
    assert early_planned < later_planned
    got = reply(runtime, ME, "谁发的")
    assert got["tenant_id"] == first
    assert rows(runtime, inbound_messages, first)[0].message_id == early_planned


def test_unrouted_replies_are_kept_with_the_number_encrypted(runtime: Runtime) -> None:
    a = tenant(runtime, "tea", "01")
    sent(runtime, a, OTHER)
    assert reply(runtime, ME, "你们是谁", dest="1069077") == {"tenant_id": None, "kind": "unrouted"}
    # A sender that is not a number cannot be attributed even to a known extension.
    assert reply(runtime, "not-a-number", "TD", dest="1069001")["kind"] == "unrouted"
    first, second = rows(runtime, unrouted_inbound)
    assert (first.channel, first.destination, first.text, first.phone_masked) == (
        "sb",
        "1069077",
        "你们是谁",
        "138****5678",
    )
    assert ME.encode() not in bytes(first.phone_cipher)
    assert b"13812345678" not in bytes(first.phone_cipher)
    assert runtime.keyring.decrypt(first.phone_cipher, "platform:phone") == ME
    assert runtime.keyring.decrypt(second.phone_cipher, "platform:phone") == "not-a-number"
    # Nothing reached any tenant: no inbox row, no suppression.
    assert rows(runtime, inbound_messages, a) == []
    assert rows(runtime, suppressions, a) == []


def test_an_opt_out_suppresses_revokes_and_notifies_subscribers(runtime: Runtime) -> None:
    a = tenant(runtime, "tea", "01")
    b = tenant(runtime, "noodle", "02")
    msg = sent(runtime, a, ME)
    wants_opt_out = endpoint(runtime, a, ["message.opt_out"])
    wants_status = endpoint(runtime, a, ["message.status"])
    wants_all = endpoint(runtime, a, ["*"])
    endpoint(runtime, a, ["*"], active=False)
    b_all = endpoint(runtime, b, ["*"])

    got = reply(runtime, "８６１３８１２３４５６７８", " ＴＤ。", dest="1069001")
    assert (got["tenant_id"], got["kind"]) == (a, "opt_out")
    [inbox] = rows(runtime, inbound_messages, a)
    assert (inbox.kind, inbox.text, inbox.message_id) == ("opt_out", "ＴＤ。", msg)
    [sup] = rows(runtime, suppressions, a)
    assert (sup.reason, sup.scope, sup.source, sup.expires_at) == (
        "opt_out",
        "marketing",
        "reply",
        None,
    )
    with runtime.engine.connect() as conn:
        now = runtime.clock.now()
        assert suppression.is_suppressed(conn, runtime.keyring, a, ME, Lane.MARKETING, now) == (
            "opt_out"
        )
        assert (
            suppression.is_suppressed(conn, runtime.keyring, a, ME, Lane.NOTIFICATION, now) is None
        )
        assert suppression.is_suppressed(conn, runtime.keyring, b, ME, Lane.MARKETING, now) is None
        consent = suppression.current_consent(conn, runtime.keyring, a, ME, "marketing")
        assert consent is not None
        assert (consent["action"], consent["source"], consent["actor"]) == (
            "revoked",
            "reply",
            "recipient",
        )
        assert "1069001" in consent["proof"] and "sb" in consent["proof"]
    # The next marketing message to the number is refused at enqueue.
    promo = approved_version(runtime, a, PROMO)
    with pytest.raises(outbox.Suppressed), runtime.engine.begin() as conn:
        outbox.enqueue(
            conn,
            runtime.clock,
            runtime.keyring,
            a,
            NewMessage(ME, PROMO, lane=Lane.MARKETING, template_version_id=promo),
            max_parts=6,
        )
    deliveries = rows(runtime, webhook_deliveries, a)
    by_endpoint: dict[int, list[str]] = {}
    for d in deliveries:
        by_endpoint.setdefault(d.endpoint_id, []).append(d.event)
    assert by_endpoint == {
        wants_opt_out: ["message.opt_out"],
        wants_all: ["message.reply", "message.opt_out"],
    }
    assert wants_status not in by_endpoint
    assert rows(runtime, webhook_deliveries, b) == []
    assert b_all  # B's endpoint exists but B had no event
    payload = next(d.payload for d in deliveries if d.endpoint_id == wants_opt_out)
    assert payload["type"] == "message.opt_out"
    assert payload["reply"]["from"] is None  # not at rest: the webhook worker restores it
    assert payload["reply"]["from_masked"] == "138****5678"
    assert payload["reply"]["message_id"] == msg
    assert payload["reply"]["kind"] == "opt_out"
    assert all(d.state == "pending" and d.attempts == 0 for d in deliveries)


def test_a_repeated_td_adds_inbox_and_ledger_rows_but_no_second_suppression(
    runtime: Runtime,
) -> None:
    a = tenant(runtime, "tea")
    sent(runtime, a, ME)
    endpoint(runtime, a, ["message.reply"])
    for text in ("TD", "退订", "td"):
        runtime.clock.advance(timedelta(minutes=1))
        assert reply(runtime, ME, text)["kind"] == "opt_out"
    assert len(rows(runtime, suppressions, a)) == 1
    assert [r.kind for r in rows(runtime, inbound_messages, a)] == ["opt_out"] * 3
    ledger = rows(runtime, consent_records, a)
    assert [r.action for r in ledger] == ["revoked"] * 3
    assert len({r.at for r in ledger}) == 3  # append-only: each reply its own record
    # Subscribed to replies only: one delivery per reply, none for the opt-out events.
    assert [d.event for d in rows(runtime, webhook_deliveries, a)] == ["message.reply"] * 3


def test_a_plain_reply_lands_in_the_inbox_only(runtime: Runtime) -> None:
    a = tenant(runtime, "tea")
    sent(runtime, a, ME)
    endpoint(runtime, a, ["message.opt_out"])
    long_text = "  请问几点关门？" + "好" * 1200
    got = reply(runtime, ME, long_text)
    assert got["kind"] == "reply"
    [inbox] = rows(runtime, inbound_messages, a)
    assert inbox.text == long_text.strip()[:1000]
    assert rows(runtime, suppressions, a) == []
    assert rows(runtime, consent_records, a) == []
    assert rows(runtime, webhook_deliveries, a) == []  # not subscribed to plain replies


def test_a_batch_of_replies_in_one_call(runtime: Runtime) -> None:
    a = tenant(runtime, "tea", "01")
    b = tenant(runtime, "noodle", "02")
    sent(runtime, b, OTHER)
    items = [
        Inbound(ME, "1069001", "T"),
        Inbound(OTHER, "10690", "你好"),
        Inbound("+447700900123", "10690", "hello"),
        Inbound(OTHER, "1069002", "STOP"),
    ]
    with runtime.engine.begin() as conn:
        results = apply_inbound(conn, runtime.clock, runtime.keyring, SPEC, items)
    assert [(r["tenant_id"], r["kind"]) for r in results] == [
        (a, "opt_out"),
        (b, "reply"),
        (None, "unrouted"),
        (b, "opt_out"),
    ]
    assert [r.kind for r in rows(runtime, inbound_messages, b)] == ["reply", "opt_out"]
    assert len(rows(runtime, unrouted_inbound)) == 1


def test_a_channel_without_a_sender_number_attributes_by_last_message(runtime: Runtime) -> None:
    a = tenant(runtime, "tea", "01")
    b = tenant(runtime, "noodle", "02")
    sent(runtime, b, ME)
    bare = ChannelSpec(name="bare", kind="smpp")
    with runtime.engine.begin() as conn:
        [got] = apply_inbound(
            conn, runtime.clock, runtime.keyring, bare, [Inbound(ME, "1069001", "hi")]
        )
    assert got["tenant_id"] == b
    assert a != b
