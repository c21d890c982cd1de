"""Replies from recipients: opt-outs stop marketing at once, everything lands in an inbox.

A reply (mobile-originated message) finds its tenant by the extension code it was addressed to
(``<channel source_addr><tenant sms_ext>…``, the longest matching code wins), else by the latest
message any tenant sent that number; a reply no tenant can be found for is kept for the operator
in ``unrouted_inbound``. An opt-out keyword (:func:`is_opt_out`) puts the number on the tenant's
suppression list (reason ``opt_out``, which stops marketing for good) and appends a ``revoked``
record to the consent ledger, in the same transaction as the inbox row; webhook events
``message.reply`` (and ``message.opt_out``) are queued with them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hongyan.channels.base import ChannelSpec, Inbound
from hongyan.clock import Clock
from hongyan.contacts import suppression
from hongyan.db.scope import TenantScope, unscoped
from hongyan.db.tables import inbound_messages, messages, tenants, unrouted_inbound
from hongyan.security.keyring import KeyRing, mask_phone
from hongyan.webhooks.events import Event, emit

WHY = "a reply arrives before its tenant is known"

#: Replies that unsubscribe, compared after :func:`normalise_reply`.
OPT_OUT_KEYWORDS = frozenset(
    {
        "T",
        "TD",
        "R",
        "退订",
        "拒收",
        "取消",
        "退",
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        # The instruction echoed back with its keyword.
        "T退订",
        "TD退订",
        "退订T",
        "退订TD",
        "R拒收",
        "拒收R",
    }
)


def normalise_reply(text: str) -> str:
    """Full-width to half-width (NFKC), upper case, without spaces or punctuation around or inside.

    ``" ｔｄ。"`` → ``"TD"``, ``"【退订】"`` → ``"退订"``, ``"Stop!"`` → ``"STOP"``.
    """
    folded = unicodedata.normalize("NFKC", text).upper()
    kept = "".join(
        ch for ch in folded if not (ch.isspace() or unicodedata.category(ch)[0] in "PSZC")
    )
    # Dropping a space can leave a combining mark next to a letter it now composes with.
    return unicodedata.normalize("NFKC", kept)


def is_opt_out(text: str) -> bool:
    """Whether a reply unsubscribes (pure). Only a keyword by itself counts: not "我不想退订"."""
    return normalise_reply(text) in OPT_OUT_KEYWORDS


_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_NUMBER = re.compile(r"^\+?[0-9 ().-]+$")  # digits and the separators people write


def e164_of(source: str) -> str | None:
    """A reply's sender as E.164, from the forms carriers use (pure); None if not a number.

    ``13812345678``, ``8613812345678``, ``+8613812345678``, ``008613812345678`` (full-width too)
    → ``+8613812345678``; letters, an empty or too short / too long number → None.
    """
    folded = unicodedata.normalize("NFKC", source).strip()
    if not _NUMBER.fullmatch(folded):
        return None
    digits = "".join(ch for ch in folded if ch.isdigit())
    if folded.startswith("+"):
        number = "+" + digits
    elif digits.startswith("00"):
        number = "+" + digits[2:]
    elif len(digits) == 11 and digits.startswith("1"):
        number = "+86" + digits
    else:
        number = "+" + digits
    return number if _E164.fullmatch(number) else None


def _tenant_by_extension(conn: Connection, spec: ChannelSpec, destination: str) -> int | None:
    base = str(spec.config.get("source_addr", "")).removeprefix("+")
    dest = destination.removeprefix("+")
    # Without a sender number on the channel (HTTP providers report only the extension),
    # the whole destination is the extension.
    if not dest.startswith(base) or len(dest) == len(base):
        return None
    rest = dest[len(base) :]
    rows = conn.execute(
        sa.select(tenants.c.id, tenants.c.sms_ext).where(
            tenants.c.sms_ext.is_not(None),
            tenants.c.sms_ext.in_([rest[:n] for n in range(1, min(len(rest), 8) + 1)]),
        )
    ).all()
    if not rows:
        return None
    return int(max(rows, key=lambda r: len(r.sms_ext)).id)


def _latest_message(
    conn: Connection, keyring: KeyRing, phone: str, tenant_id: int | None
) -> tuple[int, int] | None:
    """(tenant id, message id) of the message last sent to ``phone`` (by one tenant, or any)."""
    if tenant_id is not None:
        candidates = [tenant_id]
    else:
        candidates = [r.id for r in conn.execute(sa.select(tenants.c.id))]
    best: tuple[int, int] | None = None
    best_key: tuple[Any, int] | None = None
    for start in range(0, len(candidates), 500):
        chunk = candidates[start : start + 500]
        pairs = [
            sa.and_(
                messages.c.tenant_id == t,
                messages.c.dest_index == keyring.blind_index(phone, suppression.phone_context(t)),
            )
            for t in chunk
        ]
        row = conn.execute(
            unscoped(
                sa.select(messages.c.tenant_id, messages.c.id, messages.c.submitted_at)
                .where(sa.or_(*pairs), messages.c.submitted_at.is_not(None))
                .order_by(messages.c.submitted_at.desc(), messages.c.id.desc())
                .limit(1),
                WHY,
            )
        ).first()
        # Across chunks too, the latest submitted wins (not the highest id: a message planned
        # early may be submitted late).
        if row is not None and (best_key is None or (row.submitted_at, row.id) > best_key):
            best = (int(row.tenant_id), int(row.id))
            best_key = (row.submitted_at, int(row.id))
    return best


def apply_inbound(
    conn: Connection, clock: Clock, keyring: KeyRing, spec: ChannelSpec, items: Sequence[Inbound]
) -> list[dict[str, Any]]:
    """Record replies; returns what became of each (tenant, kind, inbox id) for logs and tests."""
    now = clock.now()
    results: list[dict[str, Any]] = []
    events: list[Event] = []
    for item in items:
        phone = e164_of(item.source)
        text = item.text.strip()[:1000]
        tenant_id = _tenant_by_extension(conn, spec, item.destination)
        latest = _latest_message(conn, keyring, phone, tenant_id) if phone else None
        if tenant_id is None and latest is not None:
            tenant_id = latest[0]
        if phone is None or tenant_id is None:
            conn.execute(
                unscoped(sa.insert(unrouted_inbound), "no tenant is known for this reply"),
                {
                    "channel": spec.name,
                    "phone_cipher": keyring.encrypt(item.source, "platform:phone"),
                    "phone_masked": mask_phone(item.source),
                    "destination": item.destination[:32],
                    "text": text,
                    "received_at": now,
                },
            )
            results.append({"tenant_id": None, "kind": "unrouted"})
            continue
        context = suppression.phone_context(tenant_id)
        kind = "opt_out" if is_opt_out(text) else "reply"
        result = conn.execute(
            TenantScope(tenant_id).insert(inbound_messages),
            {
                "channel": spec.name,
                "phone_index": keyring.blind_index(phone, context),
                "phone_cipher": keyring.encrypt(phone, context),
                "phone_masked": mask_phone(phone),
                "destination": item.destination[:32],
                "text": text,
                "kind": kind,
                "message_id": latest[1] if latest else None,
                "received_at": now,
            },
        )
        assert result.inserted_primary_key is not None
        inbox_id = int(result.inserted_primary_key[0])
        payload = {
            "reply": {
                "id": inbox_id,
                "from": phone,
                "from_masked": mask_phone(phone),
                "to": item.destination,
                "text": text,
                "kind": kind,
                "message_id": latest[1] if latest else None,
                "channel": spec.name,
                "received_at": now.isoformat(),
            }
        }
        events.append(Event(tenant_id, "message.reply", payload))
        if kind == "opt_out":
            suppression.add(
                conn,
                clock,
                keyring,
                [suppression.NewSuppression(tenant_id, phone, "opt_out", "reply", text[:200])],
            )
            suppression.record_consent(
                conn,
                clock,
                keyring,
                [
                    suppression.ConsentChange(
                        tenant_id=tenant_id,
                        phone=phone,
                        purpose="marketing",
                        action="revoked",
                        source="reply",
                        proof=f"reply {text!r} to {item.destination} via {spec.name}",
                        actor="recipient",
                    )
                ],
            )
            events.append(Event(tenant_id, "message.opt_out", payload))
        results.append({"tenant_id": tenant_id, "kind": kind, "inbox_id": inbox_id})
    emit(conn, clock, events)
    return results
