"""Sandbox SMSC: the server side of SMPP 3.4 over asyncio, for development and tests.

It behaves like a (well-mannered) carrier gateway:

* ``bind_transmitter`` / ``bind_receiver`` / ``bind_transceiver`` checked against
  :attr:`SandboxConfig.credentials` (``ESME_RINVSYSID`` / ``ESME_RINVPASWD``, then the
  connection is closed); a second bind on one connection gets ``ESME_RALYBND``.
* ``submit_sm`` before a bind, or on a receiver bind, gets ``ESME_RINVBNDSTS``; above
  :attr:`SandboxConfig.throttle_per_second` (per system_id) ``ESME_RTHROTTLED``.
  An accepted submit gets a fresh hex message id and, when ``registered_delivery`` asks for
  it, a delivery receipt (``deliver_sm`` with esm_class 0x04, the de-facto receipt text and
  the ``receipted_message_id`` / ``message_state`` TLVs) after
  :attr:`SandboxConfig.receipt_delay`, sent round-robin to a receiver/transceiver bind of the
  same system_id. Receipts for a system_id with no receiver bound wait until one binds.
* ``enquire_link`` is answered; ``unbind`` is answered and the connection closed.
* An unknown command_id gets ``generic_nack`` ``ESME_RINVCMDID``; any other malformed PDU
  gets ``generic_nack`` with the codec's status and that connection (only) is closed.
* :meth:`SandboxSmsc.inject_mo` sends a mobile-originated ``deliver_sm`` (a reply such as
  "TD" / "退订").

Everything random (receipt outcomes) comes from one ``random.Random(seed)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from hongyan.channels.smpp.pdu import (
    Bind,
    BindReceiver,
    BindReceiverResp,
    BindResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CommandId,
    CommandStatus,
    ConcatInfo,
    DataCoding,
    DeliverSm,
    EnquireLink,
    EnquireLinkResp,
    EsmClass,
    GenericNack,
    MessageState,
    Pdu,
    PduError,
    PduReader,
    Receipt,
    SubmitSm,
    SubmitSmResp,
    Tlv,
    TlvTag,
    Unbind,
    UnbindResp,
    encode,
    format_receipt_text,
    split_udh,
)
from hongyan.content.encoding import decode_gsm7_unpacked, encode_gsm7_unpacked, is_gsm7

__all__ = [
    "OUTCOME_ERR",
    "ReassembledMessage",
    "ReceivedSubmit",
    "SandboxConfig",
    "SandboxSmsc",
    "SentReceipt",
]

log = logging.getLogger(__name__)

Outcome = Literal["delivered", "undeliverable", "expired", "rejected", "no_receipt"]
BindMode = Literal["transmitter", "receiver", "transceiver"]

SMSC_SYSTEM_ID = "HONGYAN-SANDBOX"
#: ``err`` field of the receipt text per outcome ("001" is also the 空号 / invalid number case).
OUTCOME_ERR: dict[str, str] = {
    "delivered": "000",
    "undeliverable": "001",
    "expired": "003",
    "rejected": "008",
}
_OUTCOME_STATE: dict[str, MessageState] = {
    "delivered": MessageState.DELIVERED,
    "undeliverable": MessageState.UNDELIVERABLE,
    "expired": MessageState.EXPIRED,
    "rejected": MessageState.REJECTED,
}
_OUTCOME_STAT: dict[str, str] = {
    "delivered": "DELIVRD",
    "undeliverable": "UNDELIV",
    "expired": "EXPIRED",
    "rejected": "REJECTD",
}
_RESPONSE_TIMEOUT = 30.0
_READ_CHUNK = 65536


@dataclass
class SandboxConfig:
    """How the sandbox SMSC behaves. Outcome weights need not sum to 1."""

    host: str = "127.0.0.1"
    port: int = 0
    credentials: dict[str, str] = field(default_factory=dict)
    receipt_delay: float = 0.0
    delivered: float = 1.0
    undeliverable: float = 0.0
    expired: float = 0.0
    rejected: float = 0.0
    no_receipt: float = 0.0
    invalid_numbers: set[str] = field(default_factory=set)
    throttle_per_second: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        weights = self.outcome_weights()
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"outcome weights must be >= 0 with a positive sum: {weights}")
        if self.receipt_delay < 0:
            raise ValueError("receipt_delay must be >= 0")
        if self.throttle_per_second is not None and self.throttle_per_second <= 0:
            raise ValueError("throttle_per_second must be positive (or None for no limit)")

    def outcome_weights(self) -> dict[Outcome, float]:
        return {
            "delivered": self.delivered,
            "undeliverable": self.undeliverable,
            "expired": self.expired,
            "rejected": self.rejected,
            "no_receipt": self.no_receipt,
        }


@dataclass(frozen=True)
class ReceivedSubmit:
    """One accepted submit_sm, as the sandbox recorded it."""

    system_id: str
    source: str
    destination: str
    data_coding: int
    esm_class: int
    short_message: bytes
    message_id: str
    registered_delivery: int = 0
    #: Concatenation info from the UDH (esm_class UDHI) or the sar_* TLVs, else None.
    concat: ConcatInfo | None = None
    #: The message body without its UDH (message_payload when short_message was empty).
    payload: bytes = b""


@dataclass(frozen=True)
class SentReceipt:
    """A delivery receipt the sandbox decided on (sent, or waiting for a receiver bind)."""

    system_id: str
    message_id: str
    stat: str
    err: str


@dataclass(frozen=True)
class ReassembledMessage:
    """A whole message joined from its submits; ``complete`` is False if parts are missing."""

    system_id: str
    source: str
    destination: str
    text: str
    message_ids: tuple[str, ...]
    complete: bool


def _decode_text(data: bytes, data_coding: int) -> str:
    if data_coding == DataCoding.UCS2:
        return data.decode("utf-16-be", errors="replace")
    if data_coding == DataCoding.SMSC_DEFAULT:
        try:
            return decode_gsm7_unpacked(data)
        except ValueError:
            return data.decode("latin-1")
    return data.decode("latin-1")


def _encode_text(text: str) -> tuple[int, bytes]:
    """data_coding 0 (GSM-7 unpacked) for plain ASCII that GSM-7 can carry, else UCS-2."""
    if text.isascii() and is_gsm7(text):
        return DataCoding.SMSC_DEFAULT, encode_gsm7_unpacked(text)
    return DataCoding.UCS2, text.encode("utf-16-be")


class _TokenBucket:
    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Session:
    """One ESME connection."""

    def __init__(
        self, smsc: SandboxSmsc, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.smsc = smsc
        self.reader = reader
        self.writer = writer
        self.mode: BindMode | None = None
        self.system_id = ""
        self.bind_order = 0
        self._seq = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Pdu]] = {}
        self._write_lock = asyncio.Lock()
        self.closed = False

    @property
    def can_receive(self) -> bool:
        return self.mode in ("receiver", "transceiver")

    async def send(self, pdu: Pdu) -> None:
        data = encode(pdu)
        async with self._write_lock:
            if self.closed:
                raise ConnectionError("session closed")
            self.writer.write(data)
            await self.writer.drain()

    def _next_seq(self) -> int:
        # Sequence numbers run 1..0x7FFFFFFF (SMPP 3.4 section 5.1.4), then wrap.
        return (next(self._seq) - 1) % 0x7FFFFFFF + 1

    async def request(self, pdu: Pdu, timeout: float = _RESPONSE_TIMEOUT) -> Pdu:
        """Send a server-originated request and wait for its response."""
        pdu.sequence_number = self._next_seq()
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self._pending[pdu.sequence_number] = future
        try:
            await self.send(pdu)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(pdu.sequence_number, None)

    async def run(self) -> None:
        pdu_reader = PduReader()
        try:
            while not self.closed:
                data = await self.reader.read(_READ_CHUNK)
                if not data:
                    break
                if not await self._process(pdu_reader, data):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("sandbox smsc: session failed")
        finally:
            await self.close()

    async def _process(self, pdu_reader: PduReader, data: bytes) -> bool:
        """Feed bytes; handle every PDU. False when the connection must close."""
        while True:
            try:
                pdus = pdu_reader.feed(data)
            except PduError as exc:
                for pdu in exc.preceding:
                    if not await self._handle(pdu):
                        return False
                await self.send(
                    GenericNack(
                        sequence_number=exc.sequence_number or 0,
                        command_status=int(exc.command_status),
                    )
                )
                if exc.fatal or exc.command_status != CommandStatus.ESME_RINVCMDID:
                    log.info("sandbox smsc: closing after malformed PDU: %s", exc.message)
                    return False
                data = b""  # unknown command skipped: continue with what is buffered
                continue
            for pdu in pdus:
                if not await self._handle(pdu):
                    return False
            return True

    async def _handle(self, pdu: Pdu) -> bool:
        """Answer one PDU. False when the connection must close."""
        seq = pdu.sequence_number
        if pdu.command_id & 0x80000000:  # a response (or generic_nack) to our request
            future = self._pending.get(seq)
            if future is not None and not future.done():
                future.set_result(pdu)
            return True
        if isinstance(pdu, Bind):
            return await self._bind(pdu)
        if isinstance(pdu, SubmitSm):
            await self.send(self.smsc._submit(self, pdu))
            return True
        if isinstance(pdu, EnquireLink):
            await self.send(EnquireLinkResp(sequence_number=seq))
            return True
        if isinstance(pdu, Unbind):
            await self.send(UnbindResp(sequence_number=seq))
            return False
        await self.send(
            GenericNack(sequence_number=seq, command_status=CommandStatus.ESME_RINVCMDID)
        )
        return True

    async def _bind(self, pdu: Bind) -> bool:
        resp_cls: type[BindResp]
        mode: BindMode
        if isinstance(pdu, BindTransmitter):
            resp_cls, mode = BindTransmitterResp, "transmitter"
        elif isinstance(pdu, BindReceiver):
            resp_cls, mode = BindReceiverResp, "receiver"
        else:
            assert isinstance(pdu, BindTransceiver)
            resp_cls, mode = BindTransceiverResp, "transceiver"
        seq = pdu.sequence_number
        if self.mode is not None:
            await self.send(
                resp_cls(sequence_number=seq, command_status=CommandStatus.ESME_RALYBND)
            )
            return True
        expected = self.smsc.config.credentials.get(pdu.system_id)
        status: int = CommandStatus.ESME_ROK
        if expected is None:
            status = CommandStatus.ESME_RINVSYSID
        elif expected != pdu.password:
            status = CommandStatus.ESME_RINVPASWD
        if status != CommandStatus.ESME_ROK:
            await self.send(resp_cls(sequence_number=seq, command_status=status))
            return False
        self.mode, self.system_id = mode, pdu.system_id
        self.bind_order = next(self.smsc._bind_counter)
        await self.send(resp_cls(sequence_number=seq, system_id=SMSC_SYSTEM_ID))
        if self.can_receive:
            self.smsc._receiver_bound(self)
        return True

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.smsc._session_closed(self)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("session closed"))
        self._pending.clear()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class SandboxSmsc:
    """A sandbox SMPP 3.4 SMSC. ``await start()`` returns the (host, port) it listens on."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.submits: list[ReceivedSubmit] = []
        self.receipts: list[SentReceipt] = []
        self._rng = random.Random(self.config.seed)  # noqa: S311 - simulation, not crypto
        self._ids = itertools.count(1)
        self._bind_counter = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._rr: dict[str, int] = {}
        self._buckets: dict[str, _TokenBucket] = {}
        self._waiting: dict[str, deque[DeliverSm]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> tuple[str, int]:
        if self._server is not None:
            raise RuntimeError("sandbox SMSC already started")
        self._server = await asyncio.start_server(
            self._on_connect, self.config.host, self.config.port
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for session in list(self._sessions):
            await session.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> SandboxSmsc:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(self, reader, writer)
        self._sessions.add(session)
        await session.run()

    # ------------------------------------------------------------------ sessions

    def _receivers(self, system_id: str) -> list[_Session]:
        return [
            s for s in self._sessions if s.can_receive and s.system_id == system_id and not s.closed
        ]

    def _pick_receiver(self, system_id: str) -> _Session | None:
        receivers = sorted(self._receivers(system_id), key=lambda s: s.bind_order)
        if not receivers:
            return None
        index = self._rr.get(system_id, 0)
        self._rr[system_id] = index + 1
        return receivers[index % len(receivers)]

    def _receiver_bound(self, session: _Session) -> None:
        waiting = self._waiting.pop(session.system_id, None)
        while waiting:
            self._spawn(self._deliver(session.system_id, waiting.popleft()))

    def _session_closed(self, session: _Session) -> None:
        self._sessions.discard(session)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ submit_sm

    def _submit(self, session: _Session, pdu: SubmitSm) -> SubmitSmResp:
        seq = pdu.sequence_number
        if session.mode not in ("transmitter", "transceiver"):
            return SubmitSmResp(sequence_number=seq, command_status=CommandStatus.ESME_RINVBNDSTS)
        rate = self.config.throttle_per_second
        if rate is not None:
            now = asyncio.get_running_loop().time()
            bucket = self._buckets.setdefault(session.system_id, _TokenBucket(rate, now))
            if not bucket.take(now):
                return SubmitSmResp(
                    sequence_number=seq, command_status=CommandStatus.ESME_RTHROTTLED
                )
        try:
            concat, payload = self._concat_and_payload(pdu)
        except PduError as exc:
            return SubmitSmResp(sequence_number=seq, command_status=int(exc.command_status))
        message_id = f"{next(self._ids):x}"
        record = ReceivedSubmit(
            system_id=session.system_id,
            source=pdu.source_addr,
            destination=pdu.destination_addr,
            data_coding=pdu.data_coding,
            esm_class=pdu.esm_class,
            short_message=bytes(pdu.short_message),
            message_id=message_id,
            registered_delivery=pdu.registered_delivery,
            concat=concat,
            payload=payload,
        )
        self.submits.append(record)
        self._schedule_receipt(record, datetime.now())
        return SubmitSmResp(sequence_number=seq, message_id=message_id)

    @staticmethod
    def _concat_and_payload(pdu: SubmitSm) -> tuple[ConcatInfo | None, bytes]:
        body = bytes(pdu.short_message)
        if not body and pdu.message_payload is not None:
            body = pdu.message_payload
        if pdu.esm_class & EsmClass.UDHI:
            return split_udh(body)
        ref, total, seq = pdu.sar_msg_ref_num, pdu.sar_total_segments, pdu.sar_segment_seqnum
        if ref is not None and total is not None and seq is not None and 1 <= seq <= total:
            return ConcatInfo(ref, total, seq, 16), body
        return None, body

    def _outcome(self, destination: str) -> Outcome:
        if destination in self.config.invalid_numbers:
            return "undeliverable"
        weights = self.config.outcome_weights()
        return self._rng.choices(list(weights), weights=list(weights.values()))[0]

    def _schedule_receipt(self, record: ReceivedSubmit, submitted: datetime) -> None:
        wanted = record.registered_delivery & 0x03
        outcome = self._outcome(record.destination)
        if wanted == 0 or outcome == "no_receipt":
            return
        if wanted == 2 and outcome == "delivered":  # receipt on failure only
            return
        if wanted == 3:  # reserved value: no receipt
            return
        stat, err = _OUTCOME_STAT[outcome], OUTCOME_ERR[outcome]
        self.receipts.append(SentReceipt(record.system_id, record.message_id, stat, err))
        self._spawn(self._receipt_later(record, outcome, submitted))

    async def _receipt_later(
        self, record: ReceivedSubmit, outcome: Outcome, submitted: datetime
    ) -> None:
        await asyncio.sleep(self.config.receipt_delay)
        sample = _decode_text(record.payload, record.data_coding)[:20]
        text = format_receipt_text(
            Receipt(
                message_id=record.message_id,
                submitted=1,
                delivered=1 if outcome == "delivered" else 0,
                submit_date=submitted,
                done_date=datetime.now(),
                stat=_OUTCOME_STAT[outcome],
                err=OUTCOME_ERR[outcome],
                text=sample if sample.isascii() and sample.isprintable() else "",
            )
        )
        receipt = DeliverSm(
            source_addr=record.destination,
            destination_addr=record.source,
            esm_class=EsmClass.MC_DELIVERY_RECEIPT,
            data_coding=DataCoding.SMSC_DEFAULT,
            short_message=text.encode("ascii"),
            tlvs=[
                Tlv.c_string(TlvTag.RECEIPTED_MESSAGE_ID, record.message_id),
                Tlv.u8(TlvTag.MESSAGE_STATE, _OUTCOME_STATE[outcome]),
            ],
        )
        await self._deliver(record.system_id, receipt)

    async def _deliver(self, system_id: str, pdu: DeliverSm) -> None:
        """Send a receipt to a receiver bind, or park it until one binds."""
        session = self._pick_receiver(system_id)
        if session is None:
            self._waiting.setdefault(system_id, deque()).append(pdu)
            return
        try:
            await session.request(pdu)
        except (ConnectionError, TimeoutError):
            # Lost with the connection (or never acknowledged): try again on the next bind.
            self._waiting.setdefault(system_id, deque()).append(pdu)

    # ------------------------------------------------------------------ MO

    async def inject_mo(self, system_id: str, source: str, destination: str, text: str) -> int:
        """Send a mobile-originated deliver_sm to a receiver bind of ``system_id``.

        Returns the ``command_status`` of the ESME's deliver_sm_resp. Raises LookupError when
        no receiver/transceiver of that system_id is bound.
        """
        session = self._pick_receiver(system_id)
        if session is None:
            raise LookupError(f"no receiver bind for system_id {system_id!r}")
        data_coding, body = _encode_text(text)
        pdu = DeliverSm(
            source_addr=source,
            destination_addr=destination,
            esm_class=0,
            data_coding=data_coding,
        )
        if len(body) <= 254:
            pdu.short_message = body
        else:
            pdu.tlvs = [Tlv(TlvTag.MESSAGE_PAYLOAD, body)]
        resp = await session.request(pdu)
        if resp.command_id == CommandId.GENERIC_NACK:
            return resp.command_status or CommandStatus.ESME_RUNKNOWNERR
        return resp.command_status

    # ------------------------------------------------------------------ inspection

    def reassembled(self) -> list[ReassembledMessage]:
        """Accepted submits joined into whole messages, in order of their first part.

        Parts are grouped by (system_id, source, destination, concat reference, total);
        a duplicate part number keeps the first copy.
        """
        groups: dict[tuple[object, ...], list[ReceivedSubmit]] = {}
        out: list[tuple[object, ...]] = []
        for index, sub in enumerate(self.submits):
            c = sub.concat
            key: tuple[object, ...]
            if c is None or c.total == 1:
                key = ("single", index)
            else:
                key = (
                    sub.system_id,
                    sub.source,
                    sub.destination,
                    c.reference_bits,
                    c.reference,
                    c.total,
                )
            if key not in groups:
                groups[key] = []
                out.append(key)
            groups[key].append(sub)
        result: list[ReassembledMessage] = []
        for key in out:
            parts = groups[key]
            first = parts[0]
            total = first.concat.total if first.concat is not None else 1
            by_seq: dict[int, ReceivedSubmit] = {}
            for part in parts:
                seq = part.concat.seq if part.concat is not None else 1
                by_seq.setdefault(seq, part)
            ordered = [by_seq[s] for s in sorted(by_seq)]
            text = _decode_text(b"".join(p.payload for p in ordered), first.data_coding)
            result.append(
                ReassembledMessage(
                    system_id=first.system_id,
                    source=first.source,
                    destination=first.destination,
                    text=text,
                    message_ids=tuple(p.message_id for p in ordered),
                    complete=len(by_seq) == total,
                )
            )
        return result
