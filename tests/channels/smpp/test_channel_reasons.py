"""How the SMPP channel reads receipts and refused submits (pure), as exhaustive tables."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.channels.base import ChannelSpec, Report
from hongyan.channels.smpp import pdu as P
from hongyan.channels.smpp.channel import (
    DEFAULT_BLOCKED_ERRS,
    DEFAULT_INVALID_ERRS,
    SmppChannel,
    reason_from_receipt,
    submit_error,
)
from hongyan.channels.smpp.client import SmppError, Throttled
from hongyan.dispatch.states import TRANSIENT, Reason

INVALID = ("001", "013")
BLOCKED = ("045",)
# err: a 空号 code, a blocked code, a code in both lists, a code in neither.
ERR_KINDS = {"invalid": "001", "blocked": "045", "neither": "000", "other": "999"}

# stat → (err kind → reason); the receipt's stat outranks the err only for DELIVRD and EXPIRED.
RECEIPT_TABLE: dict[str, dict[str, Reason | None]] = {
    "DELIVRD": dict.fromkeys(ERR_KINDS, None),
    "EXPIRED": dict.fromkeys(ERR_KINDS, Reason.EXPIRED),
    "UNDELIV": {
        "invalid": Reason.INVALID_NUMBER,
        "blocked": Reason.BLOCKED,
        "neither": Reason.CARRIER_ERROR,
        "other": Reason.CARRIER_ERROR,
    },
    "REJECTD": {
        "invalid": Reason.INVALID_NUMBER,
        "blocked": Reason.BLOCKED,
        "neither": Reason.REJECTED,
        "other": Reason.REJECTED,
    },
    "UNKNOWN": {
        "invalid": Reason.INVALID_NUMBER,
        "blocked": Reason.BLOCKED,
        "neither": Reason.UNKNOWN,
        "other": Reason.UNKNOWN,
    },
    "DELETED": {
        "invalid": Reason.INVALID_NUMBER,
        "blocked": Reason.BLOCKED,
        "neither": Reason.CARRIER_ERROR,
        "other": Reason.CARRIER_ERROR,
    },
    "ACCEPTD": {
        "invalid": Reason.INVALID_NUMBER,
        "blocked": Reason.BLOCKED,
        "neither": Reason.CARRIER_ERROR,
        "other": Reason.CARRIER_ERROR,
    },
    "GARBAGE": {
        "invalid": Reason.INVALID_NUMBER,
        "blocked": Reason.BLOCKED,
        "neither": Reason.CARRIER_ERROR,
        "other": Reason.CARRIER_ERROR,
    },
}


@pytest.mark.parametrize(("stat", "err_kind"), list(itertools.product(RECEIPT_TABLE, ERR_KINDS)))
def test_receipt_table(stat: str, err_kind: str) -> None:
    want = RECEIPT_TABLE[stat][err_kind]
    err = ERR_KINDS[err_kind]
    for variant in (stat, stat.lower(), stat.capitalize()):
        assert reason_from_receipt(variant, err, INVALID, BLOCKED) == want, variant
    # The lists may come as any iterable (a generator is read once).
    assert reason_from_receipt(stat, err, iter(INVALID), iter(BLOCKED)) == want


@pytest.mark.parametrize("stat", sorted(set(RECEIPT_TABLE) - {"DELIVRD", "EXPIRED"}))
def test_a_code_in_both_lists_counts_as_invalid(stat: str) -> None:
    assert reason_from_receipt(stat, "013", INVALID, ("013",)) is Reason.INVALID_NUMBER


@pytest.mark.parametrize("stat", list(RECEIPT_TABLE))
def test_the_default_lists(stat: str) -> None:
    assert DEFAULT_INVALID_ERRS == ("001",) and DEFAULT_BLOCKED_ERRS == ()
    got = reason_from_receipt(stat, "001", DEFAULT_INVALID_ERRS)
    want = RECEIPT_TABLE[stat]["invalid"]
    assert got == want
    # Without blocked codes, nothing is ever read as blocked.
    assert reason_from_receipt(stat, "045", DEFAULT_INVALID_ERRS) != Reason.BLOCKED


def test_err_codes_compare_as_written() -> None:
    """Carriers' codes are kept as text: 1 and 001 are different codes unless configured."""
    assert reason_from_receipt("UNDELIV", "1", ("001",)) is Reason.CARRIER_ERROR
    assert reason_from_receipt("UNDELIV", "1", ("001", "1")) is Reason.INVALID_NUMBER
    assert reason_from_receipt("UNDELIV", "", ("001",)) is Reason.CARRIER_ERROR


@given(st.text(max_size=10), st.text(max_size=5))
def test_a_receipt_always_has_a_reason_unless_delivered(stat: str, err: str) -> None:
    got = reason_from_receipt(stat, err, INVALID, BLOCKED)
    if stat.upper() == "DELIVRD":
        assert got is None
    else:
        assert isinstance(got, Reason)


def test_the_channel_reads_its_lists_from_the_config() -> None:
    plain = SmppChannel(ChannelSpec(name="a", kind="smpp"))
    assert (plain.invalid_errs, plain.blocked_errs) == (DEFAULT_INVALID_ERRS, DEFAULT_BLOCKED_ERRS)
    tuned = SmppChannel(
        ChannelSpec(
            name="b",
            kind="smpp",
            config={"invalid_errs": ["601", 602], "blocked_errs": [45], "source_addr": "10690"},
        )
    )
    assert tuned.invalid_errs == ("601", "602")  # numbers in JSON config become codes
    assert tuned.blocked_errs == ("45",)
    assert tuned.source_addr == "10690"


# -- refused submits ------------------------------------------------------------------------------

THROTTLING = {P.CommandStatus.ESME_RTHROTTLED, P.CommandStatus.ESME_RMSGQFUL}


def expected_submit(status: int) -> tuple[Reason, bool]:
    if status in THROTTLING:
        return Reason.THROTTLED, True
    if status == P.CommandStatus.ESME_RSYSERR:  # also: no answer in time, connection lost
        return Reason.CARRIER_ERROR, True
    if status == P.CommandStatus.ESME_RINVDSTADR:
        return Reason.INVALID_NUMBER, False
    return Reason.REJECTED, False


STATUSES = [int(s) for s in P.CommandStatus if s != P.CommandStatus.ESME_ROK]
VENDOR = [0x400, 0x401, 0x4FF, 0x10000, 0xFFFFFFFF]


@pytest.mark.parametrize("status", STATUSES + VENDOR, ids=hex)
def test_submit_error_table(status: int) -> None:
    reason, transient = expected_submit(status)
    for cls in (SmppError, Throttled):
        err = submit_error(cls(f"submit_sm refused: 0x{status:08x}", status, ["a1", "b2"]))
        assert (err.reason, err.transient) == (reason, transient)
        assert err.code == f"0x{status:08x}"
        assert str(err) == f"submit_sm refused: 0x{status:08x}"
        assert err.accepted == ["a1", "b2"]
    # A transient refusal is exactly one the dispatcher retries.
    assert transient == (reason in TRANSIENT)


def test_submit_error_worked_examples() -> None:
    throttled = submit_error(Throttled("slow down", P.CommandStatus.ESME_RTHROTTLED))
    assert (throttled.reason, throttled.transient, throttled.code) == (
        Reason.THROTTLED,
        True,
        "0x00000058",
    )
    assert throttled.accepted == []
    lost = submit_error(SmppError("connection closed", P.CommandStatus.ESME_RSYSERR, ["p1"]))
    assert (lost.reason, lost.transient, lost.accepted) == (Reason.CARRIER_ERROR, True, ["p1"])
    bad = submit_error(SmppError("no", P.CommandStatus.ESME_RINVDSTADR))
    assert (bad.reason, bad.transient) == (Reason.INVALID_NUMBER, False)
    content = submit_error(SmppError("no", 0x0000045))
    assert (content.reason, content.transient, content.code) == (
        Reason.REJECTED,
        False,
        "0x00000045",
    )


def test_the_accepted_parts_are_a_copy() -> None:
    exc = SmppError("queue full", P.CommandStatus.ESME_RMSGQFUL, ["x"])
    err = submit_error(exc)
    exc.accepted.append("y")
    assert err.accepted == ["x"]


def test_intermediate_receipts_are_not_handed_over() -> None:
    got: list[Report] = []

    async def sink(report: Report) -> None:
        got.append(report)

    async def scenario() -> None:
        channel = SmppChannel(ChannelSpec(name="c", kind="smpp"))
        channel._on_report = sink
        # Nothing handed over and nothing to wait for: acknowledged as they are.
        assert channel._report(Report("1a", "ENROUTE", "000", None, "id:1a stat:ENROUTE")) is None
        assert (
            channel._report(Report("1b", "UNKNOWN", "000", int(P.MessageState.ENROUTE), "")) is None
        )
        stored = channel._report(Report("1c", "UNDELIV", "001", None, "id:1c stat:UNDELIV err:001"))
        assert stored is not None
        await stored

    asyncio.run(scenario())
    assert [(r.message_id, r.reason) for r in got] == [("1c", Reason.INVALID_NUMBER)]
