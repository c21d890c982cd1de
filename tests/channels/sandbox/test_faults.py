"""The sandbox's fault modes, simulated replies and record file, seen from the ESME side.

Every test runs the sandbox SMSC and the platform's own SmppChannel (or SmppClient) against each
other over real loopback sockets and asserts what the platform experiences.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hongyan.channels.base import ChannelSpec, Inbound, Outgoing, Report, SubmitError
from hongyan.channels.sandbox.smsc import (
    DEFAULT_REPLY_TEXTS,
    SandboxConfig,
    SandboxConfigError,
    SandboxSmsc,
    read_record,
    reassemble_record,
)
from hongyan.channels.smpp import pdu as P
from hongyan.channels.smpp.channel import SmppChannel
from hongyan.channels.smpp.client import SmppClient, SmppConfig, SmppError
from hongyan.dispatch.states import Lane, Reason

SYSTEM_ID, PASSWORD = "hongyan", "pw-sbx"
TO = "+8613812345678"
SENDER = "10690"
LONG_TEXT = "【鸿雁茶饮】" + "春季新品上市，会员专享八折优惠，欢迎到店品尝。" * 3  # two UCS-2 parts


class Harness:
    """A sandbox SMSC and an SmppChannel bound to it, with what the channel handed up."""

    def __init__(self, smsc: SandboxSmsc, channel: SmppChannel) -> None:
        self.smsc = smsc
        self.channel = channel
        self.reports: list[Report] = []
        self.inbound: list[Inbound] = []
        self.events: list[tuple[str, str]] = []  # ("report", carrier id) / ("inbound", source)

    async def on_report(self, report: Report) -> None:
        self.reports.append(report)
        self.events.append(("report", report.message_id))

    async def on_inbound(self, inbound: Inbound) -> None:
        self.inbound.append(inbound)
        self.events.append(("inbound", inbound.source))

    async def submit(self, n: int, text: str | None = None, to: str = TO) -> list[str]:
        return await self.channel.submit(
            Outgoing(message_id=n, to=to, text=text or f"msg {n}", lane=Lane.NOTIFICATION)
        )

    async def submit_until_accepted(self, n: int, text: str | None = None) -> tuple[list[str], int]:
        """What a dispatcher does: retry transient refusals. (ids, transient failures)."""
        failures = 0
        while True:
            try:
                return await self.submit(n, text), failures
            except SubmitError as exc:
                assert exc.transient, exc
                failures += 1
                assert failures < 20, "never accepted"
                assert await self.channel.wait_ready(5)


async def until(cond: Callable[[], bool], seconds: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not cond():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def run(
    scenario: Callable[[Harness], Awaitable[None]],
    *,
    binds: int = 2,
    window: int = 10,
    channel_config: dict[str, Any] | None = None,
    **sandbox: Any,
) -> SandboxSmsc:
    """Start a sandbox and a channel to it (all binds up), run the scenario, stop both."""
    sandbox.setdefault("credentials", {SYSTEM_ID: PASSWORD})
    smsc = SandboxSmsc(SandboxConfig(**sandbox))

    async def main() -> None:
        host, port = await smsc.start()
        spec = ChannelSpec(
            name="sandbox",
            kind="smpp",
            config={
                "host": host,
                "port": port,
                "system_id": SYSTEM_ID,
                "source_addr": SENDER,
                **(channel_config or {}),
            },
            secrets={"password": PASSWORD},
            binds=binds,
            window=window,
        )
        harness = Harness(smsc, SmppChannel(spec))
        try:
            await harness.channel.start(harness.on_report, harness.on_inbound)
            assert await harness.channel.wait_ready(5)
            await until(lambda: smsc.bound(SYSTEM_ID) == binds)
            await asyncio.wait_for(scenario(harness), 30)
        finally:
            await asyncio.wait_for(harness.channel.stop(), 10)
            await asyncio.wait_for(smsc.stop(), 5)

    asyncio.run(main())
    return smsc


# --------------------------------------------------------------------------- drop_every


def test_drop_fails_in_flight_submits_as_transient_and_the_channel_rebinds() -> None:
    ids: dict[int, list[str]] = {}
    failures: list[SubmitError] = []

    async def scenario(h: Harness) -> None:
        pending = set(range(40))
        for _ in range(20):
            if not pending:
                break
            batch = sorted(pending)
            results = await asyncio.gather(*(h.submit(n) for n in batch), return_exceptions=True)
            for n, result in zip(batch, results, strict=True):
                if isinstance(result, SubmitError):
                    failures.append(result)
                elif isinstance(result, BaseException):
                    raise result
                else:
                    ids[n] = result
                    pending.discard(n)
            assert await h.channel.wait_ready(5)  # rebound by itself
        assert not pending
        # receipts keep coming on the new binds
        await until(lambda: len(h.reports) >= len(ids))

    smsc = run(scenario, drop_every=7)
    assert failures, "a drop every 7 PDUs must catch submits in flight"
    for exc in failures:
        assert exc.transient
        assert exc.reason is Reason.CARRIER_ERROR
        assert exc.code == f"0x{P.CommandStatus.ESME_RSYSERR:08x}"
    drops = [f for f in smsc.faults if f.kind == "drop"]
    assert drops
    assert max(s.bind for s in smsc.submits) > 2  # the sandbox saw rebinds
    # The platform's view within the carrier's: every id the channel returned was issued...
    carrier_ids = {s.message_id for s in smsc.submits}
    assert {i for got in ids.values() for i in got} <= carrier_ids
    # ...each message reached the carrier, and the carrier's extra copies are bounded by the
    # attempts that failed with the connection (the documented send-twice set).
    texts = [s.payload.decode("ascii") for s in smsc.submits]
    assert set(texts) == {f"msg {n}" for n in range(40)}
    assert len(texts) - 40 <= len(failures)


# --------------------------------------------------------------------------- late answers


def test_late_answers_resolve_out_of_order_within_the_window() -> None:
    done: list[int] = []
    ids: dict[int, list[str]] = {}

    async def scenario(h: Harness) -> None:
        async def one(n: int) -> None:
            ids[n] = await h.submit(n)
            done.append(n)

        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(one(n) for n in range(20)))
        assert loop.time() - started >= 0.3  # some answers really were late

    smsc = run(scenario, binds=1, window=10, late_rate=0.5, late_delay=0.3)
    late = [f for f in smsc.faults if f.kind == "late"]
    assert 0 < len(late) < 20
    assert sorted(done) == list(range(20))
    assert done != list(range(20))  # answers came out of order and were matched anyway
    by_text = {s.payload.decode(): s.message_id for s in smsc.submits}
    assert {n: got for n, got in ids.items()} == {n: [by_text[f"msg {n}"]] for n in range(20)}
    # a late answer was overtaken by the answer to a submit sent after it
    late_ids = {f.message_id for f in late}
    late_ns = {n for n, got in ids.items() if got[0] in late_ids}
    assert any(done.index(m) < done.index(n) for n in late_ns for m in range(n + 1, 20))


def test_an_answer_later_than_the_response_timeout_is_a_transient_failure() -> None:
    async def scenario(h: Harness) -> None:
        with pytest.raises(SubmitError) as err:
            await h.submit(1)
        assert err.value.transient
        assert err.value.reason is Reason.CARRIER_ERROR
        assert "no response in time" in str(err.value)
        # the carrier took it (the send-twice case); its late answer, once it comes, is
        # ignored and the bind stays up
        assert len(h.smsc.submits) == 1
        await asyncio.sleep(0.6)
        assert h.channel.ready and h.smsc.bound(SYSTEM_ID) == 1

    smsc = run(
        scenario,
        binds=1,
        late_rate=1.0,
        late_delay=0.5,
        channel_config={"response_timeout": 0.2},
    )
    assert [f.kind for f in smsc.faults] == ["late"]


# --------------------------------------------------------------------------- error answers


@pytest.mark.parametrize(
    ("status", "transient", "reason"),
    [
        (P.CommandStatus.ESME_RSYSERR, True, Reason.CARRIER_ERROR),
        (P.CommandStatus.ESME_RMSGQFUL, True, Reason.THROTTLED),
        (P.CommandStatus.ESME_RTHROTTLED, True, Reason.THROTTLED),
        (P.CommandStatus.ESME_RSUBMITFAIL, False, Reason.REJECTED),
        (P.CommandStatus.ESME_RINVDSTADR, False, Reason.INVALID_NUMBER),
    ],
)
def test_error_answers_raise_with_the_code_and_transient_flag(
    status: int, transient: bool, reason: Reason
) -> None:
    async def scenario(h: Harness) -> None:
        for n in range(3):
            with pytest.raises(SubmitError) as err:
                await h.submit(n)
            assert err.value.code == f"0x{status:08x}"
            assert err.value.transient is transient
            assert err.value.reason is reason
            assert err.value.accepted == []
        assert h.channel.ready  # an error answer is no reason to drop the bind

    smsc = run(scenario, error_rate=1.0, error_status=status)
    assert smsc.submits == []
    assert [(f.kind, f.status) for f in smsc.faults] == [("error", status)] * 3


def test_error_rate_refuses_that_fraction_deterministically() -> None:
    def outcome() -> tuple[list[bool], SandboxSmsc]:
        accepted: list[bool] = []

        async def scenario(h: Harness) -> None:
            for n in range(40):
                try:
                    await h.submit(n)
                    accepted.append(True)
                except SubmitError as exc:
                    assert exc.code == "0x00000045" and not exc.transient
                    accepted.append(False)

        smsc = run(scenario, binds=1, seed=11, error_rate=0.25, error_status=0x45)
        return accepted, smsc

    first, smsc = outcome()
    assert 0 < first.count(False) < 20
    assert len(smsc.submits) == first.count(True)  # refused submits are not recorded
    assert [s.payload.decode() for s in smsc.submits] == [
        f"msg {n}" for n, ok in enumerate(first) if ok
    ]
    assert outcome()[0] == first  # the same seed refuses the same submits


def test_a_long_message_refused_midway_reports_its_accepted_parts() -> None:
    async def scenario(h: Harness) -> None:
        results: list[str] = []
        for n in range(12):
            try:
                results.append(f"ok {len(await h.submit(n, LONG_TEXT))}")
            except SubmitError as exc:
                results.append(f"refused after {len(exc.accepted)}")
                carrier = {s.message_id for s in h.smsc.submits}
                assert set(exc.accepted) <= carrier
        assert "refused after 1" in results  # part one taken, part two refused

    run(scenario, binds=1, seed=3, error_rate=0.4, error_status=0x45)


# --------------------------------------------------------------------------- malformed PDUs


@pytest.mark.parametrize("kind", ["length", "body"])
def test_malformed_pdu_closes_only_that_bind_and_the_other_keeps_sending(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hongyan.channels.smpp")

    async def scenario(h: Harness) -> None:
        for n in range(12):
            await h.submit_until_accepted(n)

    smsc = run(scenario, binds=2, malformed_every=3, malformed_kind=kind)
    malformed = [f for f in smsc.faults if f.kind == "malformed"]
    assert malformed
    assert any("malformed PDU from the carrier" in r.getMessage() for r in caplog.records)
    # Each message reached the carrier (copies only from submits caught by a closing bind).
    texts = {s.payload.decode() for s in smsc.submits}
    assert texts == {f"msg {n}" for n in range(12)}
    # The first bind to get a malformed PDU was closed by the channel and bound again, while
    # the other original bind went on sending on the same connection after it.
    first = malformed[0].bind
    other = ({1, 2} - {first}).pop()
    third = [i for i, s in enumerate(smsc.submits) if s.bind == first][2]
    assert any(s.bind == other for s in smsc.submits[third + 1 :])
    assert max(s.bind for s in smsc.submits) > 2


# --------------------------------------------------------------------------- replies


def test_simulated_recipients_reply_after_delivery() -> None:
    async def scenario(h: Harness) -> None:
        single = await h.submit(1, "【鸿雁茶饮】您的订单已发货", to="+8613800000001")
        parts = await h.submit(2, LONG_TEXT, to="+8613800000002")
        assert len(parts) == 2
        await until(lambda: len(h.inbound) == 2 and len(h.reports) == 3)
        by_source = {m.source: m for m in h.inbound}
        assert set(by_source) == {"+8613800000001", "+8613800000002"}
        for m in h.inbound:
            assert m.destination == SENDER
            assert m.text in DEFAULT_REPLY_TEXTS
        # each reply comes after the receipt of the part that completed its message
        order = [e for e in h.events]
        assert order.index(("report", single[0])) < order.index(("inbound", "+8613800000001"))
        last_part = h.smsc.replies[1].message_id
        assert last_part in parts
        assert order.index(("report", last_part)) < order.index(("inbound", "+8613800000002"))

    smsc = run(scenario, binds=2, reply_rate=1.0)
    assert [(r.source, r.destination) for r in smsc.replies] == [
        ("8613800000001", SENDER),
        ("8613800000002", SENDER),
    ]


def test_replies_are_seeded_and_only_follow_delivered_messages() -> None:
    def replies(seed: int) -> list[tuple[str, str]]:
        got: list[tuple[str, str]] = []

        async def scenario(h: Harness) -> None:
            for n in range(30):
                await h.submit(n, to=f"+86138000100{n:02d}")
            await until(lambda: len(h.inbound) == len(h.smsc.replies))
            await asyncio.sleep(0.1)  # nothing more arrives
            got.extend((m.source, m.text) for m in h.inbound)

        smsc = run(
            scenario,
            binds=1,
            seed=seed,
            reply_rate=0.5,
            reply_texts=("TD", "退订", "几点开门？"),
            delivered=3,
            undeliverable=1,
        )
        delivered = {
            s.message_id
            for s in smsc.submits
            if any(r.message_id == s.message_id and r.stat == "DELIVRD" for r in smsc.receipts)
        }
        assert {r.message_id for r in smsc.replies} <= delivered
        assert sorted(got) == sorted(("+" + r.source, r.text) for r in smsc.replies)
        return got

    first = replies(5)
    assert 3 <= len(first) <= 27
    assert {text for _, text in first} <= {"TD", "退订", "几点开门？"}
    assert sorted(replies(5)) == sorted(first)
    assert sorted(replies(6)) != sorted(first)


# --------------------------------------------------------------------------- record file


def test_record_file_matches_what_the_sandbox_received(tmp_path: Path) -> None:
    path = tmp_path / "carrier.jsonl"
    seen: dict[str, Any] = {}

    async def scenario(h: Harness) -> None:
        await h.submit(1, "Hello there")
        await h.submit(2, LONG_TEXT)
        await h.submit(3, "【鸿雁茶饮】到货提醒", to="+8613900000000")
        # replies from the two delivered messages; none from the 空号
        await until(lambda: len(h.reports) == 4 and len(h.inbound) == 2)
        await h.smsc.inject_mo(SYSTEM_ID, "8613812345678", SENDER, "TD")
        await until(lambda: len(h.inbound) == 3)
        # read while the sandbox is still running: every line is already on disk
        seen["rows"] = read_record(path)
        seen["reports"] = list(h.reports)
        seen["inbound"] = list(h.inbound)

    smsc = run(
        scenario,
        binds=2,
        record_path=path,
        reply_rate=1.0,
        reply_texts=("退订",),
        invalid_numbers={"8613900000000"},
    )
    rows: list[dict[str, Any]] = seen["rows"]
    submits = [r for r in rows if r["kind"] == "submit"]
    assert [
        (r["system_id"], r["bind"], r["source"], r["destination"], r["message_id"]) for r in submits
    ] == [(s.system_id, s.bind, s.source, s.destination, s.message_id) for s in smsc.submits]
    assert submits[0]["text"] == "Hello there"
    assert [r["concat"] for r in submits][1:3] == [
        {"ref": submits[1]["concat"]["ref"], "total": 2, "seq": seq, "bits": 8} for seq in (1, 2)
    ]
    assert reassemble_record(rows) == smsc.reassembled()
    assert [m.text for m in reassemble_record(rows)] == [
        "Hello there",
        LONG_TEXT,
        "【鸿雁茶饮】到货提醒",
    ]
    receipts = [r for r in rows if r["kind"] == "receipt"]
    assert sorted((r["message_id"], r["stat"], r["err"]) for r in receipts) == sorted(
        (rep.message_id, rep.stat, rep.err) for rep in seen["reports"]
    )
    replies = [r for r in rows if r["kind"] == "reply"]
    assert sorted((r["source"], r["text"], r["injected"]) for r in replies) == sorted(
        [
            ("8613812345678", "退订", False),
            ("8613812345678", "退订", False),
            ("8613812345678", "TD", True),
        ]
    )
    assert len(seen["inbound"]) == 3
    assert all(isinstance(r["time"], str) for r in rows)
    assert read_record(path) == rows  # stop() wrote nothing more


def test_record_captures_faults_and_appends_across_runs(tmp_path: Path) -> None:
    path = tmp_path / "carrier.jsonl"

    async def scenario(h: Harness) -> None:
        for n in range(4):
            await h.submit_until_accepted(n)

    first = run(scenario, binds=1, record_path=path, drop_every=4)
    second = run(scenario, binds=1, record_path=path, error_rate=0.5, error_status=0x14, seed=2)
    rows = read_record(path)
    submits = [r for r in rows if r["kind"] == "submit"]
    assert [r["message_id"] for r in submits] == [
        s.message_id for s in first.submits + second.submits
    ]
    faults = [(r["fault"], r["status"]) for r in rows if r["kind"] == "fault"]
    assert faults == [(f.kind, f.status) for f in first.faults + second.faults]
    assert ("drop", 0) in faults and ("error", 0x14) in faults


def test_read_record_skips_a_line_still_being_written_and_rejects_garbage(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(
        b'{"kind":"submit","message_id":"1"}\n\n{"kind":"receipt","message_id":"1"}\n'
        + '{"kind":"submit","text":"退'.encode()[:-1]  # cut inside a character
    )
    assert [r["kind"] for r in read_record(path)] == ["submit", "receipt"]
    path.write_text('{"kind":"submit"}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        read_record(path)
    path.write_text('["kind"]\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 1"):
        read_record(path)


def test_record_path_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    async def main() -> None:
        smsc = SandboxSmsc(SandboxConfig(record_path=tmp_path / "missing" / "r.jsonl"))
        with pytest.raises(SandboxConfigError, match="cannot open the record file"):
            await smsc.start()
        assert smsc._server is None

    asyncio.run(main())


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "bad",
    [
        {"drop_every": 1},
        {"drop_every": -3},
        {"drop_every": True},
        {"malformed_every": -1},
        {"malformed_kind": "noise"},
        {"late_rate": 1.5},
        {"late_rate": float("nan")},
        {"error_rate": -0.1},
        {"reply_rate": 2},
        {"late_delay": -1},
        {"late_delay": float("inf")},
        {"reply_delay": -0.5},
        {"receipt_delay": float("nan")},
        {"error_status": 0},
        {"error_status": 0x1_0000_0000},
        {"reply_rate": 0.5, "reply_texts": ()},
        {"reply_texts": ("TD", " ")},
    ],
)
def test_bad_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(SandboxConfigError) as err:
        SandboxConfig(**bad)
    assert isinstance(err.value, ValueError)
    assert err.value.message_zh and err.value.message_en


def test_faults_are_off_by_default() -> None:
    cfg = SandboxConfig()
    assert (cfg.drop_every, cfg.malformed_every) == (0, 0)
    assert (cfg.late_rate, cfg.error_rate, cfg.reply_rate) == (0, 0, 0)
    assert cfg.record_path is None


# --------------------------------------------------------------------------- ESME-side edges


def test_a_long_message_cut_by_a_drop_keeps_the_id_of_its_accepted_part() -> None:
    async def scenario(h: Harness) -> None:
        # PDUs on the bind: bind_transceiver, part 1, part 2 (the 3rd: taken, never answered)
        with pytest.raises(SubmitError) as err:
            await h.submit(1, LONG_TEXT)
        assert err.value.transient
        assert err.value.accepted == [h.smsc.submits[0].message_id]
        assert await h.channel.wait_ready(5)

    smsc = run(scenario, binds=1, drop_every=3, receipt_delay=5)
    assert [s.concat.seq for s in smsc.submits if s.concat] == [1, 2]  # both parts taken
    assert [f.kind for f in smsc.faults] == ["drop"]


def test_settings_our_side_cannot_encode_are_clear_errors_not_a_dead_bind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="hongyan.channels.smpp")

    async def main() -> None:
        smsc = SandboxSmsc(SandboxConfig(credentials={SYSTEM_ID: PASSWORD}))
        host, port = await smsc.start()
        try:
            # an SMPP password has at most 8 characters
            client = SmppClient(SmppConfig(host, port, SYSTEM_ID, "far-too-long"))
            with pytest.raises(SmppError, match="cannot encode"):
                await asyncio.wait_for(client.connect(), 5)
            await client.close()
            spec = ChannelSpec(
                name="long-sender",
                kind="smpp",
                config={"host": host, "port": port, "system_id": SYSTEM_ID},
                secrets={"password": PASSWORD},
            )
            channel = SmppChannel(spec)

            async def ignore(_: object) -> None:
                return None

            await channel.start(ignore, ignore)
            assert await channel.wait_ready(5)
            with pytest.raises(SubmitError) as err:  # source_addr longer than 21 octets
                await channel.submit(Outgoing(1, TO, "hi", Lane.NOTIFICATION, source="1" * 30))
            assert not err.value.transient
            assert channel.ready  # the bind is still usable
            await channel.submit(Outgoing(2, TO, "hi", Lane.NOTIFICATION))
            await channel.stop()
        finally:
            await smsc.stop()
        assert [s.payload for s in smsc.submits] == [b"hi"]

    asyncio.run(asyncio.wait_for(main(), 20))
