"""Shared fixtures. Every storage test runs on SQLite and on PostgreSQL.

PostgreSQL: ``HONGYAN_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``) names a
server where each test run creates and drops its own databases. Under ``CI=true`` a missing server
fails the run; elsewhere the PostgreSQL half is skipped with the reason shown.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from hongyan.api.app import create_app
from hongyan.clock import FixedClock
from hongyan.db import migrate
from hongyan.runtime import Runtime
from hongyan.security.keyring import KeyRing
from hongyan.settings import Settings

PG_URL = os.environ.get("HONGYAN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"

# Properties, not timings: a loaded machine must not fail a property test by its clock (the
# benchmarks measure speed). CI draws the same examples every run, so a red CI is reproducible.
hypothesis_settings.register_profile(
    "hongyan",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=IN_CI,
    database=None if IN_CI else hypothesis_settings.default.database,
)
hypothesis_settings.load_profile("hongyan")


def _pg_admin() -> sa.Engine | None:
    url = PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(
        url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # the server is not there
        engine.dispose()
        if IN_CI:
            raise RuntimeError(
                f"CI=true but PostgreSQL at {PG_URL} does not answer: {exc}"
            ) from exc
        return None
    return engine


_PG_ADMIN: sa.Engine | bool | None = False


def pg_admin() -> sa.Engine | None:
    global _PG_ADMIN
    if _PG_ADMIN is False:
        _PG_ADMIN = _pg_admin()
    return _PG_ADMIN  # type: ignore[return-value]


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 11, 2, 0, tzinfo=UTC))  # 10:00 in Shanghai


def test_settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        env="test",
        var_dir=tmp_path / "var",
        database_url=database_url,
        data_keys=f"k1:{KeyRing.generate_key()}",
        active_key="k1",
        index_key=KeyRing.generate_key(),
        session_secret="test-session-secret-" + uuid.uuid4().hex,
    )


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    admin = pg_admin()
    if admin is None:
        pytest.skip(f"PostgreSQL at {PG_URL} does not answer; PostgreSQL half skipped")
    name = f"hongyan_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = sa.engine.make_url(PG_URL)
    yield base.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Any test that (indirectly) uses ``database_url`` runs once per backend."""
    if "database_url" in metafunc.fixturenames:
        marks = {m.name for m in metafunc.definition.iter_markers()}
        backends = ["sqlite"] if "sqlite_only" in marks else ["sqlite", "postgres"]
        metafunc.parametrize("database_url", backends, indirect=True)


@pytest.fixture
def bare_runtime(tmp_path: Path, database_url: str, clock: FixedClock) -> Iterator[Runtime]:
    """A runtime on an empty, unmigrated database."""
    runtime = Runtime.create(test_settings(tmp_path, database_url), clock=clock)
    yield runtime
    runtime.close()


@pytest.fixture
def runtime(bare_runtime: Runtime) -> Runtime:
    migrate.upgrade(bare_runtime.engine)
    return bare_runtime


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as c:
        yield c
