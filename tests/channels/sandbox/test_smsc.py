"""Sandbox SMSC over real sockets on 127.0.0.1, driven by a tiny test-only ESME client."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from hongyan.channels.sandbox.smsc import SandboxConfig, SandboxSmsc
from hongyan.channels.smpp.pdu import (
    Bind,
    BindReceiver,
    BindResp,
    BindTransceiver,
    BindTransmitter,
    CommandStatus,
    DataCoding,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    EsmClass,
    GenericNack,
    MessageState,
    Pdu,
    PduReader,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    encode,
    parse_receipt_text,
    udh_concat,
)

T = TypeVar("T", bound=Pdu)

CREDS = {"acme": "secret", "other": "pw2"}
TIMEOUT = 5.0


_open_clients: list[Client] = []


class Client:
    """Minimal ESME: send encoded PDUs, read them back with PduReader."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pdu_reader = PduReader()
        self.inbox: deque[Pdu] = deque()
        self.seq = 0

    @classmethod
    async def connect(cls, addr: tuple[str, int]) -> Client:
        reader, writer = await asyncio.open_connection(*addr)
        client = cls(reader, writer)
        _open_clients.append(client)
        return client

    async def send(self, pdu: Pdu) -> int:
        if not pdu.sequence_number:
            self.seq += 1
            pdu.sequence_number = self.seq
        await self.send_raw(encode(pdu))
        return pdu.sequence_number

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read(self, timeout: float = TIMEOUT) -> Pdu:
        while not self.inbox:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise ConnectionError("server closed the connection")
            self.inbox.extend(self.pdu_reader.feed(data))
        return self.inbox.popleft()

    async def read_type(self, cls: type[T], timeout: float = TIMEOUT) -> T:
        """Next PDU of ``cls``; deliver_sm seen on the way are acknowledged and kept."""
        skipped: list[Pdu] = []
        try:
            while True:
                pdu = await self.read(timeout)
                if isinstance(pdu, cls):
                    return pdu
                skipped.append(pdu)
        finally:
            self.inbox.extendleft(reversed(skipped))

    async def receive_deliver(self, timeout: float = TIMEOUT) -> DeliverSm:
        """Next deliver_sm, acknowledged with deliver_sm_resp."""
        pdu = await self.read_type(DeliverSm, timeout)
        await self.send(DeliverSmResp(sequence_number=pdu.sequence_number))
        return pdu

    async def request(self, pdu: Pdu, resp_cls: type[Pdu]) -> Any:
        seq = await self.send(pdu)
        resp = await self.read_type(resp_cls)
        assert resp.sequence_number == seq
        return resp

    async def bind(
        self,
        cls: type[Bind] = BindTransceiver,
        system_id: str = "acme",
        password: str = CREDS["acme"],
    ) -> BindResp:
        seq = await self.send(cls(system_id=system_id, password=password))
        resp = await self.read()
        assert isinstance(resp, BindResp)
        assert resp.sequence_number == seq
        return resp

    async def submit(self, **fields: Any) -> SubmitSmResp:
        fields.setdefault("source_addr", "10690001")
        fields.setdefault("destination_addr", "13800138000")
        resp = await self.request(SubmitSm(**fields), SubmitSmResp)
        assert isinstance(resp, SubmitSmResp)
        return resp

    async def is_closed(self, timeout: float = TIMEOUT) -> bool:
        """True once the server has closed (pending PDUs are drained first)."""
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return True
        except (ConnectionError, TimeoutError):
            return isinstance(self.reader.exception(), ConnectionError) or self.reader.at_eof()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


Scenario = Callable[[SandboxSmsc, tuple[str, int]], Awaitable[None]]


def run(scenario: Scenario, **config: Any) -> SandboxSmsc:
    """Start a sandbox, run ``scenario(smsc, addr)`` with a hard timeout, stop it."""
    config.setdefault("credentials", dict(CREDS))
    smsc = SandboxSmsc(SandboxConfig(**config))

    async def main() -> None:
        addr = await smsc.start()
        try:
            await asyncio.wait_for(scenario(smsc, addr), 20)
        finally:
            for client in _open_clients:
                await client.close()
            _open_clients.clear()
            await asyncio.wait_for(smsc.stop(), 5)

    asyncio.run(main())
    return smsc


# --------------------------------------------------------------------------- bind


@pytest.mark.parametrize("cls", [BindTransmitter, BindReceiver, BindTransceiver])
def test_bind_ok(cls: type[Bind]) -> None:
    async def scenario(smsc: SandboxSmsc, addr: tuple[str, int]) -> None:
        client = await Client.connect(addr)
        resp = await client.bind(cls)
        assert resp.command_status == CommandStatus.ESME_ROK
        assert resp.command_id == cls.command_id | 0x80000000
        assert resp.system_id
        again = await client.bind(cls)
        assert again.command_status == CommandStatus.ESME_RALYBND
        await client.close()

    run(scenario)


@pytest.mark.parametrize(
    ("system_id", "password", "status"),
    [
        ("acme", "wrong", CommandStatus.ESME_RINVPASWD),
        ("nobody", "secret", CommandStatus.ESME_RINVSYSID),
        ("other", "secret", CommandStatus.ESME_RINVPASWD),
    ],
)
def test_bind_bad_credentials_is_refused_and_closed(
    system_id: str, password: str, status: int
) -> None:
    async def scenario(smsc: SandboxSmsc, addr: tuple[str, int]) -> None:
        client = await Client.connect(addr)
        resp = await client.bind(BindTransceiver, system_id, password)
        assert resp.command_status == status
        assert await client.is_closed()

    run(scenario)


def test_submit_before_bind_and_on_receiver_bind_refused() -> None:
    async def scenario(smsc: SandboxSmsc, addr: tuple[str, int]) -> None:
        client = await Client.connect(addr)
        resp = await client.submit(short_message=b"hi")
        assert resp.command_status == CommandStatus.ESME_RINVBNDSTS
        assert resp.message_id == ""
        await client.bind(BindReceiver)
        resp = await client.submit(short_message=b"hi")
        assert resp.command_status == CommandStatus.ESME_RINVBNDSTS
        await client.close()

    smsc = run(scenario)
    assert smsc.submits == []


# --------------------------------------------------------------------------- receipts


def test_submit_gets_resp_and_delivered_receipt() -> None:
    async def scenario(smsc: SandboxSmsc, addr: tuple[str, int]) -> None:
        client = await Client.connect(addr)
        await client.bind(BindTransceiver)
        resp = await client.submit(short_message=b"Hello", registered_delivery=1)
        assert resp.command_status == CommandStatus.ESME_ROK
        assert resp.message_id
        int(resp.message_id, 16)  # hex
        receipt = await client.receive_deliver()
        assert receipt.esm_class & EsmClass.MESSAGE_TYPE_MASK == EsmClass.MC_DELIVERY_RECEIPT
        assert receipt.receipted_message_id == resp.message_id
        assert receipt.message_state == MessageState.DELIVERED
        assert receipt.source_addr == "13800138000"
        assert receipt.destination_addr == "10690001"
        parsed = parse_receipt_text(receipt.short_message.decode("ascii"))
        assert parsed is not None
        assert parsed.message_id == resp.message_id
        assert parsed.stat == "DELIVRD"
        assert parsed.err == "000"
        assert parsed.text == "Hello"
        second = await client.submit(short_message=b"again", registered_delivery=1)
        assert second.message_id != resp.message_id
        await client.receive_deliver()
        await client.close()

    smsc = run(scenario)
    assert [s.short_message for s in smsc.submits] == [b"Hello", b"again"]
    assert smsc.submits[0].system_id == "acme"
    assert smsc.submits[0].destination == "13800138000"


def test_invalid_number_gets_undeliv_err_001() -> None:
    async def scenario(smsc: SandboxSmsc, addr: tuple[str, int]) -> None:
        client = await Client.connect(addr)
        await client.bind(BindTransceiver)
        resp = await client.submit(
            destination_addr="13900000000", short_message=b"x", registered_delivery=1
        )
        assert resp.command_status == CommandStatus.ESME_ROK
        receipt = await client.receive_deliver()
        assert receipt.receipted_message_id == resp.message_id
        assert receipt.message_state == MessageState.UNDELIVERABLE
        parsed = parse_receipt_text(receipt.short_message.decode("ascii"))
        assert parsed is not None
        assert (parsed.stat, parsed.err) == ("UNDELIV", "001")
        await client.close()

    run(scenario, invalid_numbers={"13900000000"})


def test_no_receipt_unless_requested_and_failure_only_mode() -> None:
    async def scenario(smsc: SandboxSmsc, addr: tuple[str, int]) -> None:
        client = await Client.connect(addr)
        await client.bind(BindTransceiver)
        await client.submit(short_message=b"a", registered_delivery=0)
        await client.submit(short_message=b"b", registered_delivery=2)  # failures only
        failed = await client.submit(
            destination_addr="1", short_message=b"c", registered_delivery=2
        )
        receipt = await client.receive_deliver()
        assert receipt.receipted_message_id == failed.message_id
        with pytest.raises(TimeoutError):
            await client.read(timeout=0.3)
        await client.close()

    run(scenario, invalid_numbers={"1"})


def test_receipt_goes_to_receiver_bind_and_waits_for_one() -> None:
    async def scenario(smsc: SandboxSmsc, addr: tuple[str, int]) -> None:
        tx = await Client.connect(addr)
        await tx.bind(BindTransmitter)
        resp = await tx.submit(short_message=b"x", registered_delivery=1)
        await asyncio.sleep(0.1)  # receipt is due but nobody can take it yet
        rx = await Client.connect(addr)
        await rx.bind(BindReceiver)
        receipt = await rx.receive_deliver()
        assert receipt.receipted_message_id == resp.message_id
        # a receiver of another system_id gets nothing
        other = await Client.connect(addr)
        await other.bind(BindReceiver, "other", "pw2")
        await tx.submit(short_message=b"y", registered_delivery=1)
        await rx.receive_deliver()
        with pytest.raises(TimeoutError):
            await other.read(timeout=0.3)
        for c in (tx, rx, other):
            await c.close()

    run(scenario)


def test_receipts_round_robin_across_receivers() -> None:
    async def scenario(smsc: SandboxSmsc, addr: tuple[str, int]) -> None:
        tx = await Client.connect(addr)
        await tx.bind(BindTransmitter)
        receivers = [await Client.connect(addr) for _ in range(2)]
        for rx in receivers:
            await rx.bind(BindReceiver)
        for i in range(4):
            await tx.submit(short_message=f"m{i}".encode(), registered_delivery=1)
        counts = []
        for rx in receivers:
            got = [await rx.receive_deliver() for _ in range(2)]
            counts.append(len(got))
        assert counts == [2, 2]
        for c in (tx, *receivers):
            await c.close()

    run(scenario)


def test_outcomes_are_deterministic_for_a_seed() -> None:
    def outcomes(seed: int) -> list[str]:
        async def scenario(smsc: SandboxSmsc, addr: tuple[str, int]) -> None:
            client = await Client.connect(addr)
            await client.bind(BindTransmitter)
            for _ in range(30):
                await client.submit(short_message=b"x", registered_delivery=1)
            await client.close()

        smsc = run(
            scenario,
            seed=seed,
            receipt_delay=60,
            delivered=1,
            undeliverable=1,
            expired=1,
            rejected=1,
            no_receipt=1,
        )
        assert len(smsc.submits) == 30
        return [r.stat for r in smsc.receipts]

    first = outcomes(7)
    assert first == outcomes(7)
    assert {"DELIVRD", "UNDELIV", "EXPIRED", "REJECTD"} <= set(first)
    assert len(first) < 30  # some no_receipt


def test_throttle() -> None:
    async def scenario(smsc: SandboxSmsc, addr: tuple[str, int]) -> None:
        client = await Client.connect(addr)
        await client.bind(BindTransmitter)
        statuses = [(await client.submit(short_message=b"x")).command_status for _ in range(5)]
        assert statuses[:2] == [0, 0]
        assert CommandStatus.ESME_RTHROTTLED in statuses
        await asyncio.sleep(0.6)
        assert (await client.submit(short_message=b"x")).command_status == 0
        await client.close()

    smsc = run(scenario, throttle_per_second=2.0)
    assert len(smsc.submits) == 3 or len(smsc.submits) == 4  # refill during the burst


# --------------------------------------------------------------------------- concatenation


def test_two_part_ucs2_chinese_is_reassembled() -> None:
    text = "鸿雁传书，" * 14 + "春节快乐！祝您新年大吉"  # 81 chars: two UCS-2 parts
    first, second = text[:67], text[67:]

    async def scenario(smsc: SandboxSmsc, addr: tuple[str, int]) -> None:
        client = await Client.connect(addr)
        await client.bind(BindTransmitter)
        await client.submit(short_message=b"plain", data_coding=0)
        # second part first: order of arrival must not matter
        for seq, part in ((2, second), (1, first)):
            resp = await client.submit(
                esm_class=EsmClass.UDHI,
                data_coding=DataCoding.UCS2,
                short_message=udh_concat(0x42, 2, seq) + part.encode("utf-16-be"),
            )
            assert resp.command_status == 0
        await client.submit(
            esm_class=EsmClass.UDHI, data_coding=0, short_message=udh_concat(1, 3, 1) + b"@ab"
        )
        await client.close()

    smsc = run(scenario)
    messages = smsc.reassembled()
    assert [m.text for m in messages] == ["plain", text, "¡ab"]
    assert messages[1].complete
    assert messages[1].message_ids == (smsc.submits[2].message_id, smsc.submits[1].message_id)
    assert not messages[2].complete


def test_bad_udh_is_refused() -> None:
    async def scenario(smsc: SandboxSmsc, addr: tuple[str, int]) -> None:
        client = await Client.connect(addr)
        await client.bind(BindTransmitter)
        resp = await client.submit(esm_class=EsmClass.UDHI, short_message=b"\x09\x00\x03")
        assert resp.command_status == CommandStatus.ESME_RINVESMCLASS
        await client.close()

    smsc = run(scenario)
    assert smsc.submits == []


# --------------------------------------------------------------------------- session


def test_enquire_link_and_unbind() -> None:
    async def scenario(smsc: SandboxSmsc, addr: tuple[str, int]) -> None:
        client = await Client.connect(addr)
        resp = await client.request(EnquireLink(), EnquireLinkResp)
        assert resp.command_status == 0
        await client.bind(BindTransmitter)
        await client.request(EnquireLink(), EnquireLinkResp)
        unbind = await client.request(Unbind(), UnbindResp)
        assert unbind.command_status == 0
        assert await client.is_closed()

    run(scenario)


def test_unknown_command_gets_generic_nack_and_session_continues() -> None:
    async def scenario(smsc: SandboxSmsc, addr: tuple[str, int]) -> None:
        client = await Client.connect(addr)
        await client.bind(BindTransmitter)
        query_sm = (16).to_bytes(4, "big") + (0x00000003).to_bytes(4, "big") + bytes(4)
        await client.send_raw(query_sm + (77).to_bytes(4, "big"))
        nack = await client.read()
        assert isinstance(nack, GenericNack)
        assert nack.command_status == CommandStatus.ESME_RINVCMDID
        assert nack.sequence_number == 77
        await client.request(EnquireLink(), EnquireLinkResp)
        await client.close()

    run(scenario)


@pytest.mark.parametrize(
    ("garbage", "status"),
    [
        (b"\x00\x00\x00\x05garbage-garbage", CommandStatus.ESME_RINVCMDLEN),
        # bind_transmitter whose system_id never ends: a bad body, framing intact
        (
            (32).to_bytes(4, "big")
            + (2).to_bytes(4, "big")
            + bytes(4)
            + (9).to_bytes(4, "big")
            + b"x" * 16,
            CommandStatus.ESME_RINVSYSID,
        ),
    ],
)
def test_garbage_gets_generic_nack_and_only_that_connection_closes(
    garbage: bytes, status: int
) -> None:
    async def scenario(smsc: SandboxSmsc, addr: tuple[str, int]) -> None:
        good = await Client.connect(addr)
        await good.bind(BindTransceiver)
        bad = await Client.connect(addr)
        await bad.bind(BindTransceiver)
        await bad.send_raw(garbage)
        nack = await bad.read()
        assert isinstance(nack, GenericNack)
        assert nack.command_status == status
        assert await bad.is_closed()
        await good.request(EnquireLink(), EnquireLinkResp)
        resp = await good.submit(short_message=b"still here", registered_delivery=1)
        assert resp.command_status == 0
        receipt = await good.receive_deliver()
        assert receipt.receipted_message_id == resp.message_id
        await good.close()

    run(scenario)


# --------------------------------------------------------------------------- MO


def test_inject_mo() -> None:
    async def scenario(smsc: SandboxSmsc, addr: tuple[str, int]) -> None:
        with pytest.raises(LookupError):
            await smsc.inject_mo("acme", "13800138000", "10690001", "TD")
        client = await Client.connect(addr)
        await client.bind(BindReceiver)
        inject = asyncio.create_task(smsc.inject_mo("acme", "13800138000", "10690001", "TD"))
        mo = await client.receive_deliver()
        assert await inject == 0
        assert mo.esm_class == 0
        assert mo.data_coding == 0
        assert mo.short_message == b"TD"
        assert (mo.source_addr, mo.destination_addr) == ("13800138000", "10690001")
        inject = asyncio.create_task(smsc.inject_mo("acme", "13800138000", "10690001", "退订"))
        mo = await client.receive_deliver()
        assert await inject == 0
        assert mo.data_coding == DataCoding.UCS2
        assert mo.short_message.decode("utf-16-be") == "退订"
        await client.close()

    run(scenario)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SandboxConfig(delivered=0)
    with pytest.raises(ValueError):
        SandboxConfig(throttle_per_second=0)
