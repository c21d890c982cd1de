"""Schema migrations (Alembic), run from code so no alembic.ini is needed."""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from hongyan.errors import DatabaseNotReady

MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


@functools.cache  # the scripts on disk are this process's code; reading them takes 0.2 s
def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Bring the schema to ``revision``; returns the revision now in place.

    On SQLite, a migration that changes a table's constraints rebuilds it (Alembic's batch
    mode: copy, ``DROP TABLE``, rename), and with foreign keys enforced ``DROP TABLE`` first
    deletes the table's rows and runs their ``ON DELETE CASCADE``: the rebuild of ``contacts``
    would empty ``contact_tags``. So foreign keys are off while migrations run (SQLite only
    changes the setting outside a transaction), every key is checked with
    ``PRAGMA foreign_key_check`` before the commit (a violation rolls the upgrade back), and
    they are on again before the connection goes back to the pool."""
    cfg = _config()
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        raw = conn.connection.dbapi_connection
        assert raw is not None
        if sqlite:
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")
    current = current_revision(engine)
    assert current is not None
    return current


def revision(engine: Engine, message: str) -> None:
    """Autogenerate a new migration against ``engine`` (a developer's tool)."""
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=message, autogenerate=True)


def require_migrated(engine: Engine) -> None:
    """Raise a typed error when the database is behind the code."""
    if current_revision(engine) != head_revision():
        raise DatabaseNotReady()
