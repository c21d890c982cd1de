"""Shared fixtures. Every storage test runs on SQLite and on PostgreSQL.

PostgreSQL: ``HONGYAN_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``) names a
server where each test run creates and drops its own databases. Under ``CI=true`` a missing server
fails the run; elsewhere the PostgreSQL half is skipped with the reason shown.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
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


# Databases already at the head revision, made once per run and per backend: a test that uses
# the migrated ``runtime`` gets a copy (a file copy on SQLite, CREATE DATABASE … TEMPLATE on
# PostgreSQL) instead of running every migration again, which cost 1.5–3 s a test. The migrations
# themselves are still tested from an empty database (tests/db/test_migrate.py, ``bare_runtime``).
_TEMPLATES: dict[str, str] = {}
#: URLs of test databases that were copied from a template (already migrated).
MIGRATED: set[str] = set()


def _template(backend: str, factory: pytest.TempPathFactory) -> str:
    if backend not in _TEMPLATES:
        if backend == "sqlite":
            path = factory.mktemp("template") / "migrated.db"
            engine = sa.create_engine(f"sqlite:///{path}")
            _TEMPLATES[backend] = str(path)
        else:
            admin = pg_admin()
            assert admin is not None
            name = f"hongyan_tmpl_{uuid.uuid4().hex[:12]}"
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            url = sa.engine.make_url(PG_URL).set(drivername="postgresql+psycopg", database=name)
            engine = sa.create_engine(url)
            _TEMPLATES[backend] = name
        try:
            migrate.upgrade(engine)
        finally:
            engine.dispose()  # a template database must have no connections when it is copied
    return _TEMPLATES[backend]


class _Prefetch:
    """Copies of the PostgreSQL template made ahead, in a thread, while tests run.

    CREATE DATABASE … TEMPLATE takes about half a second of the server's time; made one test
    ahead, it overlaps the previous test instead of adding to it (about 900 tests ask for one).
    """

    AHEAD = 2

    def __init__(self, admin: sa.Engine, template: str) -> None:
        self.admin, self.template = admin, template
        self.ready: queue.Queue[str | BaseException] = queue.Queue(maxsize=self.AHEAD)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pg-prefetch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            name = f"hongyan_test_{uuid.uuid4().hex[:12]}"
            try:
                with self.admin.connect() as conn:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
                item: str | BaseException = name
            except BaseException as exc:  # handed to the test that asks next
                item = exc
            while not self.stopped.is_set():
                try:
                    self.ready.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue
            else:
                if isinstance(item, str):
                    _drop(self.admin, item)

    def take(self) -> str:
        item = self.ready.get(timeout=120)
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(10)
        while not self.ready.empty():
            item = self.ready.get_nowait()
            if isinstance(item, str):
                _drop(self.admin, item)


_PREFETCH: _Prefetch | None = None


def _drop(admin: sa.Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _migrated_pg(admin: sa.Engine, factory: pytest.TempPathFactory) -> str:
    global _PREFETCH
    if _PREFETCH is None:
        _PREFETCH = _Prefetch(admin, _template("postgres", factory))
    return _PREFETCH.take()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _PREFETCH is not None:
        _PREFETCH.close()
    name = _TEMPLATES.pop("postgres", None)
    admin = pg_admin()
    if name and admin is not None:
        _drop(admin, name)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    backend = getattr(request, "param", "sqlite")
    # Only a test that asks for the migrated runtime gets a copy of the template.
    migrated = "runtime" in request.fixturenames
    factory = request.getfixturevalue("tmp_path_factory")
    if backend == "sqlite":
        path = tmp_path / "test.db"
        url = f"sqlite:///{path}"
        if migrated:
            shutil.copyfile(_template(backend, factory), path)
            MIGRATED.add(url)
        yield url
        MIGRATED.discard(url)
        return
    admin = pg_admin()
    if admin is None:
        pytest.skip(f"PostgreSQL at {PG_URL} does not answer; PostgreSQL half skipped")
    if migrated:
        name = _migrated_pg(admin, factory)
    else:
        name = f"hongyan_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = sa.engine.make_url(PG_URL)
    url = base.set(database=name).render_as_string(hide_password=False)
    if migrated:
        MIGRATED.add(url)
    yield url
    MIGRATED.discard(url)
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


def migrated(runtime: Runtime) -> Runtime:
    """The runtime with its database at the head revision (copied from a template, or migrated)."""
    if runtime.settings.database_url not in MIGRATED:
        migrate.upgrade(runtime.engine)
    return runtime


@pytest.fixture
def runtime(bare_runtime: Runtime) -> Runtime:
    return migrated(bare_runtime)


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as c:
        yield c
