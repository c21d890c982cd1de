"""A message's life, as pure rules: which state may follow which, and what a failure means.

    planned ──claim──► sending ──submit ok──► submitted ──receipt──► delivered|undelivered|expired
       │                 │  └─transient error─► planned (retry with backoff, or the next channel)
       │                 └─permanent error / validity over──► failed | expired
       ├──cancel──► cancelled
       └──pause (a campaign's)──► held ──resume──► planned   (held: never claimed; cancel ends it)

The dispatcher writes each change before and after the external call that causes it; these rules
are what it checks a change against, so an impossible transition is a bug caught at once.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class State(StrEnum):
    PLANNED = "planned"
    SENDING = "sending"  # leased by a dispatcher, submit in progress
    SUBMITTED = "submitted"  # the carrier accepted every part and gave ids
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"
    FAILED = "failed"
    CANCELLED = "cancelled"
    HELD = "held"  # a paused campaign's planned message: not claimed until resumed


FINAL = frozenset(
    {State.DELIVERED, State.UNDELIVERED, State.EXPIRED, State.FAILED, State.CANCELLED}
)

TRANSITIONS: dict[State, frozenset[State]] = {
    State.PLANNED: frozenset(
        {State.SENDING, State.CANCELLED, State.EXPIRED, State.FAILED, State.HELD}
    ),
    State.HELD: frozenset({State.PLANNED, State.CANCELLED}),
    State.SENDING: frozenset(
        # PLANNED: a transient error or an expired lease puts it back for another try.
        {
            State.PLANNED,
            State.SUBMITTED,
            State.FAILED,
            State.EXPIRED,
            State.DELIVERED,
            State.UNDELIVERED,
        }
    ),
    # A receipt may arrive before the submit response is recorded, hence SENDING → final above.
    State.SUBMITTED: frozenset({State.DELIVERED, State.UNDELIVERED, State.EXPIRED}),
    # A receipt can correct an earlier verdict only from "expired" (a late DELIVRD after the
    # platform gave up waiting): what the carrier says last about delivery wins.
    State.EXPIRED: frozenset({State.DELIVERED, State.UNDELIVERED}),
    State.DELIVERED: frozenset(),
    State.UNDELIVERED: frozenset(),
    State.FAILED: frozenset(),
    State.CANCELLED: frozenset(),
}


class Lane(IntEnum):
    """Priority lanes: a lower value is claimed first."""

    VERIFICATION = 0
    NOTIFICATION = 1
    MARKETING = 2


def lane_for(category: str) -> Lane:
    """The lane of a message category name (verification, notification, marketing)."""
    try:
        return Lane[category.upper()]
    except KeyError:
        raise ValueError(f"unknown category {category!r}") from None


class Reason(StrEnum):
    """Why a message did not arrive, normalised across carriers and providers."""

    INVALID_NUMBER = "invalid_number"  # 空号, unknown subscriber
    BLOCKED = "blocked"  # carrier or recipient blacklist, content blocked
    SUPPRESSED = "suppressed"  # our own suppression list (opt-out, complaint)
    THROTTLED = "throttled"  # rate or queue limit (transient)
    CARRIER_ERROR = "carrier_error"  # the carrier failed (transient or unknown)
    EXPIRED = "expired"  # validity period over
    REJECTED = "rejected"  # the carrier refused the message (content, signature, format)
    POWERED_OFF = "powered_off"  # handset off or out of coverage until validity ran out
    NO_ROUTE = "no_route"  # no channel can carry it
    QUIET_HOURS = "quiet_hours"  # marketing held until the recipient's quiet hours end
    UNKNOWN = "unknown"


TRANSIENT = frozenset({Reason.THROTTLED, Reason.CARRIER_ERROR})


class TransitionError(RuntimeError):
    pass


def can_move(current: State | str, target: State | str) -> bool:
    return State(target) in TRANSITIONS[State(current)]


def check_move(current: State | str, target: State | str) -> State:
    if not can_move(current, target):
        raise TransitionError(f"a message cannot go from {current} to {target}")
    return State(target)


def is_final(state: State | str) -> bool:
    return State(state) in FINAL


def retry_delay(attempt: int, *, base: float = 2.0, cap: float = 300.0) -> float:
    """Seconds before retry number ``attempt`` (1-based): exponential, capped."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    return min(cap, base * 2 ** (attempt - 1))
