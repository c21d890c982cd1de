"""Contacts remember the digest of the import row last applied to them, so a re-import skips
the rows it would not change; any other update clears it (a trigger)

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-30 16:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hongyan.db.scope import unscoped

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# An update that does not set import_digest to something new (the console setting a time zone,
# key rotation, the zone backfill, a future writer) clears it: the digest then no longer
# describes the contact, and the next import of that row writes it again. Done by the database,
# so no writer has to remember it. The import's own updates change the digest, and the WHEN
# clause spares them the call. (Forget deletes the contact.) On SQLite a table rebuild (a
# batch_alter_table of contacts) drops the trigger: a later migration doing one must create it
# again (tests/db/test_migration_import_digest.py checks it at head).
PG_FUNCTION = """
CREATE FUNCTION hongyan_contacts_import_digest_reset() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.import_digest := NULL;
    RETURN NEW;
END
$$
"""
PG_TRIGGER = """
CREATE TRIGGER contacts_import_digest_reset BEFORE UPDATE ON contacts FOR EACH ROW
WHEN (OLD.import_digest IS NOT NULL AND NEW.import_digest IS NOT DISTINCT FROM OLD.import_digest)
EXECUTE FUNCTION hongyan_contacts_import_digest_reset()
"""
# SQLite cannot change NEW in a BEFORE trigger: an AFTER trigger clears it (triggers do not
# recurse unless recursive_triggers is on, and the inner update's WHEN is false anyway).
SQLITE_TRIGGER = """
CREATE TRIGGER contacts_import_digest_reset AFTER UPDATE ON contacts FOR EACH ROW
WHEN OLD.import_digest IS NOT NULL AND NEW.import_digest IS OLD.import_digest
BEGIN
    UPDATE contacts SET import_digest = NULL WHERE id = NEW.id;
END
"""


def _run(statement: str) -> None:
    op.execute(unscoped(sa.text(statement), "schema migration"))


def upgrade() -> None:
    op.add_column("contacts", sa.Column("import_digest", sa.LargeBinary(16), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        _run(PG_FUNCTION)
        _run(PG_TRIGGER)
    else:
        _run(SQLITE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _run("DROP TRIGGER contacts_import_digest_reset ON contacts")
        _run("DROP FUNCTION hongyan_contacts_import_digest_reset()")
        op.drop_column("contacts", "import_digest")
    else:
        _run("DROP TRIGGER contacts_import_digest_reset")
        # Natively (SQLite 3.35+), not by rebuilding the table: its DROP TABLE would cascade
        # to contact_tags with foreign keys on (a reviewer found the tags gone).
        _run("ALTER TABLE contacts DROP COLUMN import_digest")
