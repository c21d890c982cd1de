"""Sandbox SMSC: the server side of SMPP 3.4 over asyncio, for development and tests.

It behaves like a carrier gateway, well-mannered unless told otherwise:

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

Simulated recipients (:attr:`SandboxConfig.reply_rate`): when a message is delivered (the part
that completes it has the outcome ``delivered``), its recipient replies with that probability,
with one of :attr:`SandboxConfig.reply_texts`: a mobile-originated ``deliver_sm`` from the
destination to the message's source, sent after the receipt to a receiver bind of the same
system_id (kept until one binds).

Fault modes, all off by default:

* ``drop_every`` N: the Nth PDU received on a connection (counting every PDU, the bind and the
  ESME's responses included) is processed but not answered and the connection is aborted, with
  no unbind. A ``submit_sm`` dropped this way is accepted and recorded: the carrier took it and
  the answer was lost, which is exactly the case an ESME cannot tell from a lost request.
* ``late_rate`` / ``late_delay``: that fraction of ``submit_sm`` is answered after the delay,
  so responses come out of order (and time out at the ESME when the delay is long enough).
* ``error_rate`` / ``error_status``: that fraction of ``submit_sm`` is refused with the given
  ``command_status`` and no message id (not recorded as a submit).
* ``malformed_every`` N: after answering every Nth ``submit_sm`` on a connection the sandbox
  writes a malformed PDU to the ESME: ``malformed_kind`` ``length`` (a command_length below the
  16-octet header: the stream's framing is lost) or ``body`` (a ``deliver_sm`` whose
  service_type never ends: framing intact, the body unusable).

What the sandbox received is kept in memory (:attr:`SandboxSmsc.submits`, ``receipts``,
``replies``, ``faults``) and, with :attr:`SandboxConfig.record_path`, appended to a file as one
JSON object per line, flushed as written, so that another process can count what the carrier
received even after the platform's processes were killed: ``submit`` (each accepted
``submit_sm``), ``receipt`` and ``reply`` (each acknowledged by the ESME), ``fault``. Read it
with :func:`read_record`; :func:`reassemble_record` joins long messages as
:meth:`SandboxSmsc.reassembled` does.

Everything random comes from generators seeded with :attr:`SandboxConfig.seed`, one per concern
(receipt outcomes, late answers, error answers, replies), so turning one on does not change the
others' draws.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import math
import os
import random
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

from hongyan.channels.sandbox.shoppers import ShopperConfig, Shoppers
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
from hongyan.errors import ValidationFailed

__all__ = [
    "DEFAULT_REPLY_TEXTS",
    "OUTCOME_ERR",
    "Fault",
    "ReassembledMessage",
    "ReceivedSubmit",
    "SandboxConfig",
    "SandboxConfigError",
    "SandboxSmsc",
    "SentReceipt",
    "SimulatedReply",
    "read_record",
    "reassemble_record",
]

log = logging.getLogger(__name__)

Outcome = Literal["delivered", "undeliverable", "expired", "rejected", "no_receipt"]
BindMode = Literal["transmitter", "receiver", "transceiver"]
MalformedKind = Literal["length", "body"]
FaultKind = Literal["drop", "late", "error", "malformed"]

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
#: What simulated recipients answer: two opt-outs and two messages for the inbox.
DEFAULT_REPLY_TEXTS: tuple[str, ...] = ("TD", "退订", "好的，谢谢", "请问几点关门？")
_RESPONSE_TIMEOUT = 30.0
_REDELIVER_AFTER = 1.0  # seconds before a deliver_sm answered ESME_RX_T_APPN goes again
_READ_CHUNK = 65536
_HIGH_WATER = 1 << 20  # bytes waiting for the socket before a sender waits for them to drain
_FOLLOW_UP_GRAIN = 0.005  # receipts and replies go out in batches at most this much apart
_SENDING_MODES = ("transmitter", "transceiver")


class SandboxConfigError(ValidationFailed, ValueError):
    """A sandbox setting that cannot work (also a ValueError for library callers)."""

    code = "sandbox_config_invalid"
    message_zh = "运营商沙箱配置无效"
    message_en = "The carrier sandbox configuration is not valid"


def _require(ok: bool, en: str, zh: str) -> None:
    if not ok:
        raise SandboxConfigError(en, zh)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_rate(value: float) -> bool:
    return isinstance(value, int | float) and 0.0 <= value <= 1.0


def _is_delay(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


@dataclass
class SandboxConfig:
    """How the sandbox SMSC behaves. Outcome weights need not sum to 1; faults are off (0)."""

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
    #: Abort a connection on every Nth PDU received on it (0: never; at least 2, the bind
    #: being the first PDU).
    drop_every: int = 0
    #: Fraction of submit_sm answered ``late_delay`` seconds late.
    late_rate: float = 0.0
    late_delay: float = 0.0
    #: Fraction of submit_sm refused with ``error_status``.
    error_rate: float = 0.0
    error_status: int = CommandStatus.ESME_RSYSERR
    #: Write a malformed PDU after every Nth submit_sm on a connection (0: never).
    malformed_every: int = 0
    malformed_kind: MalformedKind = "length"
    #: Probability that the recipient of a delivered message replies.
    reply_rate: float = 0.0
    reply_texts: tuple[str, ...] = DEFAULT_REPLY_TEXTS
    #: Seconds between the receipt and the reply.
    reply_delay: float = 0.0
    #: Append one JSON line per accepted submit, receipt, reply and fault to this file.
    record_path: str | os.PathLike[str] | None = None
    #: Simulated shoppers who click links and buy with coupons (``shoppers.py``); None: off.
    shoppers: ShopperConfig | None = None

    def __post_init__(self) -> None:
        weights = self.outcome_weights()
        _require(
            all(isinstance(w, int | float) and w >= 0 for w in weights.values())
            and sum(weights.values()) > 0,
            f"outcome weights must be >= 0 with a positive sum: {weights}",
            "回执结果的权重必须不小于 0，且总和大于 0",
        )
        _require(
            _is_delay(self.receipt_delay),
            "receipt_delay must be a number of seconds >= 0",
            "回执延迟必须是不小于 0 的秒数",
        )
        _require(
            self.throttle_per_second is None or self.throttle_per_second > 0,
            "throttle_per_second must be positive (or None for no limit)",
            "限速必须大于 0（不限速时留空）",
        )
        _require(
            _is_count(self.drop_every) and (self.drop_every == 0 or self.drop_every >= 2),
            "drop_every must be 0 (off) or a whole number >= 2",
            "断开间隔必须为 0（关闭）或不小于 2 的整数",
        )
        _require(
            _is_count(self.malformed_every) and self.malformed_every >= 0,
            "malformed_every must be 0 (off) or a whole number >= 1",
            "畸形报文间隔必须为 0（关闭）或正整数",
        )
        _require(
            self.malformed_kind in ("length", "body"),
            "malformed_kind must be 'length' or 'body'",
            "畸形报文类型必须是 length 或 body",
        )
        for name in ("late_rate", "error_rate", "reply_rate"):
            _require(
                _is_rate(getattr(self, name)),
                f"{name} must be between 0 and 1",
                f"{name} 必须在 0 到 1 之间",
            )
        for name in ("late_delay", "reply_delay"):
            _require(
                _is_delay(getattr(self, name)),
                f"{name} must be a number of seconds >= 0",
                f"{name} 必须是不小于 0 的秒数",
            )
        _require(
            _is_count(self.error_status) and 1 <= self.error_status <= 0xFFFFFFFF,
            "error_status must be a non-zero SMPP command_status (1..0xFFFFFFFF)",
            "错误状态码必须是非 0 的 SMPP command_status",
        )
        self.reply_texts = tuple(self.reply_texts)
        _require(
            all(isinstance(t, str) and t.strip() for t in self.reply_texts)
            and (self.reply_rate == 0 or bool(self.reply_texts)),
            "reply_texts must be non-empty texts (at least one when reply_rate > 0)",
            "回复内容不能为空（回复概率大于 0 时至少要有一条）",
        )

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
    #: Which bind it came in on (bind numbers count up from 1 over the sandbox's life).
    bind: int = 0
    source_ton: int = 0
    destination_ton: int = 0


@dataclass(frozen=True)
class SentReceipt:
    """A delivery receipt the sandbox decided on (sent, or waiting for a receiver bind)."""

    system_id: str
    message_id: str
    stat: str
    err: str


@dataclass(frozen=True)
class SimulatedReply:
    """A reply a simulated recipient decided to send (sent, or waiting for a receiver bind)."""

    system_id: str
    source: str  # the recipient: the destination of the message replied to
    destination: str  # the message's source address
    text: str
    message_id: str  # the carrier id of the part that completed the message replied to


@dataclass(frozen=True)
class Fault:
    """A fault the sandbox injected."""

    kind: FaultKind
    system_id: str
    bind: int
    message_id: str = ""  # the submit concerned, when one was accepted
    status: int = 0  # the command_status of an error answer


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


class _Part(NamedTuple):
    """What reassembly needs of one submit, from memory or from a record file."""

    system_id: str
    source: str
    destination: str
    concat: ConcatInfo | None
    message_id: str
    payload: bytes
    data_coding: int


def _reassemble(parts: Iterable[_Part]) -> list[ReassembledMessage]:
    """Join parts into whole messages, in order of their first part.

    Parts are grouped by (system_id, source, destination, concat reference, total);
    a duplicate part number keeps the first copy.
    """
    groups: dict[tuple[object, ...], list[_Part]] = {}
    for index, part in enumerate(parts):
        c = part.concat
        key: tuple[object, ...]
        if c is None or c.total == 1:
            key = ("single", index)
        else:
            key = (
                part.system_id,
                part.source,
                part.destination,
                c.reference_bits,
                c.reference,
                c.total,
            )
        groups.setdefault(key, []).append(part)
    result: list[ReassembledMessage] = []
    for group in groups.values():  # dicts keep insertion order: order of first parts
        first = group[0]
        total = first.concat.total if first.concat is not None else 1
        by_seq: dict[int, _Part] = {}
        for part in group:
            by_seq.setdefault(part.concat.seq if part.concat is not None else 1, part)
        ordered = [by_seq[s] for s in sorted(by_seq)]
        result.append(
            ReassembledMessage(
                system_id=first.system_id,
                source=first.source,
                destination=first.destination,
                text=_decode_text(b"".join(p.payload for p in ordered), first.data_coding),
                message_ids=tuple(p.message_id for p in ordered),
                complete=len(by_seq) == total,
            )
        )
    return result


# --------------------------------------------------------------------------- the record file


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class _Record:
    """The append-only JSON-lines file; every line is flushed to the OS as it is written."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._fh: IO[str] = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise SandboxConfigError(
                f"cannot open the record file {self.path}: {exc.strerror or exc}",
                f"无法打开记录文件 {self.path}：{exc.strerror or exc}",
            ) from exc

    def write(self, kind: str, fields: Mapping[str, Any]) -> None:
        row = {"kind": kind, "time": _now(), **fields}
        self._fh.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_record(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every row of a record file, in the order written.

    A last line without its newline is still being written (or was cut by a kill) and is left
    out; any other line that is not a JSON object with a ``kind`` raises ValueError.
    """
    data = Path(path).read_bytes()
    rows: list[dict[str, Any]] = []
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: line {number} is not a JSON record row") from exc
        if not isinstance(row, dict) or not isinstance(row.get("kind"), str):
            raise ValueError(f"{path}: line {number} is not a sandbox record row")
        rows.append(row)
    return rows


def reassemble_record(rows: Iterable[Mapping[str, Any]]) -> list[ReassembledMessage]:
    """The ``submit`` rows of a record joined into whole messages (see ``reassembled``)."""
    parts: list[_Part] = []
    for row in rows:
        if row.get("kind") != "submit":
            continue
        c = row.get("concat")
        concat = (
            None
            if c is None
            else ConcatInfo(int(c["ref"]), int(c["total"]), int(c["seq"]), int(c["bits"]))  # type: ignore[arg-type]
        )
        parts.append(
            _Part(
                system_id=str(row["system_id"]),
                source=str(row["source"]),
                destination=str(row["destination"]),
                concat=concat,
                message_id=str(row["message_id"]),
                payload=bytes.fromhex(str(row["payload"])),
                data_coding=int(row["data_coding"]),
            )
        )
    return _reassemble(parts)


def _submit_row(record: ReceivedSubmit) -> dict[str, Any]:
    c = record.concat
    return {
        "system_id": record.system_id,
        "bind": record.bind,
        "source": record.source,
        "destination": record.destination,
        "message_id": record.message_id,
        "data_coding": record.data_coding,
        "registered_delivery": record.registered_delivery,
        "concat": (
            None
            if c is None
            else {"ref": c.reference, "total": c.total, "seq": c.seq, "bits": c.reference_bits}
        ),
        "text": _decode_text(record.payload, record.data_coding),
        "payload": record.payload.hex(),
    }


@dataclass
class _Outbound:
    """A deliver_sm on its way to a receiver bind, and the record row to write once acked."""

    pdu: DeliverSm
    kind: str
    row: dict[str, Any]


#: What a request's callback receives: the response, or why there is none (ConnectionError when
#: the session closed, TimeoutError when no answer came in time).
Answer = Pdu | Exception


@dataclass
class _Waiting:
    """A request of ours (a deliver_sm) waiting for the ESME's response."""

    done: Callable[[Answer], None]
    deadline: float


def _malformed_pdu(kind: MalformedKind, sequence_number: int) -> bytes:
    if kind == "length":
        # command_length 8: shorter than the header that contains it; framing is lost.
        return (8).to_bytes(4, "big") + int(CommandId.DELIVER_SM).to_bytes(4, "big")
    body = b"CMT"  # service_type with no terminating NUL before the end of the body
    return (
        (16 + len(body)).to_bytes(4, "big")
        + int(CommandId.DELIVER_SM).to_bytes(4, "big")
        + bytes(4)
        + sequence_number.to_bytes(4, "big")
        + body
    )


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
        self._pending: dict[int, _Waiting] = {}
        self._out: list[bytes] = []
        self.closed = False
        self.received = 0  # PDUs received (drop_every counts these)
        self.submits_answered = 0  # submit_sm answered while bound (malformed_every)
        self._abort = False

    @property
    def can_receive(self) -> bool:
        return self.mode in ("receiver", "transceiver")

    def write(self, data: bytes) -> None:
        """Queue bytes for the ESME, in order. What is written in one turn of the event loop
        leaves in one send (a window of submit_sm_resp, a batch of receipts: one system call)."""
        if self.closed:
            raise ConnectionError("session closed")
        self._out.append(data)
        if len(self._out) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and not self.closed:
            self.writer.write(b"".join(out))

    async def send(self, pdu: Pdu) -> None:
        await self.send_raw(encode(pdu))

    async def send_raw(self, data: bytes) -> None:
        self.write(data)
        if self.writer.transport.get_write_buffer_size() > _HIGH_WATER:
            await self.writer.drain()  # an ESME that does not read holds its sender up

    def _next_seq(self) -> int:
        # Sequence numbers run 1..0x7FFFFFFF (SMPP 3.4 section 5.1.4), then wrap.
        return (next(self._seq) - 1) % 0x7FFFFFFF + 1

    def request_nowait(
        self, pdu: Pdu, done: Callable[[Answer], None], timeout: float = _RESPONSE_TIMEOUT
    ) -> None:
        """Send a server-originated request; ``done`` gets the response or the reason for none.

        Raises ConnectionError (and ``done`` is never called) when the session is closed.
        """
        pdu.sequence_number = self._next_seq()
        data = encode(pdu)
        self.write(data)
        deadline = asyncio.get_running_loop().time() + timeout
        self._pending[pdu.sequence_number] = _Waiting(done, deadline)

    async def request(self, pdu: Pdu, timeout: float = _RESPONSE_TIMEOUT) -> Pdu:
        """Send a server-originated request and wait for its response."""
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()

        def done(answer: Answer) -> None:
            if future.done():
                return
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)

        self.request_nowait(pdu, done, timeout)
        return await future

    def _answer(self, sequence_number: int, answer: Answer) -> None:
        waiting = self._pending.pop(sequence_number, None)
        if waiting is None:
            return
        try:
            waiting.done(answer)
        except Exception:
            log.exception("sandbox smsc: handling the answer to request %d failed", sequence_number)

    async def _expire_unanswered(self) -> None:
        """Requests unanswered past their deadline get a TimeoutError (one sweep a second,
        not a timer per request)."""
        loop = asyncio.get_running_loop()
        while not self.closed:
            await asyncio.sleep(min(1.0, _RESPONSE_TIMEOUT / 4))
            now = loop.time()
            late = [seq for seq, w in self._pending.items() if w.deadline <= now]
            for seq in late:
                self._answer(seq, TimeoutError(f"no answer to request {seq} in time"))

    async def run(self) -> None:
        pdu_reader = PduReader()
        expiry = asyncio.get_running_loop().create_task(self._expire_unanswered())
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
            expiry.cancel()
            await self.close(abort=self._abort)

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
        self.received += 1
        every = self.smsc.config.drop_every
        if every and self.received % every == 0:
            return self._drop(pdu)
        seq = pdu.sequence_number
        if pdu.command_id & 0x80000000:  # a response (or generic_nack) to our request
            self._resolve(pdu)
            return True
        if isinstance(pdu, Bind):
            return await self._bind(pdu)
        if isinstance(pdu, SubmitSm):
            await self._submit(pdu)
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

    def _resolve(self, pdu: Pdu) -> None:
        self._answer(pdu.sequence_number, pdu)

    def _drop(self, pdu: Pdu) -> bool:
        """drop_every: take this PDU in, answer nothing, and abort the connection."""
        if pdu.command_id & 0x80000000:
            self._resolve(pdu)
        elif isinstance(pdu, SubmitSm):
            self.smsc._accept(self, pdu, answered=False)  # the answer is what gets lost
        self.smsc._fault(self, "drop")
        log.info("sandbox smsc: dropping bind %d after %d PDUs", self.bind_order, self.received)
        self._abort = True
        return False

    async def _submit(self, pdu: SubmitSm) -> None:
        resp, late = self.smsc._accept(self, pdu)
        if late:
            self.smsc._spawn(self._answer_late(resp))
        else:
            await self.send(resp)
        if self.mode not in _SENDING_MODES:
            return
        self.submits_answered += 1
        every = self.smsc.config.malformed_every
        if every and self.submits_answered % every == 0:
            await self.send_raw(_malformed_pdu(self.smsc.config.malformed_kind, self._next_seq()))
            self.smsc._fault(self, "malformed")
            log.info("sandbox smsc: malformed PDU written to bind %d", self.bind_order)

    async def _answer_late(self, resp: SubmitSmResp) -> None:
        await asyncio.sleep(self.smsc.config.late_delay)
        with contextlib.suppress(ConnectionError, OSError):
            await self.send(resp)

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

    async def close(self, *, abort: bool = False) -> None:
        """Close the connection; ``abort`` drops it at once (what a crashed peer looks like)."""
        if self.closed:
            return
        self._flush()  # what was answered before the close still leaves, as it would have
        self.closed = True
        self.smsc._session_closed(self)
        for seq in list(self._pending):
            self._answer(seq, ConnectionError("session closed"))
        if abort:
            self.writer.transport.abort()
        else:
            self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class SandboxSmsc:
    """A sandbox SMPP 3.4 SMSC. ``await start()`` returns the (host, port) it listens on."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.submits: list[ReceivedSubmit] = []
        self.receipts: list[SentReceipt] = []
        self.replies: list[SimulatedReply] = []
        self.faults: list[Fault] = []
        seed = self.config.seed
        # Simulation, not crypto; one generator per concern (see the module docstring).
        self._rng = random.Random(seed)  # noqa: S311 - receipt outcomes
        self._late_rng = random.Random(f"{seed}:late")  # noqa: S311
        self._error_rng = random.Random(f"{seed}:error")  # noqa: S311
        self._reply_rng = random.Random(f"{seed}:reply")  # noqa: S311
        self._ids = itertools.count(1)
        self._bind_counter = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._rr: dict[str, int] = {}
        self._buckets: dict[str, _TokenBucket] = {}
        self._waiting: dict[str, deque[_Outbound]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._parts_seen: dict[tuple[object, ...], set[int]] = {}
        self._record: _Record | None = None
        # Receipts and replies waiting for their time: (loop time, order, what to do). One task
        # sends what is due, rather than a task and a timer per message.
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._due_order = itertools.count()
        self._due_added = asyncio.Event()
        self._cum_weights: tuple[tuple[float, ...], list[Outcome], list[float]] | None = None
        self.shoppers: Shoppers | None = None
        if self.config.shoppers is not None:
            self.shoppers = Shoppers(self.config.shoppers, self._write_record)
        self._shop_parts: dict[tuple[object, ...], dict[int, str]] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> tuple[str, int]:
        if self._server is not None:
            raise RuntimeError("sandbox SMSC already started")
        if self.config.record_path is not None:
            self._record = _Record(self.config.record_path)
        try:
            self._server = await asyncio.start_server(
                self._on_connect, self.config.host, self.config.port
            )
        except BaseException:
            self._close_record()
            raise
        self._spawn(self._send_due())
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
        if self.shoppers is not None:
            await self.shoppers.close()
        if server is not None:
            await server.wait_closed()
        self._close_record()

    def _close_record(self) -> None:
        record, self._record = self._record, None
        if record is not None:
            record.close()

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
            self._deliver(session.system_id, waiting.popleft())

    def _session_closed(self, session: _Session) -> None:
        self._sessions.discard(session)

    def _at(self, delay: float, action: Callable[[], None]) -> None:
        """Do ``action`` ``delay`` seconds from now (up to _FOLLOW_UP_GRAIN later)."""
        when = asyncio.get_running_loop().time() + delay
        order = next(self._due_order)
        heapq.heappush(self._due, (when, order, action))
        if self._due[0][1] == order:  # a new earliest: the sender may have to wake sooner
            self._due_added.set()

    async def _send_due(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._due:
                self._due_added.clear()
                await self._due_added.wait()
                continue
            wait = self._due[0][0] - loop.time()
            if wait > 0:
                self._due_added.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._due_added.wait(), max(wait, _FOLLOW_UP_GRAIN))
                continue
            now = loop.time()
            while self._due and self._due[0][0] <= now:
                _, _, action = heapq.heappop(self._due)
                try:
                    action()
                except Exception:
                    log.exception("sandbox smsc: a scheduled receipt or reply failed")
            await asyncio.sleep(_FOLLOW_UP_GRAIN)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _write_record(self, kind: str, row: Mapping[str, Any]) -> None:
        if self._record is not None:
            self._record.write(kind, row)

    def _fault(
        self, session: _Session, kind: FaultKind, *, message_id: str = "", status: int = 0
    ) -> None:
        fault = Fault(kind, session.system_id, session.bind_order, message_id, status)
        self.faults.append(fault)
        self._write_record(
            "fault",
            {
                "fault": kind,
                "system_id": fault.system_id,
                "bind": fault.bind,
                "message_id": message_id,
                "status": status,
            },
        )

    # ------------------------------------------------------------------ submit_sm

    def _accept(
        self, session: _Session, pdu: SubmitSm, *, answered: bool = True
    ) -> tuple[SubmitSmResp, bool]:
        """Decide on one submit_sm: its response, and whether to send that late."""
        seq = pdu.sequence_number
        if session.mode not in _SENDING_MODES:
            return (
                SubmitSmResp(sequence_number=seq, command_status=CommandStatus.ESME_RINVBNDSTS),
                False,
            )
        cfg = self.config
        if cfg.throttle_per_second is not None:
            now = asyncio.get_running_loop().time()
            bucket = self._buckets.setdefault(
                session.system_id, _TokenBucket(cfg.throttle_per_second, now)
            )
            if not bucket.take(now):
                return (
                    SubmitSmResp(sequence_number=seq, command_status=CommandStatus.ESME_RTHROTTLED),
                    False,
                )
        late = answered and cfg.late_rate > 0 and self._late_rng.random() < cfg.late_rate
        if cfg.error_rate > 0 and self._error_rng.random() < cfg.error_rate:
            if answered:
                self._fault(session, "error", status=cfg.error_status)
            if late:
                self._fault(session, "late")
            return SubmitSmResp(sequence_number=seq, command_status=cfg.error_status), late
        try:
            concat, payload = self._concat_and_payload(pdu)
        except PduError as exc:
            return SubmitSmResp(sequence_number=seq, command_status=int(exc.command_status)), late
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
            bind=session.bind_order,
            source_ton=pdu.source_addr_ton,
            destination_ton=pdu.dest_addr_ton,
        )
        self.submits.append(record)
        self._write_record("submit", _submit_row(record))
        if late:
            self._fault(session, "late", message_id=message_id)
        self._after_accept(record, datetime.now())
        return SubmitSmResp(sequence_number=seq, message_id=message_id), late

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
        key = tuple(weights.values())
        if self._cum_weights is None or self._cum_weights[0] != key:
            # What random.choices(weights=…) computes on every call, once per configuration
            # (the same draws for the same seed).
            self._cum_weights = (key, list(weights), list(itertools.accumulate(key)))
        _, names, cumulative = self._cum_weights
        return self._rng.choices(names, cum_weights=cumulative)[0]

    def _after_accept(self, record: ReceivedSubmit, submitted: datetime) -> None:
        """Decide the receipt and the recipient's reply now (in submit order), send them later."""
        outcome = self._outcome(record.destination)
        receipt = self._receipt_wanted(record, outcome)
        reply = self._reply_for(record, outcome)
        if self.shoppers is not None and outcome == "delivered":
            text = self._shop_text(record)
            if text is not None:
                self.shoppers.delivered(record.destination, text, self.config.receipt_delay)
        if receipt or reply is not None:
            self._at(
                self.config.receipt_delay,
                lambda: self._follow_up(record, outcome, submitted, receipt, reply),
            )

    def _receipt_wanted(self, record: ReceivedSubmit, outcome: Outcome) -> bool:
        wanted = record.registered_delivery & 0x03
        if wanted == 0 or outcome == "no_receipt":
            return False
        if wanted == 2 and outcome == "delivered":  # receipt on failure only
            return False
        if wanted == 3:  # reserved value: no receipt
            return False
        stat, err = _OUTCOME_STAT[outcome], OUTCOME_ERR[outcome]
        self.receipts.append(SentReceipt(record.system_id, record.message_id, stat, err))
        return True

    def _completes_message(self, record: ReceivedSubmit) -> bool:
        """True for a single-part message and for the part that completes a long one."""
        c = record.concat
        if c is None or c.total == 1:
            return True
        key = (
            record.system_id,
            record.source,
            record.destination,
            c.reference_bits,
            c.reference,
            c.total,
        )
        seen = self._parts_seen.setdefault(key, set())
        seen.add(c.seq)
        if len(seen) < c.total:
            return False
        del self._parts_seen[key]
        return True

    def _shop_text(self, record: ReceivedSubmit) -> str | None:
        """A delivered message's whole text once its last part is in (None before)."""
        text = _decode_text(record.payload, record.data_coding)
        c = record.concat
        if c is None or c.total == 1:
            return text
        key = (record.system_id, record.source, record.destination, c.reference, c.total)
        parts = self._shop_parts.setdefault(key, {})
        parts[c.seq] = text
        if len(parts) < c.total:
            return None
        del self._shop_parts[key]
        return "".join(parts[i] for i in sorted(parts))

    def _reply_for(self, record: ReceivedSubmit, outcome: Outcome) -> SimulatedReply | None:
        cfg = self.config
        if cfg.reply_rate <= 0 or not self._completes_message(record):
            return None
        if outcome != "delivered" or self._reply_rng.random() >= cfg.reply_rate:
            return None
        reply = SimulatedReply(
            system_id=record.system_id,
            source=record.destination,
            destination=record.source,
            text=self._reply_rng.choice(cfg.reply_texts),
            message_id=record.message_id,
        )
        self.replies.append(reply)
        return reply

    def _follow_up(
        self,
        record: ReceivedSubmit,
        outcome: Outcome,
        submitted: datetime,
        receipt: bool,
        reply: SimulatedReply | None,
    ) -> None:
        """The receipt, then (once it was answered, or parked) the recipient's reply."""

        def then() -> None:
            if reply is not None:
                self._at(self.config.reply_delay, lambda: self._send_reply(record, reply))

        if receipt:
            self._deliver(record.system_id, self._receipt(record, outcome, submitted), then)
        else:
            then()

    def _send_reply(self, record: ReceivedSubmit, reply: SimulatedReply) -> None:
        pdu = _mo_pdu(
            reply.source,
            reply.destination,
            reply.text,
            source_ton=record.destination_ton,
            destination_ton=record.source_ton,
        )
        row = {
            "system_id": reply.system_id,
            "source": reply.source,
            "destination": reply.destination,
            "text": reply.text,
            "message_id": reply.message_id,
            "injected": False,
        }
        self._deliver(record.system_id, _Outbound(pdu, "reply", row))

    def _receipt(self, record: ReceivedSubmit, outcome: Outcome, submitted: datetime) -> _Outbound:
        sample = _decode_text(record.payload, record.data_coding)[:20]
        stat, err = _OUTCOME_STAT[outcome], OUTCOME_ERR[outcome]
        text = format_receipt_text(
            Receipt(
                message_id=record.message_id,
                submitted=1,
                delivered=1 if outcome == "delivered" else 0,
                submit_date=submitted,
                done_date=datetime.now(),
                stat=stat,
                err=err,
                text=sample if sample.isascii() and sample.isprintable() else "",
            )
        )
        pdu = DeliverSm(
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
        row = {"system_id": record.system_id, "message_id": record.message_id}
        return _Outbound(pdu, "receipt", {**row, "stat": stat, "err": err})

    def _deliver(
        self, system_id: str, outbound: _Outbound, then: Callable[[], None] | None = None
    ) -> None:
        """Send a deliver_sm to a receiver bind, or park it until one binds; ``then`` runs once
        it is answered, parked or put off."""
        session = self._pick_receiver(system_id)
        if session is None:
            self._waiting.setdefault(system_id, deque()).append(outbound)
            if then is not None:
                then()
            return

        def answered(answer: Answer) -> None:
            if isinstance(answer, Exception):
                # Lost with the connection (or never acknowledged): again on the next bind.
                self._waiting.setdefault(system_id, deque()).append(outbound)
            elif answer.command_status == CommandStatus.ESME_RX_T_APPN:
                # The ESME could not take it in just now (its database, say): again a bit
                # later, as a carrier does.
                self._at(_REDELIVER_AFTER, lambda: self._deliver(system_id, outbound))
            else:
                self._write_record(outbound.kind, {**outbound.row, "bind": session.bind_order})
            if then is not None:
                then()

        try:
            session.request_nowait(outbound.pdu, answered)
        except ConnectionError:
            answered(ConnectionError("session closed"))

    # ------------------------------------------------------------------ MO

    async def inject_mo(self, system_id: str, source: str, destination: str, text: str) -> int:
        """Send a mobile-originated deliver_sm to a receiver bind of ``system_id``.

        Returns the ``command_status`` of the ESME's deliver_sm_resp. Raises LookupError when
        no receiver/transceiver of that system_id is bound.
        """
        session = self._pick_receiver(system_id)
        if session is None:
            raise LookupError(f"no receiver bind for system_id {system_id!r}")
        resp = await session.request(_mo_pdu(source, destination, text))
        row = {
            "system_id": system_id,
            "source": source,
            "destination": destination,
            "text": text,
            "message_id": "",
            "injected": True,
            "bind": session.bind_order,
        }
        self._write_record("reply", row)
        if resp.command_id == CommandId.GENERIC_NACK:
            return resp.command_status or CommandStatus.ESME_RUNKNOWNERR
        return resp.command_status

    # ------------------------------------------------------------------ inspection

    def bound(self, system_id: str | None = None) -> int:
        """How many connections are bound now (of ``system_id``, or of any account)."""
        return sum(
            1
            for s in self._sessions
            if s.mode is not None and not s.closed and system_id in (None, s.system_id)
        )

    def reassembled(self) -> list[ReassembledMessage]:
        """Accepted submits joined into whole messages, in order of their first part.

        Parts are grouped by (system_id, source, destination, concat reference, total);
        a duplicate part number keeps the first copy.
        """
        return _reassemble(
            _Part(
                s.system_id,
                s.source,
                s.destination,
                s.concat,
                s.message_id,
                s.payload,
                s.data_coding,
            )
            for s in self.submits
        )


def _mo_pdu(
    source: str, destination: str, text: str, *, source_ton: int = 0, destination_ton: int = 0
) -> DeliverSm:
    """A mobile-originated deliver_sm: GSM-7 where the text allows, else UCS-2."""
    data_coding, body = _encode_text(text)
    pdu = DeliverSm(
        source_addr_ton=source_ton,
        source_addr_npi=1 if source_ton == 1 else 0,
        source_addr=source,
        dest_addr_ton=destination_ton,
        dest_addr_npi=1 if destination_ton == 1 else 0,
        destination_addr=destination,
        esm_class=0,
        data_coding=data_coding,
    )
    if len(body) <= 254:
        pdu.short_message = body
    else:
        pdu.tlvs = [Tlv(TlvTag.MESSAGE_PAYLOAD, body)]
    return pdu
