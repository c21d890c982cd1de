"""What the dispatcher needs of a channel: a carrier connection (SMPP) or a provider account (HTTP).

A channel is built from a :class:`ChannelSpec` (a row of the ``channels`` table with its secrets
decrypted). The dispatcher calls :meth:`Channel.start` once with two callbacks, then
:meth:`Channel.submit` for each message while :attr:`Channel.ready` is true; the channel keeps
itself connected (reconnect with backoff is the channel's job) and bounds what it has in flight
(``spec.window``). Pacing (``spec.rate``) is the dispatcher's job, shared by every kind.

Receipts and replies reach the platform in one of two ways, both ending in the same functions
(:mod:`hongyan.dispatch.receipts`, :mod:`hongyan.dispatch.replies`): over the channel's own
connection (SMPP ``deliver_sm``), handed to the ``on_report`` / ``on_inbound`` callbacks, or
pushed by the provider to ``/callbacks/{channel}/{token}`` on the API, parsed by the kind's
:class:`CallbackParser`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from hongyan.dispatch.states import Lane, Reason

#: The carriers a channel may reach; ``intl`` is any number outside mainland China.
CARRIERS = ("cmcc", "cucc", "ctcc", "cbn", "intl")


@dataclass(frozen=True)
class ChannelSpec:
    """A channel as configured by the operator (``hongyan channels add``)."""

    name: str
    kind: str
    config: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    rate: float = 0.0  # messages per second across all dispatchers; 0: no limit
    window: int = 10  # requests outstanding per bind / HTTP connection pool
    binds: int = 1
    carriers: frozenset[str] = frozenset()  # empty: every carrier
    price_per_part: Decimal = Decimal(0)
    currency: str = "CNY"
    enabled: bool = True
    priority: int = 100

    def reaches(self, carrier: str | None) -> bool:
        return not self.carriers or (carrier or "intl") in self.carriers


@dataclass(frozen=True)
class Outgoing:
    """One message as the dispatcher hands it to a channel."""

    message_id: int  # ours; HTTP providers echo it back (OutId, StatusCallback) where they can
    to: str  # E.164
    text: str
    lane: Lane
    source: str = ""  # sender address suffix: the tenant's extension code (扩展码), if any
    receipt: bool = True


@dataclass(frozen=True)
class Report:
    """A delivery receipt, with the carrier id normalised for matching.

    ``stat`` uses the SMPP receipt vocabulary (DELIVRD, UNDELIV, EXPIRED, REJECTD, DELETED,
    UNKNOWN) whatever the channel; ``err`` is the carrier's or provider's own code, kept raw;
    ``reason`` is the channel's normalised reading of it (None when delivered).
    """

    message_id: str
    stat: str
    err: str
    state: int | None
    raw: str
    reason: Reason | None = None


@dataclass(frozen=True)
class Inbound:
    """A mobile-originated message (a reply). ``source`` is E.164 when the carrier says so."""

    source: str
    destination: str
    text: str


class SubmitError(Exception):
    """A channel refused a message (or could not reach the carrier).

    ``transient``: trying again later (or on another channel) may succeed. ``accepted`` holds the
    carrier ids of the parts that were accepted before the refusal (a long SMPP message).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        reason: Reason,
        transient: bool,
        accepted: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.transient = transient
        self.accepted = accepted or []


# Awaiting a sink returns once the platform has stored what it was given (it raises when that
# failed): a channel acknowledges a receipt or a reply to the carrier only then, so that one
# taken in by a process killed a moment later is sent again by the carrier, not lost.
ReportSink = Callable[[Report], Awaitable[None]]
InboundSink = Callable[[Inbound], Awaitable[None]]


class Channel(Protocol):
    spec: ChannelSpec

    @property
    def ready(self) -> bool:
        """True while a submit can be attempted (a bind is up, the account is usable)."""

    async def start(self, on_report: ReportSink, on_inbound: InboundSink) -> None:
        """Begin connecting (in the background where that takes time); return promptly."""

    async def stop(self) -> None:
        """Close politely; receipts already received have been handed to the callbacks."""

    async def submit(self, message: Outgoing) -> list[str]:
        """Send one message; return the carrier id of each receipt to expect (SMPP: per part).

        Raises :class:`SubmitError`.
        """


@dataclass(frozen=True)
class CallbackResult:
    """What a provider's push callback carried, and what to answer it."""

    reports: list[Report] = field(default_factory=list)
    inbounds: list[Inbound] = field(default_factory=list)
    status_code: int = 200
    body: bytes = b""
    media_type: str = "application/json"


class CallbackRejected(Exception):
    """A callback that is not from the provider (bad signature, malformed body)."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


class CallbackParser(Protocol):
    def __call__(
        self,
        spec: ChannelSpec,
        *,
        kind: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> CallbackResult:
        """Parse one push (``kind``: ``status`` or ``reply``); raise :class:`CallbackRejected`."""
