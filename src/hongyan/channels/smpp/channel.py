"""An SMPP channel: several binds to one carrier account, kept up, as one :class:`Channel`.

``spec.config`` keys: ``host``, ``port``, ``system_id``, ``system_type``, ``source_addr`` (the
sender number; a tenant's extension code is appended to it), ``bind`` (``transceiver``: every bind
sends and receives; ``split``: ``binds`` transmitters and one receiver), ``resp_id_style`` /
``receipt_id_style`` (``hex``, ``decimal``, ``verbatim``: how this carrier writes message ids),
``enquire_interval``, ``response_timeout``, ``invalid_errs`` and ``blocked_errs`` (receipt ``err``
codes that mean 空号 / blocked on this carrier). ``spec.secrets["password"]`` is the password.

Each bind reconnects on its own with capped exponential backoff; a submit goes to the bound
transmitter with the fewest requests outstanding. A bind lost with submits in flight fails them
as transient (``connection closed``): whether the carrier took them is unknown, which is the
documented send-twice set (see :mod:`hongyan.dispatch.dispatcher`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable
from typing import Any, cast

from hongyan.channels.base import (
    ChannelSpec,
    Inbound,
    InboundSink,
    Outgoing,
    Report,
    ReportSink,
    SubmitError,
)
from hongyan.channels.smpp import pdu as P
from hongyan.channels.smpp.client import IdStyle, SmppClient, SmppConfig, SmppError
from hongyan.dispatch.states import Reason

log = logging.getLogger("hongyan.channels.smpp")

DEFAULT_INVALID_ERRS = ("001",)
DEFAULT_BLOCKED_ERRS: tuple[str, ...] = ()

_THROTTLE = {int(P.CommandStatus.ESME_RTHROTTLED), int(P.CommandStatus.ESME_RMSGQFUL)}
# Refusals about the destination number itself.
_BAD_NUMBER = {int(P.CommandStatus.ESME_RINVDSTADR)}


def reason_from_receipt(
    stat: str, err: str, invalid_errs: Iterable[str], blocked_errs: Iterable[str] = ()
) -> Reason | None:
    """Our reason for one receipt (None when delivered)."""
    stat = stat.upper()
    if stat == "DELIVRD":
        return None
    if stat == "EXPIRED":
        return Reason.EXPIRED
    if err in set(invalid_errs):
        return Reason.INVALID_NUMBER
    if err in set(blocked_errs):
        return Reason.BLOCKED
    if stat == "REJECTD":
        return Reason.REJECTED
    if stat == "UNKNOWN":
        return Reason.UNKNOWN
    return Reason.CARRIER_ERROR


def submit_error(exc: SmppError) -> SubmitError:
    """A refused submit_sm as the dispatcher understands it."""
    status = int(exc.status)
    if status in _THROTTLE:
        reason, transient = Reason.THROTTLED, True
    elif exc.transient:  # system error, no response in time, connection lost
        reason, transient = Reason.CARRIER_ERROR, True
    elif status in _BAD_NUMBER:
        reason, transient = Reason.INVALID_NUMBER, False
    else:
        reason, transient = Reason.REJECTED, False
    return SubmitError(
        str(exc),
        code=f"0x{status:08x}",
        reason=reason,
        transient=transient,
        accepted=list(exc.accepted),
    )


class SmppChannel:
    def __init__(self, spec: ChannelSpec) -> None:
        self.spec = spec
        cfg = spec.config
        self.invalid_errs = tuple(str(e) for e in cfg.get("invalid_errs", DEFAULT_INVALID_ERRS))
        self.blocked_errs = tuple(str(e) for e in cfg.get("blocked_errs", DEFAULT_BLOCKED_ERRS))
        self.source_addr = str(cfg.get("source_addr", ""))
        self.reconnect_max = float(cfg.get("reconnect_max", 30.0))
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: list[SmppClient | None] = []
        self._senders: list[int] = []  # indexes of the binds that may submit
        self._rr = 0
        self._on_report: ReportSink | None = None
        self._on_inbound: InboundSink | None = None

    def _config(self, bind: str) -> SmppConfig:
        cfg = self.spec.config
        return SmppConfig(
            host=str(cfg.get("host", "127.0.0.1")),
            port=int(cfg.get("port", 2775)),
            system_id=str(cfg.get("system_id", "")),
            password=str(self.spec.secrets.get("password", "")),
            system_type=str(cfg.get("system_type", "")),
            bind=cast(Any, bind),
            window=max(1, self.spec.window),
            enquire_interval=float(cfg.get("enquire_interval", 30.0)),
            response_timeout=float(cfg.get("response_timeout", 10.0)),
            source_addr=self.source_addr,
            resp_id_style=cast(IdStyle, cfg.get("resp_id_style", "hex")),
            receipt_id_style=cast(IdStyle, cfg.get("receipt_id_style", "hex")),
        )

    @property
    def ready(self) -> bool:
        return any(self._bound(i) for i in self._senders)

    def _bound(self, index: int) -> bool:
        client = self._clients[index]
        return client is not None and client.bound

    async def start(self, on_report: ReportSink, on_inbound: InboundSink) -> None:
        self._on_report, self._on_inbound = on_report, on_inbound
        split = self.spec.config.get("bind", "transceiver") == "split"
        modes = ["transmitter" if split else "transceiver"] * max(1, self.spec.binds)
        if split:
            modes.append("receiver")
        self._clients = [None] * len(modes)
        self._senders = [i for i, m in enumerate(modes) if m != "receiver"]
        self._tasks = [
            asyncio.create_task(self._keep_bound(i, mode), name=f"smpp:{self.spec.name}:{i}")
            for i, mode in enumerate(modes)
        ]

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until a sending bind is up (tests, the demo); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.ready:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def stop(self) -> None:
        """Each bind's own task unbinds and closes its client (one closer per client, so two
        closes never race); a task that does not finish in time is cancelled."""
        self._stop.set()
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(self._tasks, timeout=self._stop_timeout())
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _stop_timeout(self) -> float:
        return float(self.spec.config.get("response_timeout", 10.0)) + 1.0

    def _report(self, report: Report) -> Awaitable[None] | None:
        """Hand a receipt on with its reason; what it returns completes once it is stored."""
        # An intermediate notification (SMPP 3.4 message_state ENROUTE) says the carrier is still
        # trying: nothing to store, the final receipt follows. It is acknowledged as it is.
        if report.stat.upper() == "ENROUTE" or report.state == int(P.MessageState.ENROUTE):
            return None
        reason = reason_from_receipt(report.stat, report.err, self.invalid_errs, self.blocked_errs)
        if self._on_report is None:
            return None
        return self._on_report(
            Report(report.message_id, report.stat, report.err, report.state, report.raw, reason)
        )

    def _inbound(self, inbound: Inbound) -> Awaitable[None] | None:
        return None if self._on_inbound is None else self._on_inbound(inbound)

    async def _keep_bound(self, index: int, mode: str) -> None:
        delay = 0.5
        config = self._config(mode)
        while not self._stop.is_set():
            client = SmppClient(config, on_report=self._report, on_inbound=self._inbound)
            try:
                await client.connect()
            except (OSError, SmppError) as exc:
                log.warning(
                    "channel %s bind %d: cannot bind to %s:%s (%s); retry in %.1fs",
                    self.spec.name,
                    index,
                    config.host,
                    config.port,
                    exc,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(self.reconnect_max, delay * 2)
                continue
            log.info("channel %s bind %d (%s) up", self.spec.name, index, mode)
            delay = 0.5
            self._clients[index] = client
            stop_wait = asyncio.create_task(self._stop.wait())
            closed_wait = asyncio.create_task(client.closed.wait())
            try:
                await asyncio.wait({stop_wait, closed_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()
                closed_wait.cancel()
                self._clients[index] = None
                await client.close()
            if not self._stop.is_set():
                log.warning("channel %s bind %d lost; rebinding", self.spec.name, index)

    def _pick(self) -> SmppClient | None:
        bound = [c for i in self._senders if (c := self._clients[i]) is not None and c.bound]
        if not bound:
            return None
        # Fewest in flight; ties go round-robin (min keeps the first of equals).
        self._rr = (self._rr + 1) % len(bound)
        return min(bound[self._rr :] + bound[: self._rr], key=lambda c: c.in_flight)

    async def submit(self, message: Outgoing) -> list[str]:
        client = self._pick()
        if client is None:
            raise SubmitError(
                f"channel {self.spec.name}: no bind is up",
                code="unbound",
                reason=Reason.CARRIER_ERROR,
                transient=True,
            )
        try:
            return await client.submit(
                message.to,
                message.text,
                receipt=message.receipt,
                source=self.source_addr + message.source,
            )
        except SmppError as exc:
            raise submit_error(exc) from exc
