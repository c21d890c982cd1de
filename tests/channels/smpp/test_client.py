"""The ESME client against the sandbox SMSC over a real loopback socket."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from hongyan.channels.sandbox.smsc import SandboxConfig, SandboxSmsc
from hongyan.channels.smpp import pdu as P
from hongyan.channels.smpp.client import (
    Inbound,
    Report,
    SmppClient,
    SmppConfig,
    SmppError,
    Throttled,
)

CREDS = {"hongyan": "secret1"}


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


async def _pair(
    config: SandboxConfig, password: str = CREDS["hongyan"]
) -> tuple[SandboxSmsc, SmppClient, list[Report], list[Inbound]]:
    smsc = SandboxSmsc(config)
    host, port = await smsc.start()
    reports: list[Report] = []
    inbound: list[Inbound] = []

    async def on_report(r: Report) -> None:
        reports.append(r)

    async def on_inbound(m: Inbound) -> None:
        inbound.append(m)

    client = SmppClient(
        SmppConfig(host, port, "hongyan", password, source_addr="106900001"),
        on_report=on_report,
        on_inbound=on_inbound,
    )
    return smsc, client, reports, inbound


async def _until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.01)


def test_submit_receipts_long_message_and_reply() -> None:
    async def scenario() -> None:
        cfg = SandboxConfig(credentials=CREDS, invalid_numbers={"8613900000000"})
        smsc, client, reports, inbound = await _pair(cfg)
        try:
            await client.connect()
            ok = await client.submit("+8613812345678", "【鸿雁茶饮】您的订单已发货")
            long_text = "【鸿雁茶饮】" + "春季新品上市，会员专享八折优惠。" * 6
            parts = await client.submit("+8613812345678", long_text)
            bad = await client.submit("+8613900000000", "hello")
            assert len(ok) == 1 and len(parts) == 2 and len(bad) == 1
            await asyncio.wait_for(_until(lambda: len(reports) == 4), 5)
            by_id = {r.message_id: r for r in reports}
            assert set(by_id) == set(ok + parts + bad)  # every part's receipt matched
            assert by_id[ok[0]].stat == "DELIVRD"
            assert by_id[ok[0]].state == P.MessageState.DELIVERED
            assert by_id[bad[0]].stat == "UNDELIV" and by_id[bad[0]].err == "001"
            texts = [m.text for m in smsc.reassembled()]
            assert long_text in texts
            await smsc.inject_mo("hongyan", "8613812345678", "106900001", "退订")
            await asyncio.wait_for(_until(lambda: len(inbound) == 1), 5)
            assert inbound[0].text == "退订" and inbound[0].source.endswith("13812345678")
        finally:
            await client.close()
            await smsc.stop()

    run(scenario)


def test_bad_password_is_refused() -> None:
    async def scenario() -> None:
        smsc, client, _, _ = await _pair(SandboxConfig(credentials=CREDS), password="wrong")
        try:
            with pytest.raises(SmppError) as err:
                await client.connect()
            assert err.value.status == P.CommandStatus.ESME_RINVPASWD
        finally:
            await smsc.stop()

    run(scenario)


def test_throttled_submit_is_transient() -> None:
    async def scenario() -> None:
        smsc, client, _, _ = await _pair(SandboxConfig(credentials=CREDS, throttle_per_second=2))
        try:
            await client.connect()
            with pytest.raises(Throttled) as err:
                for _ in range(10):
                    await client.submit("+8613812345678", "hi")
            assert err.value.transient
        finally:
            await client.close()
            await smsc.stop()

    run(scenario)


def test_connection_loss_fails_pending_and_marks_closed() -> None:
    async def scenario() -> None:
        smsc, client, _, _ = await _pair(SandboxConfig(credentials=CREDS))
        await client.connect()
        await smsc.stop()
        await asyncio.wait_for(client.closed.wait(), 5)
        with pytest.raises(SmppError):
            await client.submit("+8613812345678", "hi")

    run(scenario)
