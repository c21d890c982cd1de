"""Every table, in SQLAlchemy Core. Alembic migrations in ``migrations/`` create them.

A table that holds a tenant's data has a ``tenant_id`` column and ``info={"tenant_scoped": True}``;
the guard in :mod:`hongyan.db.scope` refuses any statement on such a table that did not come
through a :class:`~hongyan.db.scope.TenantScope` or an explicit, named cross-tenant access.
"""

from __future__ import annotations

import sqlalchemy as sa

from hongyan.db.types import UTCDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = sa.MetaData(naming_convention=NAMING)
SCOPED = {"tenant_scoped": True}


def tenant_column(*, index: bool = True) -> sa.Column[int]:
    """The tenant of a row in a table written a million rows at a time, without a foreign key
    (migration 0019): a key is a trigger run per inserted row, a third of the server's work in
    a contacts import and a tenth of a launch's. The id comes from a TenantScope, whose tenant
    exists, and tenants are never deleted (they are suspended)."""
    return sa.Column("tenant_id", sa.Integer, nullable=False, index=index)


def tenant_fk(*, index: bool = True) -> sa.Column[int]:
    return sa.Column(
        "tenant_id",
        sa.Integer,
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
        index=index,
    )


tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("slug", sa.String(40), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False, server_default="Asia/Shanghai"),
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    # Extension code appended to the channel's sender number (扩展码): replies to it reach us
    # addressed to <channel source><sms_ext>, which is how a reply finds its tenant.
    sa.Column("sms_ext", sa.String(8), nullable=True, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# Signatures (【品牌名】) a tenant may send under; the operator approves them.
signatures = sa.Table(
    "signatures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(),
    sa.Column("text", sa.String(40), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("is_default", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("reviewed_at", UTCDateTime, nullable=True),
    # content (migration 0008): what the tenant says about it, who decided, why not
    sa.Column("note", sa.String(200), nullable=True),
    sa.Column("reviewed_by", sa.String(80), nullable=True),
    sa.Column("reason", sa.String(300), nullable=True),
    sa.UniqueConstraint("tenant_id", "text", name="uq_signatures_tenant_text"),
    # The platform's review queue reads pending signatures across tenants.
    sa.Index("ix_signatures_status", "status"),
    info=SCOPED,
)

# One policy row per tenant: the rules later capabilities enforce (quiet hours, caps, marketing).
policies = sa.Table(
    "policies",
    metadata,
    sa.Column(
        "tenant_id",
        sa.Integer,
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("marketing_allowed", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("quiet_start", sa.String(5), nullable=False, server_default="21:00"),
    sa.Column("quiet_end", sa.String(5), nullable=False, server_default="08:00"),
    sa.Column("require_ad_mark", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("unsubscribe_text", sa.String(40), nullable=False, server_default="回T退订"),
    sa.Column("max_parts", sa.Integer, nullable=False, server_default="6"),
    sa.Column("extra", sa.JSON, nullable=False, default=dict),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # content (migration 0008): notifications need an approved template too when true
    # (marketing always does); the advertising mark the ad.mark fix inserts.
    sa.Column(
        "notification_template_required", sa.Boolean, nullable=False, server_default=sa.false()
    ),
    sa.Column("ad_mark", sa.String(20), nullable=False, server_default="（广告）"),
    info=SCOPED,
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.String(200), nullable=False),
    # The user's own mobile (alerts, second factor): ciphertext and blind index, never plaintext.
    sa.Column("phone_cipher", sa.LargeBinary, nullable=True),
    sa.Column("phone_index", sa.LargeBinary(32), nullable=True),
    sa.Column("locale", sa.String(8), nullable=False, server_default="zh-CN"),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_login_at", UTCDateTime, nullable=True),
    info=SCOPED,
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("prefix", sa.String(24), nullable=False, unique=True),
    sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    info=SCOPED,
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("token_hash", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("ip", sa.String(64), nullable=True),
    info=SCOPED,
)

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The outbox: every message that leaves the platform, whatever planned it (design.md).
messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    # No index of its own: the (tenant_id, …) indexes below serve every per-tenant lookup, and
    # each index is one more write on every state change of every message.
    tenant_column(index=False),
    sa.Column(
        "lane", sa.SmallInteger, nullable=False
    ),  # 0 verification, 1 notification, 2 marketing
    sa.Column("category", sa.String(16), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # api, campaign, journey, ab_test
    sa.Column("source_ref", sa.String(64), nullable=True),
    sa.Column("idempotency_key", sa.String(100), nullable=True),
    sa.Column("dest_cipher", sa.LargeBinary, nullable=False),
    sa.Column("dest_index", sa.LargeBinary(32), nullable=False),
    sa.Column("dest_masked", sa.String(24), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("encoding", sa.String(8), nullable=False),
    sa.Column("parts", sa.SmallInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("due_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("attempts", sa.SmallInteger, nullable=False, server_default="0"),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", UTCDateTime, nullable=True),
    # The last channel tried (a transient failure there makes the next attempt fail over).
    sa.Column("channel", sa.String(64), nullable=True),
    # cmcc / cucc / ctcc / cbn for Chinese mobiles, intl otherwise: routing and reports.
    sa.Column("carrier", sa.String(8), nullable=True),
    # How many carrier ids (receipts) the channel gave at submit: SMPP one per part, an HTTP
    # provider one per message. The message is final when that many receipts are in.
    sa.Column("carrier_parts", sa.SmallInteger, nullable=True),
    sa.Column("reason", sa.String(24), nullable=True),
    sa.Column("carrier_code", sa.String(64), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("submitted_at", UTCDateTime, nullable=True),
    sa.Column("done_at", UTCDateTime, nullable=True),
    # content (migration 0008): the approved template version the text was rendered from.
    # No foreign key: versions are never deleted, and the outbox's inserts stay check-free.
    sa.Column("template_version_id", sa.Integer, nullable=True),
    # campaigns (migration 0011): what planned the message, for the funnel, caps and attribution.
    # No foreign keys, for the same reason; a campaign's messages outlive nothing they point to.
    sa.Column("campaign_id", sa.Integer, nullable=True),
    sa.Column("variant", sa.String(16), nullable=True),
    sa.Column("contact_id", BigId, nullable=True),
    # reports (migration 0015): where the recipient's number was issued (号码归属地), copied
    # from the contact when the message is planned (the API's sends: looked up from the number,
    # as a contact's is), so a campaign's report groups its messages by place without joining a
    # million contacts. The carrier above is the recipient's too. Never changed afterwards.
    sa.Column("number_province", sa.String(16), nullable=True),
    sa.Column("number_city", sa.String(32), nullable=True),
    # The recipient's IANA time zone when it is not the tenant's (migration 0016): quiet hours
    # are kept in it, at planning and by the dispatcher. NULL: the tenant's zone.
    sa.Column("time_zone", sa.String(64), nullable=True),
    # The hot path changes a message's row three times (claimed, submitted, final) and every
    # change writes an entry in every index whose predicate the row meets: so the claim and lease
    # indexes hold only the rows they serve, and only keyed messages enter the idempotency index.
    sa.Index(
        "uq_messages_tenant_idempotency",
        "tenant_id",
        "idempotency_key",
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        sqlite_where=sa.text("idempotency_key IS NOT NULL"),
    ),
    sa.Index(
        "ix_messages_claim",
        "lane",
        "due_at",
        postgresql_where=sa.text("state = 'planned'"),
        sqlite_where=sa.text("state = 'planned'"),
    ),
    sa.Index(
        "ix_messages_lease",
        "lease_until",
        postgresql_where=sa.text("state = 'sending'"),
        sqlite_where=sa.text("state = 'sending'"),
    ),
    # Submitted messages by validity: the sweep for receipts that never came reads only these
    # (without it, every dispatcher scanned the whole table every few seconds).
    sa.Index(
        "ix_messages_unreceipted",
        "expires_at",
        postgresql_where=sa.text("state = 'submitted'"),
        sqlite_where=sa.text("state = 'submitted'"),
    ),
    # A number's messages: reply attribution, the console's exact-number filter.
    sa.Index("ix_messages_dest", "tenant_id", "dest_index"),
    # Send records, newest first per tenant (keyset paging on created_at, id).
    sa.Index("ix_messages_tenant_created", "tenant_id", "created_at", "id"),
    # A campaign's messages by variant: pause/resume/cancel, the funnel, frequency caps.
    sa.Index(
        "ix_messages_campaign",
        "tenant_id",
        "campaign_id",
        "variant",
        postgresql_where=sa.text("campaign_id IS NOT NULL"),
        sqlite_where=sa.text("campaign_id IS NOT NULL"),
    ),
    info=SCOPED,
)

# One row per part of a submitted message: the carrier's id for that part, for receipt matching.
message_parts = sa.Table(
    "message_parts",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    # Parts are found by message or by carrier id, never by tenant alone: no index of its own
    # (each is one more write for every part of every message).
    tenant_column(index=False),
    sa.Column(
        "message_id",
        BigId,
        sa.ForeignKey("messages.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("part_no", sa.SmallInteger, nullable=False),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("carrier_id", sa.String(72), nullable=False),
    sa.Column("stat", sa.String(16), nullable=True),
    sa.Column("err", sa.String(64), nullable=True),
    # The normalised reason the channel read from the receipt (None when delivered).
    sa.Column("reason", sa.String(24), nullable=True),
    sa.Column("submitted_at", UTCDateTime, nullable=False),
    sa.Column("done_at", UTCDateTime, nullable=True),
    # Not unique: carriers wrap or reuse ids (a restarted SMSC starts again); receipts match the
    # newest part with that id that has no receipt yet. The carrier id leads: a batch of receipts
    # is looked up with ``carrier_id = ANY(…)``, which only the leading column serves by descent.
    sa.Index("ix_message_parts_carrier", "carrier_id", "channel"),
    info=SCOPED,
)

# Receipts whose carrier id matches no stored part yet (a receipt can beat the submit response
# to the database): kept, never dropped, and matched when the part is recorded.
unmatched_receipts = sa.Table(
    "unmatched_receipts",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("carrier_id", sa.String(72), nullable=False),
    sa.Column("stat", sa.String(16), nullable=False),
    sa.Column("err", sa.String(64), nullable=False),
    sa.Column("raw", sa.Text, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Index("ix_unmatched_receipts_carrier", "carrier_id", "channel"),
)

# Append-only record of who did what. Details never hold secrets or plaintext phone numbers.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "tenant_id",
        sa.Integer,
        sa.ForeignKey("tenants.id", ondelete="SET NULL"),
        nullable=True,
        index=True,
    ),
    sa.Column("actor", sa.String(80), nullable=False),
    sa.Column("action", sa.String(80), nullable=False),
    sa.Column("target", sa.String(200), nullable=True),
    sa.Column("detail", sa.JSON, nullable=False, default=dict),
    sa.Column("ip", sa.String(64), nullable=True),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    info=SCOPED,
)

# -- channels and routes (the operator's side) ---------------------------------------------------

# A carrier connection or HTTP provider account. Platform-level: the operator owns channels and
# tenants are routed onto them. Secrets (passwords, access keys) are encrypted in secret_cipher.
channels = sa.Table(
    "channels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),  # smpp, aliyun, tencent, twilio
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    # Lower first when a tenant has no route of its own.
    sa.Column("priority", sa.Integer, nullable=False, server_default="100"),
    sa.Column("config", sa.JSON, nullable=False, default=dict),
    sa.Column("secret_cipher", sa.LargeBinary, nullable=True),
    # Messages per second across all dispatchers (0: no limit), requests outstanding per bind.
    sa.Column("rate", sa.Float, nullable=False, server_default="0"),
    sa.Column("window", sa.Integer, nullable=False, server_default="10"),
    sa.Column("binds", sa.Integer, nullable=False, server_default="1"),
    # Comma-separated carriers it can reach (cmcc,cucc,ctcc,cbn,intl); empty: all.
    sa.Column("carriers", sa.String(64), nullable=False, server_default=""),
    sa.Column("price_per_part", sa.Numeric(10, 4), nullable=False, server_default="0"),
    sa.Column("currency", sa.String(3), nullable=False, server_default="CNY"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# A tenant's route: for a lane (-1: every lane) and a carrier ('*': any), the channels to use in
# order; the second and later ones are the failover.
routes = sa.Table(
    "routes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(),
    sa.Column("lane", sa.SmallInteger, nullable=False, server_default="-1"),
    sa.Column("carrier", sa.String(8), nullable=False, server_default="*"),
    sa.Column("channels", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("tenant_id", "lane", "carrier", name="uq_routes_tenant_lane_carrier"),
    info=SCOPED,
)

# Live dispatchers: each writes its heartbeat; a channel's rate is shared among the live ones.
dispatchers = sa.Table(
    "dispatchers",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("seen_at", UTCDateTime, nullable=False),
    sa.Column("channels", sa.JSON, nullable=False, default=list),
)

# -- suppression, consent, replies ---------------------------------------------------------------

# Numbers a tenant must not send to: opted out (marketing only), invalid / 空号 (everything,
# until expires_at), complained, blocked by hand. One row per (number, reason).
suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(),
    sa.Column("phone_index", sa.LargeBinary(32), nullable=False),
    # None once the number's owner had their data erased (`contacts forget`): the entry is
    # kept by blind index only.
    sa.Column("phone_cipher", sa.LargeBinary, nullable=True),
    sa.Column("phone_masked", sa.String(24), nullable=False),
    sa.Column("reason", sa.String(16), nullable=False),  # opt_out, invalid, complaint, manual
    sa.Column("scope", sa.String(16), nullable=False),  # marketing, all
    sa.Column("source", sa.String(32), nullable=False),  # reply, receipt, import, console, api
    sa.Column("detail", sa.String(200), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("tenant_id", "phone_index", "reason", name="uq_suppressions_number"),
    sa.Index("ix_suppressions_phone_index", "phone_index"),
    info=SCOPED,
)

# Append-only consent ledger: a number's current consent for a purpose is its latest record.
consent_records = sa.Table(
    "consent_records",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    # No index of its own (migration 0020): every query names the tenant and is served by
    # ix_consent_records_number, which leads with tenant_id; the one-column index was a
    # third index to maintain for every row an import appends.
    tenant_column(index=False),
    sa.Column("phone_index", sa.LargeBinary(32), nullable=False),
    sa.Column("purpose", sa.String(16), nullable=False),  # marketing, notification
    sa.Column("action", sa.String(8), nullable=False),  # granted, revoked
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("proof", sa.Text, nullable=False),
    sa.Column("actor", sa.String(80), nullable=False),
    sa.Column("ip", sa.String(64), nullable=True),
    sa.Column("at", UTCDateTime, nullable=False),
    # The latest record per number and purpose read from the index alone (migration 0019):
    # the snapshot's consent verdict for every member walks it once per contact.
    sa.Index(
        "ix_consent_records_number",
        "tenant_id",
        "phone_index",
        "purpose",
        "at",
        "id",
        postgresql_include=["action"],
    ),
    info=SCOPED,
)

# Replies from recipients (mobile-originated messages), per tenant.
inbound_messages = sa.Table(
    "inbound_messages",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    tenant_fk(),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("phone_index", sa.LargeBinary(32), nullable=False),
    sa.Column("phone_cipher", sa.LargeBinary, nullable=False),
    sa.Column("phone_masked", sa.String(24), nullable=False),
    sa.Column("destination", sa.String(32), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # opt_out, reply
    # The latest message this tenant sent to the number before the reply, if any.
    sa.Column(
        "message_id", BigId, sa.ForeignKey("messages.id", ondelete="SET NULL"), nullable=True
    ),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Index("ix_inbound_messages_tenant_received", "tenant_id", "received_at"),
    info=SCOPED,
)

# Replies no tenant could be found for (unknown extension, number never messaged): kept for the
# operator, the number encrypted under the platform's own context.
unrouted_inbound = sa.Table(
    "unrouted_inbound",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("phone_cipher", sa.LargeBinary, nullable=False),
    sa.Column("phone_masked", sa.String(24), nullable=False),
    sa.Column("destination", sa.String(32), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
)

# -- webhooks ------------------------------------------------------------------------------------

webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(),
    sa.Column("url", sa.String(500), nullable=False),
    sa.Column("secret_cipher", sa.LargeBinary, nullable=False),
    sa.Column("events", sa.JSON, nullable=False),  # e.g. ["message.status", "message.reply"]
    sa.Column("description", sa.String(200), nullable=False, server_default=""),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", UTCDateTime, nullable=False),
    info=SCOPED,
)

# One event for one endpoint, retried with backoff until delivered or given up (dead).
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    tenant_fk(),
    sa.Column(
        "endpoint_id",
        sa.Integer,
        sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("event", sa.String(40), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("state", sa.String(12), nullable=False),  # pending, sending, delivered, dead
    sa.Column("attempts", sa.SmallInteger, nullable=False, server_default="0"),
    sa.Column("next_at", UTCDateTime, nullable=False),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", UTCDateTime, nullable=True),
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("last_error", sa.String(300), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    sa.Index("ix_webhook_deliveries_due", "state", "next_at"),
    info=SCOPED,
)

# The delivery log: every attempt, with what the receiver answered.
webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    tenant_fk(),
    sa.Column(
        "delivery_id",
        BigId,
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.String(300), nullable=True),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    info=SCOPED,
)

# -- the marketing calendar ------------------------------------------------------------------------

# Holiday arrangements an operator loaded (the State Council's notice for a year the installed
# package does not know yet, or a correction): platform data, not a tenant's.
calendar_arrangements = sa.Table(
    "calendar_arrangements",
    metadata,
    sa.Column("year", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("loaded_by", sa.String(80), nullable=False),
    sa.Column("loaded_at", UTCDateTime, nullable=False),
)

# -- content: templates and their versions, tenants' words (migration 0008) -----------------------

# A tenant's template: a name, a category fixed at creation, and the version it sends with
# (live_version_id: the newest approved version; no foreign key, to avoid a cycle).
templates = sa.Table(
    "templates",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("category", sa.String(16), nullable=False),  # verification, notification, marketing
    sa.Column("live_version_id", sa.Integer, nullable=True),
    sa.Column("archived_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("tenant_id", "name", name="uq_templates_tenant_name"),
    info=SCOPED,
)

# Every version of a template's text: draft -> pending -> approved | rejected (with a reason).
# A version under review or decided is never edited; editing makes a new draft version.
template_versions = sa.Table(
    "template_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(index=False),
    sa.Column(
        "template_id",
        sa.Integer,
        sa.ForeignKey("templates.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("link_url", sa.String(500), nullable=True),  # where {link} leads
    sa.Column("status", sa.String(16), nullable=False),  # draft, pending, approved, rejected
    sa.Column("reason", sa.String(300), nullable=True),
    sa.Column("findings", sa.JSON, nullable=False, default=list),  # the lint when submitted
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(80), nullable=False),
    sa.Column("submitted_at", UTCDateTime, nullable=True),
    sa.Column("submitted_by", sa.String(80), nullable=True),
    sa.Column("reviewed_at", UTCDateTime, nullable=True),
    sa.Column("reviewed_by", sa.String(80), nullable=True),
    sa.UniqueConstraint("template_id", "version", name="uq_template_versions_template_version"),
    # The platform's review queue reads pending versions across tenants, oldest first.
    sa.Index("ix_template_versions_status", "status", "submitted_at"),
    info=SCOPED,
)

# Words a tenant adds to the platform's lists (sensitive, absolute, forbidden, vague, exception).
content_words = sa.Table(
    "content_words",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(),
    sa.Column("list", sa.String(16), nullable=False),
    sa.Column("term", sa.String(40), nullable=False),
    sa.Column("replacement", sa.String(40), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(80), nullable=False),
    sa.UniqueConstraint("tenant_id", "list", "term", name="uq_content_words_tenant_list_term"),
    info=SCOPED,
)

# -- platform staff (migration 0008): people who run the platform, members of no tenant -----------

staff = sa.Table(
    "staff",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # reviewer
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("locale", sa.String(8), nullable=False, server_default="zh-CN"),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_login_at", UTCDateTime, nullable=True),
)

staff_sessions = sa.Table(
    "staff_sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "staff_id", sa.Integer, sa.ForeignKey("staff.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("token_hash", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("ip", sa.String(64), nullable=True),
)

staff_api_keys = sa.Table(
    "staff_api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "staff_id", sa.Integer, sa.ForeignKey("staff.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("prefix", sa.String(24), nullable=False, unique=True),
    sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

# -- contacts, behaviour events, imports (issue 4; see docs/architecture.md "Contacts") ----------

# A tenant's customers: one row per number (blind index under tenant:<id>:phone, the same index
# as the outbox and the suppression list). Identifying data is ciphertext (number, name, full
# birthday); what audiences filter on (region, carrier, gender, birthday month/day, decade of
# birth, custom attributes) is plain.
contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    tenant_column(index=False),  # served by uq_contacts_number and ix_contacts_tenant_created
    sa.Column("phone_index", sa.LargeBinary(32), nullable=False),
    sa.Column("phone_cipher", sa.LargeBinary, nullable=False),
    sa.Column("phone_masked", sa.String(24), nullable=False),
    sa.Column("country", sa.String(2), nullable=False),  # ISO 3166 region of the number: CN …
    sa.Column("carrier", sa.String(8), nullable=True),  # cmcc, cucc, ctcc, cbn, intl
    sa.Column("mvno", sa.Boolean, nullable=False, server_default=sa.false()),  # virtual operator
    # Where the number was issued (号码归属地), from the number itself.
    sa.Column("number_province", sa.String(16), nullable=True),
    sa.Column("number_city", sa.String(32), nullable=True),
    sa.Column("name_cipher", sa.LargeBinary, nullable=True),
    sa.Column("name_masked", sa.String(40), nullable=True),
    sa.Column("gender", sa.String(1), nullable=True),  # f, m
    sa.Column("birthday_cipher", sa.LargeBinary, nullable=True),  # ISO date, encrypted
    sa.Column("birth_month", sa.SmallInteger, nullable=True),
    sa.Column("birth_day", sa.SmallInteger, nullable=True),
    sa.Column("birth_decade", sa.SmallInteger, nullable=True),  # 1990 for 90后
    # Where the customer says they are (an address column of the file), not the number's.
    sa.Column("province", sa.String(16), nullable=True),
    sa.Column("city", sa.String(32), nullable=True),
    # Custom attributes, typed by contact_fields: {"会员等级": "金卡", "points": 1200}.
    sa.Column("attrs", sa.JSON, nullable=False, default=dict),
    sa.Column("source", sa.String(16), nullable=False),  # import, api, event, console, demo
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The person's IANA time zone (migration 0016): given (an import column, the API) or derived
    # from a foreign number that has exactly one; NULL means the tenant's zone.
    sa.Column("time_zone", sa.String(64), nullable=True),
    # The keyed digest of the file row an import last applied (migration 0021): the same row
    # again changes nothing, so it is not written again. Any update that leaves it as it is
    # clears it (trigger contacts_import_digest_reset), so no other change is ever skipped.
    # (A SQLite table rebuild drops that trigger: see migration 0021.)
    sa.Column("import_digest", sa.LargeBinary(16), nullable=True),
    sa.UniqueConstraint("tenant_id", "phone_index", name="uq_contacts_number"),
    sa.Index("ix_contacts_tenant_created", "tenant_id", "created_at", "id"),
    # The few contacts with a zone of their own, read at every launch (index-only).
    sa.Index(
        "ix_contacts_time_zone",
        "tenant_id",
        "id",
        "time_zone",
        postgresql_where=sa.text("time_zone IS NOT NULL"),
        sqlite_where=sa.text("time_zone IS NOT NULL"),
    ),
    # A tenant's contacts counted (migration 0017): one key, deduplicated, a few bytes per
    # contact, so a count reads a sixth of the pages of the index above
    sa.Index("ix_contacts_tenant", "tenant_id"),
    info=SCOPED,
)

# A contact's tags (the tenant's own labels: VIP, 门店A …); union on every merge.
contact_tags = sa.Table(
    "contact_tags",
    metadata,
    tenant_column(index=False),
    sa.Column(
        "contact_id", BigId, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("tag", sa.String(64), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_contact_tags_tenant_tag", "tenant_id", "tag"),
    info=SCOPED,
)

# The registry of a tenant's custom attributes: the names templates may place ({会员等级}) and
# segment rules may test, each with its type.
contact_fields = sa.Table(
    "contact_fields",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(index=False),
    sa.Column("name", sa.String(40), nullable=False),
    sa.Column("type", sa.String(8), nullable=False),  # text, number, date, boolean
    sa.Column("label", sa.String(100), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("tenant_id", "name", name="uq_contact_fields_name"),
    info=SCOPED,
)

# Behaviour events, idempotent by the sender's event id.
contact_events = sa.Table(
    "contact_events",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    tenant_column(index=False),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column(
        "contact_id", BigId, sa.ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False
    ),
    # order, browse, favourite, add_to_cart, registration, order_signed
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("order_id", sa.String(64), nullable=True),
    sa.Column("amount_fen", sa.BigInteger, nullable=True),  # money in integer cents (分)
    sa.Column("coupon_code", sa.String(64), nullable=True),
    sa.Column("tags", sa.JSON, nullable=False, default=list),  # interest tags: categories, items
    sa.Column("properties", sa.JSON, nullable=False, default=dict),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("tenant_id", "event_id", name="uq_contact_events_event"),
    sa.Index("ix_contact_events_contact", "tenant_id", "contact_id", "occurred_at"),
    sa.Index("ix_contact_events_kind", "tenant_id", "kind", "occurred_at"),
    info=SCOPED,
)

# Per-contact aggregates, maintained set-based as events arrive (audiences never rescan events).
# Who has ordered: the predicate of the buyers' indexes, as audience.scoring.buyer_sql writes it.
BUYER = "last_order_at IS NOT NULL AND orders_count > 0"
contact_activity = sa.Table(
    "contact_activity",
    metadata,
    sa.Column(
        "contact_id", BigId, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    ),
    tenant_fk(),
    sa.Column("first_order_at", UTCDateTime, nullable=True),
    sa.Column("last_order_at", UTCDateTime, nullable=True),
    sa.Column("orders_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("revenue_fen", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_browse_at", UTCDateTime, nullable=True),
    sa.Column("last_favourite_at", UTCDateTime, nullable=True),
    sa.Column("last_cart_at", UTCDateTime, nullable=True),
    sa.Column("last_signed_at", UTCDateTime, nullable=True),
    sa.Column("registered_at", UTCDateTime, nullable=True),
    sa.Column("last_interaction_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The buyers' values of each RFM dimension in order (migration 0017): a recompute finds
    # the quintile cut points by walking these, not by sorting the table.
    *(
        sa.Index(
            f"ix_contact_activity_buyer_{column}",
            "tenant_id",
            column,
            postgresql_where=sa.text(BUYER),
            sqlite_where=sa.text(BUYER),
        )
        for column in ("last_order_at", "orders_count", "revenue_fen")
    ),
    info=SCOPED,
)

# Interest tags learnt from browse / favourite / cart / order events: how often, how strongly
# (weighted by kind), how lately.
contact_interests = sa.Table(
    "contact_interests",
    metadata,
    tenant_fk(index=False),
    sa.Column(
        "contact_id", BigId, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("tag", sa.String(64), primary_key=True),
    sa.Column("events", sa.Integer, nullable=False),
    sa.Column("weight", sa.Float, nullable=False),
    sa.Column("first_at", UTCDateTime, nullable=False),
    sa.Column("last_at", UTCDateTime, nullable=False),
    # "has interest X with weight ≥ w" reads only this index (an index-only scan; migration
    # 0014 replaced the (tenant_id, tag) index, a prefix of this one)
    sa.Index("ix_contact_interests_tag_weight", "tenant_id", "tag", "weight", "contact_id"),
    info=SCOPED,
)

# An import of contacts or events: what was asked, how far it got, what it found.
contact_imports = sa.Table(
    "contact_imports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(),
    sa.Column("kind", sa.String(8), nullable=False),  # contacts, events
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("file_sha256", sa.String(64), nullable=True),
    sa.Column("state", sa.String(12), nullable=False),  # pending, running, done, failed
    sa.Column("options", sa.JSON, nullable=False, default=dict),  # mapping, consent, tags
    sa.Column("result", sa.JSON, nullable=False, default=dict),  # counters
    sa.Column("error", sa.JSON, nullable=True),  # the typed error of a failed import
    sa.Column("actor", sa.String(80), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    info=SCOPED,
)

# The rows an import refused, for the downloadable error file; the raw row (which may hold a
# number) is ciphertext under tenant:<id>:import-row. phone_index: the number's blind index when
# the phone cell read as a number (a row refused for another cell), so forget finds the row
# (migration 0023).
contact_import_errors = sa.Table(
    "contact_import_errors",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    tenant_fk(index=False),
    sa.Column(
        "import_id",
        sa.Integer,
        sa.ForeignKey("contact_imports.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("line", sa.Integer, nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("raw_cipher", sa.LargeBinary, nullable=False),
    sa.Column("phone_index", sa.LargeBinary(32), nullable=True),
    sa.Index("ix_contact_import_errors_import", "import_id", "line"),
    sa.Index("ix_contact_import_errors_number", "tenant_id", "phone_index"),
    info=SCOPED,
)

# -- audiences (issue 6; see docs/architecture.md "Audiences") ------------------------------------

# A saved segment: a named rule tree (hongyan.audience.rules) over a tenant's contacts.
segments = sa.Table(
    "segments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(index=False),  # served by uq_segments_name
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("description", sa.String(500), nullable=False, server_default=""),
    sa.Column("rule", sa.JSON, nullable=False),
    sa.Column("created_by", sa.String(80), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("tenant_id", "name", name="uq_segments_name"),
    info=SCOPED,
)

# A tenant's audience settings: lifecycle thresholds in days, RFM group split points (None:
# the mean score of the tenant's buyers), the custom attribute that locates a contact, and when
# scores were last computed.
audience_settings = sa.Table(
    "audience_settings",
    metadata,
    sa.Column(
        "tenant_id",
        sa.Integer,
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("new_days", sa.Integer, nullable=False, server_default="30"),
    sa.Column("active_days", sa.Integer, nullable=False, server_default="30"),
    sa.Column("dormant_days", sa.Integer, nullable=False, server_default="90"),
    sa.Column("lost_days", sa.Integer, nullable=False, server_default="180"),
    sa.Column("r_split", sa.Float, nullable=True),
    sa.Column("f_split", sa.Float, nullable=True),
    sa.Column("m_split", sa.Float, nullable=True),
    sa.Column("location_attribute", sa.String(40), nullable=True),
    sa.Column("recompute_hours", sa.Integer, nullable=False, server_default="24"),
    sa.Column("computed_at", UTCDateTime, nullable=True),
    sa.Column("computed", sa.JSON, nullable=False, default=dict),  # the last run's figures
    sa.Column("updated_at", UTCDateTime, nullable=False),
    info=SCOPED,
)

# A tenant's stores (门店), for "within N km of a store".
stores = sa.Table(
    "stores",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(index=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("lat", sa.Float, nullable=False),
    sa.Column("lon", sa.Float, nullable=False),
    sa.Column("address", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("tenant_id", "name", name="uq_stores_name"),
    info=SCOPED,
)

# Where a contact is, as well as we know (coordinates from the location attribute, else the
# centre of a district or city): latitude/longitude for the bounding-box index, and the point on
# the unit sphere (x, y, z) so the exact great-circle test is arithmetic on both databases.
contact_locations = sa.Table(
    "contact_locations",
    metadata,
    sa.Column(
        "contact_id", BigId, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    ),
    tenant_fk(index=False),
    sa.Column("lat", sa.Float, nullable=False),
    sa.Column("lon", sa.Float, nullable=False),
    sa.Column("x", sa.Float, nullable=False),
    sa.Column("y", sa.Float, nullable=False),
    sa.Column("z", sa.Float, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # coordinates, place, city, number_city
    sa.Column("place", sa.String(40), nullable=True),  # the district or city it stands for
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_contact_locations_box", "tenant_id", "lat", "lon"),
    info=SCOPED,
)

# A segment frozen at a moment for a campaign: every contact the rule matched, with the verdict
# that decides whether it is sent to (included) or why not (suppressed, no_consent).
audiences = sa.Table(
    "audiences",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(),
    sa.Column(
        "segment_id", sa.Integer, sa.ForeignKey("segments.id", ondelete="SET NULL"), nullable=True
    ),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("purpose", sa.String(16), nullable=False),  # marketing, notification
    sa.Column("campaign_ref", sa.String(64), nullable=True),
    sa.Column("rule", sa.JSON, nullable=False),  # the rule as it was, segments inlined
    sa.Column("counts", sa.JSON, nullable=False, default=dict),
    sa.Column("created_by", sa.String(80), nullable=False),
    sa.Column("taken_at", UTCDateTime, nullable=False),
    info=SCOPED,
)

# No foreign keys (migration 0019): the rows are written only by one INSERT … SELECT that reads
# the contact ids from contacts, and each key was a per-row trigger, together 15 of the 20
# seconds a million-member snapshot took. What the cascades did is done by hand: `forget`
# deletes a contact's memberships, `hongyan retention run` deletes those of a contact erased
# while a snapshot was being taken; no path deletes audiences or tenants.
audience_members = sa.Table(
    "audience_members",
    metadata,
    sa.Column("audience_id", sa.Integer, primary_key=True),
    sa.Column("contact_id", BigId, primary_key=True),
    sa.Column("tenant_id", sa.Integer, nullable=False),
    sa.Column("phone_index", sa.LargeBinary(32), nullable=False),
    sa.Column("status", sa.String(12), nullable=False),  # included, suppressed, no_consent
    sa.Index("ix_audience_members_status", "tenant_id", "audience_id", "status"),
    info=SCOPED,
)

# --- tracking (issue 8, migration 0013): short links, clicks, coupons, conversions -------------

# A tenant's tracking settings: its own short-link base (https://t.example; empty: the
# platform's) and the attribution window for last-click conversions.
tracking_settings = sa.Table(
    "tracking_settings",
    metadata,
    sa.Column(
        "tenant_id",
        sa.Integer,
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("link_base", sa.String(60), nullable=True),
    sa.Column("attribution_days", sa.Integer, nullable=False, server_default="7"),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    info=SCOPED,
)

# One per recipient and campaign link: the code is globally unique (the redirector finds the
# tenant by it) and random, so codes cannot be enumerated.
links = sa.Table(
    "links",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    tenant_column(index=False),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("campaign_id", sa.Integer, nullable=True),
    sa.Column("variant", sa.String(16), nullable=True),
    sa.Column("contact_id", BigId, nullable=True),
    sa.Column("message_id", BigId, nullable=True),
    sa.Column("target", sa.String(2000), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    # reports (migration 0015): the recipient's number province, city and carrier, copied from
    # the contact when the link is issued, and from the link onto each of its clicks.
    sa.Column("number_province", sa.String(16), nullable=True),
    sa.Column("number_city", sa.String(32), nullable=True),
    sa.Column("carrier", sa.String(8), nullable=True),
    # migration 0018: a journey's link (campaign_id is then null, variant the step: s<position>)
    sa.Column("journey_id", sa.Integer, nullable=True),
    sa.UniqueConstraint("code", name="uq_links_code"),
    sa.Index("ix_links_campaign", "tenant_id", "campaign_id", "variant"),
    info=SCOPED,
)

# Every answered request for a link. The campaign, variant and contact are copied from the link
# so reports and attribution read clicks alone. ip_hash: HMAC of the address, never the address.
clicks = sa.Table(
    "clicks",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    tenant_column(index=False),
    sa.Column("link_id", BigId, nullable=False),
    sa.Column("campaign_id", sa.Integer, nullable=True),
    sa.Column("variant", sa.String(16), nullable=True),
    sa.Column("contact_id", BigId, nullable=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("ip_hash", sa.LargeBinary(16), nullable=True),
    sa.Column("user_agent", sa.String(300), nullable=False, server_default=""),
    # None for a person; else what it was: preview, scanner, tool, head
    sa.Column("bot", sa.String(16), nullable=True),
    # reports (migration 0015): the clicker's place, from the link (a report groups a campaign's
    # clicks by place without joining contacts: 0.9 s for 50,000 clickers among 1,000,000).
    sa.Column("number_province", sa.String(16), nullable=True),
    sa.Column("number_city", sa.String(32), nullable=True),
    sa.Column("carrier", sa.String(8), nullable=True),
    # migration 0018: copied from a journey's link (the step is the variant)
    sa.Column("journey_id", sa.Integer, nullable=True),
    sa.Index("ix_clicks_campaign", "tenant_id", "campaign_id", "variant"),
    sa.Index("ix_clicks_contact", "tenant_id", "contact_id", "at"),
    # A journey's report reads its clicks by this; campaign clicks never enter it.
    sa.Index(
        "ix_clicks_journey",
        "tenant_id",
        "journey_id",
        "variant",
        postgresql_where=sa.text("journey_id IS NOT NULL"),
        sqlite_where=sa.text("journey_id IS NOT NULL"),
    ),
    info=SCOPED,
)

coupon_pools = sa.Table(
    "coupon_pools",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(index=False),
    sa.Column("name", sa.String(100), nullable=False),
    # generate: codes are made as they are issued (never runs out); import: a fixed stock
    sa.Column("kind", sa.String(12), nullable=False),
    sa.Column("amount_fen", sa.BigInteger, nullable=True),  # the discount, for the reports
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("tenant_id", "name", name="uq_coupon_pools_name"),
    info=SCOPED,
)

coupons = sa.Table(
    "coupons",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    tenant_column(index=False),
    sa.Column(
        "pool_id", sa.Integer, sa.ForeignKey("coupon_pools.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("code", sa.String(32), nullable=False),
    sa.Column("state", sa.String(12), nullable=False),  # available, issued, redeemed
    sa.Column("campaign_id", sa.Integer, nullable=True),
    sa.Column("variant", sa.String(16), nullable=True),
    sa.Column("contact_id", BigId, nullable=True),
    sa.Column("issued_at", UTCDateTime, nullable=True),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("redeemed_at", UTCDateTime, nullable=True),
    sa.Column("order_key", sa.String(80), nullable=True),
    sa.Column("journey_id", sa.Integer, nullable=True),  # migration 0018: a journey step's
    sa.UniqueConstraint("tenant_id", "code", name="uq_coupons_code"),
    sa.Index("ix_coupons_pool_state", "tenant_id", "pool_id", "state"),
    info=SCOPED,
)

# An order attributed to a campaign (by its coupon, else by the contact's last click within the
# window); one row per order at most (uq on the order key: order id, else the event id).
conversions = sa.Table(
    "conversions",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    tenant_fk(index=False),
    sa.Column("order_key", sa.String(80), nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),  # the order event's event_id
    # The buyer; None once they had their data erased (`contacts forget`, migration 0022).
    sa.Column("contact_id", BigId, nullable=True),
    sa.Column("campaign_id", sa.Integer, nullable=True),
    sa.Column("variant", sa.String(16), nullable=True),
    sa.Column("method", sa.String(8), nullable=False),  # coupon, click
    sa.Column("coupon_id", BigId, nullable=True),
    sa.Column("click_id", BigId, nullable=True),
    sa.Column("amount_fen", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("ordered_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # migration 0018: an order attributed to a journey (by its step's coupon or link)
    sa.Column("journey_id", sa.Integer, nullable=True),
    # migration 0022: the buyer's number province, city and carrier, written when the buyer is
    # erased (until then a report reads them from the contact), so the report still places
    # the order.
    sa.Column("number_province", sa.String(16), nullable=True),
    sa.Column("number_city", sa.String(32), nullable=True),
    sa.Column("carrier", sa.String(8), nullable=True),
    sa.UniqueConstraint("tenant_id", "order_key", name="uq_conversions_order"),
    sa.Index("ix_conversions_campaign", "tenant_id", "campaign_id", "variant"),
    sa.Index(
        "ix_conversions_journey",
        "tenant_id",
        "journey_id",
        "variant",
        postgresql_where=sa.text("journey_id IS NOT NULL"),
        sqlite_where=sa.text("journey_id IS NOT NULL"),
    ),
    info=SCOPED,
)

# An order that named a coupon we could not redeem: unknown, already used, not issued, expired.
coupon_rejections = sa.Table(
    "coupon_rejections",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    tenant_fk(),
    sa.Column("order_key", sa.String(80), nullable=False),
    sa.Column("code", sa.String(64), nullable=False),
    sa.Column("reason", sa.String(12), nullable=False),  # unknown, used, not_issued, expired
    sa.Column("at", UTCDateTime, nullable=False),
    info=SCOPED,
)

# -- campaigns and journeys (issue 7; see docs/architecture.md "Campaigns") ---------------------

# A campaign: who (a segment or an uploaded list), what (variants), when (schedule, window), and
# where it stands (draft → scheduled → running ⇄ paused → completed | cancelled).
campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(index=False),  # served by uq_campaigns_name
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("category", sa.String(16), nullable=False),  # marketing, notification
    sa.Column("important", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("state", sa.String(12), nullable=False),
    sa.Column(
        "segment_id", sa.Integer, sa.ForeignKey("segments.id", ondelete="SET NULL"), nullable=True
    ),
    # An uploaded list: the numbers' blind indexes (tenant:<id>:phone), matched to contacts.
    sa.Column("list_indexes", sa.JSON, nullable=True),
    sa.Column("route", sa.String(64), nullable=True),  # a channel name; None: the tenant's route
    sa.Column("schedule", sa.JSON, nullable=False),  # campaigns.schedule.Schedule.as_dict()
    sa.Column("window", sa.JSON, nullable=True),  # {"preset": …} or {"start","end","days"}
    sa.Column("on_window_end", sa.String(8), nullable=False, server_default="carry"),
    sa.Column("rate", sa.Float, nullable=True),  # messages a second to spread at (None: channel)
    sa.Column(
        "ab", sa.JSON, nullable=True
    ),  # {"share","metric","method","confidence","wait_hours"}
    sa.Column("decision", sa.JSON, nullable=True),  # the A/B winner and its evidence
    sa.Column("salt", sa.Integer, nullable=False),
    sa.Column("estimate", sa.JSON, nullable=False, default=dict),
    sa.Column("counts", sa.JSON, nullable=False, default=dict),  # the last launch's counts
    sa.Column("runs", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_run_at", UTCDateTime, nullable=True),
    sa.Column("phase", sa.String(8), nullable=True),  # test, rest (A/B), full
    sa.Column("launched_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("created_by", sa.String(80), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("tenant_id", "name", name="uq_campaigns_name"),
    # The scheduler looks for due campaigns across tenants.
    sa.Index("ix_campaigns_due", "state", "next_run_at"),
    info=SCOPED,
)

# A campaign's variants: an approved template version each, with a weight (or an A/B share).
campaign_variants = sa.Table(
    "campaign_variants",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(index=False),
    sa.Column(
        "campaign_id",
        sa.Integer,
        sa.ForeignKey("campaigns.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("name", sa.String(16), nullable=False),  # A, B, C …
    sa.Column("template_version_id", sa.Integer, nullable=False),
    sa.Column("weight", sa.Integer, nullable=False, server_default="1"),
    sa.Column("link_url", sa.String(500), nullable=True),
    sa.Column("coupon_pool_id", sa.Integer, nullable=True),
    sa.UniqueConstraint("campaign_id", "name", name="uq_campaign_variants_name"),
    info=SCOPED,
)

# One launch of a campaign (a recurring one launches once per occurrence; an A/B test twice:
# the test phase, then the rest): what was planned and what was left out, and why.
campaign_runs = sa.Table(
    "campaign_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(index=False),
    sa.Column(
        "campaign_id",
        sa.Integer,
        sa.ForeignKey("campaigns.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("run_no", sa.Integer, nullable=False),
    sa.Column("phase", sa.String(8), nullable=False),  # full, test, rest
    sa.Column("audience_id", sa.Integer, nullable=True),
    sa.Column("counts", sa.JSON, nullable=False, default=dict),
    sa.Column("seconds", sa.Float, nullable=False, server_default="0"),
    sa.Column("started_at", UTCDateTime, nullable=False),
    info=SCOPED,
)

# A tenant's frequency caps by lifecycle stage: {"new": [1, 7], "dormant": [1, 90], …}
# (at most N marketing messages in D days); stages not named use "default".
frequency_policies = sa.Table(
    "frequency_policies",
    metadata,
    sa.Column(
        "tenant_id",
        sa.Integer,
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("limits", sa.JSON, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    info=SCOPED,
)

# A contact's own choice from the preference page: weekly, monthly, important (only campaigns
# marked important), none (no marketing).
contact_preferences = sa.Table(
    "contact_preferences",
    metadata,
    sa.Column(
        "contact_id", BigId, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    ),
    tenant_fk(),
    sa.Column("frequency", sa.String(10), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # page, api, console
    sa.Column("updated_at", UTCDateTime, nullable=False),
    info=SCOPED,
)

# A behaviour-triggered journey: an event kind starts it, steps wait, test and send.
journeys = sa.Table(
    "journeys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(index=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),  # an event kind, or birthday
    sa.Column("exit_on", sa.String(16), nullable=True),  # an event kind that ends it (order)
    sa.Column("state", sa.String(8), nullable=False),  # active, paused
    sa.Column("created_by", sa.String(80), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("tenant_id", "name", name="uq_journeys_name"),
    info=SCOPED,
)

journey_steps = sa.Table(
    "journey_steps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    tenant_fk(index=False),
    sa.Column(
        "journey_id", sa.Integer, sa.ForeignKey("journeys.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(10), nullable=False),  # wait, condition, send
    sa.Column("minutes", sa.Integer, nullable=True),  # wait
    sa.Column("rule", sa.JSON, nullable=True),  # condition: a segment rule the contact must meet
    sa.Column("template_version_id", sa.Integer, nullable=True),  # send
    # send (migration 0018): where the step's {link} leads, and the pool its {coupon} comes from
    sa.Column("link_url", sa.String(500), nullable=True),
    sa.Column("coupon_pool_id", sa.Integer, nullable=True),  # no foreign key, as for variants
    sa.UniqueConstraint("journey_id", "position", name="uq_journey_steps_position"),
    info=SCOPED,
)

# A contact's way through a journey, started by one event.
journey_enrolments = sa.Table(
    "journey_enrolments",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    tenant_fk(index=False),
    sa.Column(
        "journey_id", sa.Integer, sa.ForeignKey("journeys.id", ondelete="CASCADE"), nullable=False
    ),
    # None once the contact had their data erased (migration 0022): the enrolment stays,
    # ended, for the journey's counts.
    sa.Column("contact_id", BigId, sa.ForeignKey("contacts.id", ondelete="CASCADE"), nullable=True),
    sa.Column("event_key", sa.String(64), nullable=False),  # the event id (or birthday:<date>)
    sa.Column("state", sa.String(10), nullable=False),  # active, completed, exited
    sa.Column("step", sa.Integer, nullable=False),  # the next step's position
    sa.Column("next_at", UTCDateTime, nullable=False),
    sa.Column("entered_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("outcome", sa.String(24), nullable=True),  # sent, converted, condition, capped …
    sa.UniqueConstraint("journey_id", "contact_id", "event_key", name="uq_journey_enrolments_key"),
    sa.Index("ix_journey_enrolments_due", "state", "next_at"),
    info=SCOPED,
)

# Frequency caps count a contact's marketing messages by due time: only marketing rows enter.
sa.Index(
    "ix_messages_contact_marketing",
    messages.c.tenant_id,
    messages.c.contact_id,
    messages.c.due_at,
    postgresql_where=sa.text("lane = 2 AND contact_id IS NOT NULL"),
    sqlite_where=sa.text("lane = 2 AND contact_id IS NOT NULL"),
)

# A tenant's RFM as of its last recompute (hongyan.audience.scoring.Cuts): per dimension the
# cut points of scores 2-5 (a buyer scores k or more exactly when its aggregate is above the
# k-th cut) and the sum of the buyers' scores (the mean is sum / buyers). Scores and groups are
# computed from these and the aggregates when read; nothing is stored per contact.
rfm_cuts = sa.Table(
    "rfm_cuts",
    metadata,
    sa.Column(
        "tenant_id", sa.Integer, sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("buyers", sa.Integer, nullable=False),  # 0: computed, nobody had ordered
    *(sa.Column(f"r{k}", UTCDateTime, nullable=True) for k in range(2, 6)),
    *(sa.Column(f"f{k}", sa.Integer, nullable=True) for k in range(2, 6)),
    *(sa.Column(f"m{k}", sa.BigInteger, nullable=True) for k in range(2, 6)),
    sa.Column("r_sum", sa.BigInteger, nullable=False),
    sa.Column("f_sum", sa.BigInteger, nullable=False),
    sa.Column("m_sum", sa.BigInteger, nullable=False),
    sa.Column("computed_at", UTCDateTime, nullable=False),
    info=SCOPED,
)

# A journey's messages (source ``journey``, source_ref ``journey:<id>``), for its report: only
# journey rows enter, so the outbox's other writes never touch it.
sa.Index(
    "ix_messages_journey",
    messages.c.tenant_id,
    messages.c.source_ref,
    postgresql_where=sa.text("source = 'journey'"),
    sqlite_where=sa.text("source = 'journey'"),
)
