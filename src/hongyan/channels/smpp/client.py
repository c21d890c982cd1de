"""The ESME side of SMPP 3.4 on asyncio: one bind, windowed submits, receipts and replies.

A :class:`SmppClient` owns one TCP connection bound as a transceiver (or transmitter). It keeps at
most ``window`` requests outstanding (the specification suggests 10; carriers answer
ESME_RMSGQFUL beyond their own limit), sends ``enquire_link`` when the line is idle, and hands
every ``deliver_sm`` to a callback: delivery receipts (esm_class 0x04) as :class:`Report`, and
mobile-originated messages as :class:`Inbound`. A malformed PDU from the carrier closes the bind
(logged as a warning): what follows it on that stream cannot be trusted; a well-framed PDU with an
unknown command only gets a ``generic_nack``. Reconnection and pacing across binds belong to the
dispatcher's channel pool, which decides what a lost bind means for messages in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from hongyan.channels.base import Inbound, Report
from hongyan.channels.smpp import pdu as P
from hongyan.content.encoding import decode_gsm7_unpacked, encode_segments, plan

log = logging.getLogger("hongyan.channels.smpp")

IdStyle = Literal["hex", "decimal", "verbatim"]


@dataclass(frozen=True)
class SmppConfig:
    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    bind: Literal["transceiver", "transmitter", "receiver"] = "transceiver"
    window: int = 10
    enquire_interval: float = 30.0
    response_timeout: float = 10.0
    source_addr: str = ""
    # How this carrier writes ids in submit_sm_resp and in receipts (see normalise_message_id).
    resp_id_style: IdStyle = "hex"
    receipt_id_style: IdStyle = "hex"


class SmppError(Exception):
    def __init__(self, message: str, status: int, accepted: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.accepted = accepted or []  # carrier ids of the parts accepted before the refusal

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT_STATUSES


class Throttled(SmppError):
    """The carrier asked us to slow down (ESME_RTHROTTLED / ESME_RMSGQFUL)."""


THROTTLE_STATUSES = frozenset({P.CommandStatus.ESME_RTHROTTLED, P.CommandStatus.ESME_RMSGQFUL})
TRANSIENT_STATUSES = THROTTLE_STATUSES | {P.CommandStatus.ESME_RSYSERR}


def smpp_address(e164: str) -> tuple[int, int, str]:
    """(ton, npi, digits) for an E.164 number: international, ISDN plan."""
    return (1, 1, e164.removeprefix("+")) if e164.startswith("+") else (0, 1, e164)


def decode_text(data_coding: int, payload: bytes) -> str:
    if data_coding == P.DataCoding.UCS2:
        return payload.decode("utf-16-be", errors="replace")
    if data_coding == 0:
        try:
            return decode_gsm7_unpacked(payload)
        except ValueError:
            return payload.decode("latin-1")
    return payload.decode("latin-1")


@dataclass
class _Pending:
    future: asyncio.Future[P.Pdu]
    request: P.Pdu = field(repr=False)
    deadline: float = 0.0  # loop time after which the request fails unanswered


class SmppClient:
    def __init__(
        self,
        config: SmppConfig,
        *,
        on_report: Callable[[Report], Awaitable[None] | None] | None = None,
        on_inbound: Callable[[Inbound], Awaitable[None] | None] | None = None,
    ) -> None:
        self.config = config
        self._on_report = on_report
        self._on_inbound = on_inbound
        self._seq = itertools.count(1)
        self._ref = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._window = asyncio.Semaphore(config.window)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._deliveries: set[asyncio.Task[None]] = set()
        self._delivered: list[P.DeliverSm] = []  # deliver_sm read in this chunk, not yet taken
        self._last_io = 0.0
        self._out: list[bytes] = []
        self.closed = asyncio.Event()
        self._bound = False

    # -- connection --------------------------------------------------------------------------
    async def connect(self) -> None:
        cfg = self.config
        self._reader, self._writer = await asyncio.open_connection(cfg.host, cfg.port)
        self.closed.clear()
        self._last_io = asyncio.get_running_loop().time()
        self._tasks = [
            asyncio.create_task(self._read_loop()),
            asyncio.create_task(self._expire_unanswered()),
        ]
        bind_cls: type[P.Bind] = {
            "transceiver": P.BindTransceiver,
            "transmitter": P.BindTransmitter,
            "receiver": P.BindReceiver,
        }[cfg.bind]
        resp = await self._request(
            bind_cls(system_id=cfg.system_id, password=cfg.password, system_type=cfg.system_type)
        )
        if resp.command_status != P.CommandStatus.ESME_ROK:
            await self._drop()
            raise SmppError(f"bind refused: 0x{resp.command_status:08x}", resp.command_status)
        self._bound = True
        self._tasks.append(asyncio.create_task(self._keepalive()))

    @property
    def bound(self) -> bool:
        return self._bound and not self.closed.is_set()

    async def close(self) -> None:
        """Unbind politely, then close."""
        if self._writer is not None and not self.closed.is_set():
            with contextlib.suppress(SmppError, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self._request(P.Unbind()), self.config.response_timeout)
        await self._drop()

    async def _drop(self) -> None:
        """Close the connection once, whoever notices first; fail what was waiting on it."""
        if self.closed.is_set():
            return
        self.closed.set()
        for task in [*self._tasks, *self._deliveries]:
            if task is not asyncio.current_task():
                task.cancel()
        if self._writer is not None:
            self._flush_out()
            self._writer.close()
        self._fail_pending(SmppError("connection closed", P.CommandStatus.ESME_RSYSERR))

    def _fail_pending(self, exc: Exception) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(exc)
        self._pending.clear()

    # -- sending -----------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def submit(
        self, destination: str, text: str, *, receipt: bool = True, source: str | None = None
    ) -> list[str]:
        """Submit one message (split into parts as needed); returns each part's carrier id.

        Raises :class:`Throttled` or :class:`SmppError` when the carrier refuses a part; the ids
        of parts accepted before that are in the exception's ``accepted`` attribute.
        """
        text_plan = plan(text)
        payloads = encode_segments(text_plan)
        ton, npi, digits = smpp_address(destination)
        source_addr = self.config.source_addr if source is None else source
        src_ton = 1 if source_addr.startswith("+") else 0
        esm = 0
        ref = next(self._ref) & 0xFF
        ids: list[str] = []
        for n, payload in enumerate(payloads, start=1):
            if len(payloads) > 1:
                payload = P.udh_concat(ref, len(payloads), n) + payload
                esm = P.EsmClass.UDHI
            request = P.SubmitSm(
                source_addr_ton=src_ton,
                source_addr_npi=1,
                source_addr=source_addr.removeprefix("+"),
                dest_addr_ton=ton,
                dest_addr_npi=npi,
                destination_addr=digits,
                esm_class=esm,
                registered_delivery=1 if receipt else 0,
                data_coding=text_plan.data_coding,
                short_message=payload,
            )
            try:
                resp = await self._request(request)
            except SmppError as exc:  # lost connection, no answer in time: keep earlier parts
                exc.accepted = list(ids)
                raise
            if resp.command_status != P.CommandStatus.ESME_ROK:
                cls = Throttled if resp.command_status in THROTTLE_STATUSES else SmppError
                raise cls(
                    f"submit_sm refused: 0x{resp.command_status:08x}", resp.command_status, ids
                )
            assert isinstance(resp, P.SubmitSmResp)
            ids.append(P.normalise_message_id(resp.message_id, self.config.resp_id_style))
        return ids

    async def _request(self, request: P.Pdu) -> P.Pdu:
        if self._writer is None or self.closed.is_set():
            raise SmppError("not connected", P.CommandStatus.ESME_RSYSERR)
        async with self._window:
            # The connection may have gone while this request waited for a window slot.
            if self.closed.is_set():
                raise SmppError("connection closed", P.CommandStatus.ESME_RSYSERR)
            request.sequence_number = (next(self._seq) - 1) % 0x7FFFFFFF + 1
            try:
                data = P.encode(request)
            except P.PduError as exc:  # a field our side filled wrongly (too long, ...)
                raise SmppError(
                    f"cannot encode {type(request).__name__}: {exc.message}", exc.command_status
                ) from exc
            loop = asyncio.get_running_loop()
            future: asyncio.Future[P.Pdu] = loop.create_future()
            deadline = loop.time() + self.config.response_timeout
            self._pending[request.sequence_number] = _Pending(future, request, deadline)
            try:
                self._write_bytes(data)
                return await future
            finally:
                self._pending.pop(request.sequence_number, None)

    async def _expire_unanswered(self) -> None:
        """Fail requests left unanswered past the response timeout.

        One sweep a fraction of the timeout apart instead of a timer per request: every request
        has the same timeout and ``_pending`` keeps them in the order they were sent, so the
        sweep stops at the first that still has time (a timeout fires at most a quarter of the
        timeout late).
        """
        loop = asyncio.get_running_loop()
        every = min(1.0, self.config.response_timeout / 4)
        while True:
            await asyncio.sleep(every)
            now = loop.time()
            for pending in list(self._pending.values()):
                if pending.deadline > now:
                    break
                if not pending.future.done():
                    pending.future.set_exception(
                        SmppError("no response in time", P.CommandStatus.ESME_RSYSERR)
                    )

    def _write(self, message: P.Pdu) -> None:
        self._write_bytes(P.encode(message))

    def _write_bytes(self, data: bytes) -> None:
        # What is written in one turn of the event loop leaves in one send: a window of
        # submit_sm (or a burst of deliver_sm_resp) costs one system call, not one each.
        assert self._writer is not None
        self._out.append(data)
        if len(self._out) == 1:
            asyncio.get_running_loop().call_soon(self._flush_out)

    def _flush_out(self) -> None:
        out, self._out = self._out, []
        if out and self._writer is not None and not self._writer.is_closing():
            self._writer.write(b"".join(out))
            self._last_io = asyncio.get_running_loop().time()

    # -- receiving ---------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        assert self._reader is not None
        stream = P.PduReader()
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                self._last_io = asyncio.get_running_loop().time()
                while True:
                    try:
                        pdus = stream.feed(data)
                    except P.PduError as exc:
                        for earlier in exc.preceding:
                            await self._handle(earlier)
                        self._take_in_delivered()
                        unknown = exc.command_status == P.CommandStatus.ESME_RINVCMDID
                        if not exc.fatal:
                            self._write(
                                P.GenericNack(
                                    sequence_number=exc.sequence_number or 0,
                                    command_status=exc.command_status,
                                )
                            )
                        if exc.fatal or not unknown:
                            # A carrier that sends garbage cannot be trusted with what follows
                            # on this bind: close it (the channel binds again); others go on.
                            log.warning(
                                "malformed PDU from the carrier %s:%s, closing the bind: %s",
                                self.config.host,
                                self.config.port,
                                exc.message,
                            )
                            raise
                        log.info("unknown command from the carrier skipped: %s", exc.message)
                        data = b""
                        continue
                    for item in pdus:
                        await self._handle(item)
                    self._take_in_delivered()
                    break
        except (P.PduError, ConnectionError, OSError) as exc:
            log.warning(
                "SMPP connection to %s:%s lost: %s", self.config.host, self.config.port, exc
            )
        finally:
            await self._drop()

    async def _handle(self, item: P.Pdu) -> None:
        if item.command_id & 0x80000000:  # a response
            pending = self._pending.get(item.sequence_number)
            if pending is not None and not pending.future.done():
                pending.future.set_result(item)
            return
        if isinstance(item, P.EnquireLink):
            self._write(P.EnquireLinkResp(sequence_number=item.sequence_number))
        elif isinstance(item, P.Unbind):
            self._write(P.UnbindResp(sequence_number=item.sequence_number))
            await self._drop()
        elif isinstance(item, P.DeliverSm):
            self._delivered.append(item)  # taken in with the rest of the chunk
        else:
            self._write(
                P.GenericNack(
                    sequence_number=item.sequence_number,
                    command_status=P.CommandStatus.ESME_RINVCMDID,
                )
            )

    def _take_in_delivered(self) -> None:
        """Hand the deliver_sm of the chunk just read to the platform, in one task.

        Each is answered once the platform has stored it: a receipt acknowledged and then lost
        with a killed process would never come again, an unanswered one is sent again by the
        carrier. A task, so that reading goes on meanwhile; one for the chunk, not one each.
        """
        if not self._delivered:
            return
        items, self._delivered = self._delivered, []
        task = asyncio.create_task(self._deliver_and_answer(items))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver_and_answer(self, items: list[P.DeliverSm]) -> None:
        waits: list[Awaitable[None] | BaseException | None] = []
        for item in items:
            try:
                waits.append(self._deliver(item))
            except Exception as exc:
                waits.append(exc)
        pending = [w for w in waits if w is not None and not isinstance(w, BaseException)]
        outcomes = iter(await asyncio.gather(*pending, return_exceptions=True))
        for item, waited in zip(items, waits, strict=True):
            if waited is not None and not isinstance(waited, BaseException):
                waited = next(outcomes)
            status: int = P.CommandStatus.ESME_ROK
            if isinstance(waited, Exception):
                log.error(
                    "deliver_sm not taken in; asking the carrier to send it again",
                    exc_info=waited,
                )
                status = P.CommandStatus.ESME_RX_T_APPN
            elif isinstance(waited, BaseException):
                raise waited
            if not self.closed.is_set():
                self._write(
                    P.DeliverSmResp(sequence_number=item.sequence_number, command_status=status)
                )

    def _deliver(self, item: P.DeliverSm) -> Awaitable[None] | None:
        """Turn a deliver_sm into a report or an inbound message and hand it over; what it
        returns completes once the platform has stored it (None: nothing to wait for)."""
        if P.is_delivery_receipt(item.esm_class):
            raw = item.short_message.decode("latin-1")
            parsed = P.parse_receipt_text(raw)
            carrier_id = item.receipted_message_id or (parsed.message_id if parsed else "")
            if not carrier_id:
                log.warning("receipt without a message id dropped")
                return None
            state = (
                item.message_state
                if item.message_state is not None
                else (parsed.state if parsed else None)
            )
            report = Report(
                message_id=P.normalise_message_id(carrier_id, self.config.receipt_id_style),
                stat=parsed.stat if parsed else (P.state_to_stat(state) if state else "UNKNOWN"),
                err=parsed.err if parsed else "",
                state=int(state) if state is not None else None,
                raw=raw,
            )
            return self._on_report(report) if self._on_report else None
        _, payload = (
            P.split_udh(item.short_message)
            if item.esm_class & P.EsmClass.UDHI
            else (None, item.short_message)
        )
        inbound = Inbound(
            source=("+" if item.source_addr_ton == 1 else "") + item.source_addr,
            destination=item.destination_addr,
            text=decode_text(item.data_coding, payload),
        )
        return self._on_inbound(inbound) if self._on_inbound else None

    async def _keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closed.is_set():
            await asyncio.sleep(self.config.enquire_interval / 4)
            if loop.time() - self._last_io >= self.config.enquire_interval:
                try:
                    await self._request(P.EnquireLink())
                except SmppError:
                    await self._drop()
                    return
