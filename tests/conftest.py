"""Shared fixtures.

Database fixtures
-----------------
``db`` is parametrised over ``sqlite`` (a file in ``tmp_path``) and ``postgresql`` (a fresh
schema ``t_<hex>`` in the database ``test`` on 127.0.0.1:5432, dropped afterwards; marked
``postgres``). PostgreSQL is never skipped: when it does not answer, the fixture tries once to
start the local cluster and otherwise fails with a clear message. Select one backend with
``-m postgres`` / ``-m "not postgres"`` or ``-k sqlite``.

Other fixtures: ``config`` (the real ``config/humanline.yml``), ``clock`` (a settable fake
clock), ``cases`` (:class:`CaseService`), ``plans`` (:class:`PlanChangeService`).
"""

from __future__ import annotations

import os

# Tests hash many passwords: the lowest accepted scrypt cost keeps them fast (test_security checks
# that the default is OWASP's 2**17). Set before bot.services.agents reads it at import.
os.environ.setdefault("HUMANLINE_SCRYPT_N", str(2**14))
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bot.services.cases import CaseService
from bot.services.config import HumanlineConfig
from bot.services.plans import PlanChangeService
from bot.store.db import Database

# ``trained_model``: the model for the current config and data; its absence fails, never skips.
pytest_plugins = ["tests.model_fixture"]

PG_HOST = os.environ.get("HUMANLINE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("HUMANLINE_TEST_PG_PORT", "5432"))
PG_DATABASE = os.environ.get("HUMANLINE_TEST_PG_DB", "test")
PG_USERS = ("postgres", "root")


# ----------------------------------------------------------------------------- PostgreSQL


def _pg_url(user: str) -> str:
    return f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{PG_DATABASE}"


def _find_pg_url() -> tuple[str | None, str]:
    """The first URL (user ``postgres``, then ``root``) that answers, and the last error."""
    error = ""
    for user in PG_USERS:
        engine = create_engine(_pg_url(user), future=True, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return _pg_url(user), ""
        except Exception as exc:  # noqa: BLE001 - try the next user, report the last error
            error = f"{type(exc).__name__}: {exc}".strip()
        finally:
            engine.dispose()
    return None, error


def _start_local_cluster() -> str:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions:
        return "no /etc/postgresql cluster to start"
    cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(cmd)}: {exc}"
    return f"{' '.join(cmd)} exited {done.returncode}: {(done.stderr or done.stdout).strip()}"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A URL of the test PostgreSQL server; starts the local cluster once if needed, else fails."""
    url, error = _find_pg_url()
    if url is None:
        started = _start_local_cluster()
        url, error = _find_pg_url()
        if url is None:
            pytest.fail(
                f"PostgreSQL is required on {PG_HOST}:{PG_PORT} (database {PG_DATABASE!r}, user postgres or root, "
                f"trust auth) and is not reachable: {error}. Tried to start it: {started}",
                pytrace=False,
            )
    return url


# ----------------------------------------------------------------------------- databases


def make_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Database:
    """A migrated, empty database of ``backend`` (``sqlite`` or ``postgresql``), cleaned up after the test."""
    if backend == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'humanline-test.db'}")
    else:
        url = request.getfixturevalue("postgres_url")
        db = Database(url, schema=f"t_{uuid.uuid4().hex[:12]}")

    def cleanup() -> None:
        try:
            db.drop_schema()
        finally:
            db.dispose()

    request.addfinalizer(cleanup)
    db.migrate()
    return db


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """A freshly migrated database, once on SQLite and once on PostgreSQL."""
    return make_database(request.param, tmp_path, request)


@pytest.fixture
def backend_name(db: Database) -> str:
    """``sqlite`` or ``postgresql`` for the current ``db``."""
    return db.url.get_backend_name()


# ----------------------------------------------------------------------------- services


class FakeClock:
    """A clock the test moves by hand; calling it returns the current (aware, UTC) time."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        """Move forward by ``timedelta(**delta)`` and return the new time."""
        self.now = self.now + timedelta(**delta)
        return self.now

    def set(self, value: datetime) -> None:
        self.now = value


@pytest.fixture(scope="session")
def config() -> HumanlineConfig:
    """The real business configuration."""
    return HumanlineConfig.load()


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at 2026-11-04 09:00 UTC."""
    return FakeClock(datetime(2026, 11, 4, 9, 0, tzinfo=timezone.utc))


@pytest.fixture
def cases(db: Database, config: HumanlineConfig, clock: FakeClock) -> CaseService:
    """A :class:`CaseService` on ``db`` with the fake clock."""
    return CaseService(db, config, clock=clock)


@pytest.fixture
def plans(db: Database, config: HumanlineConfig, clock: FakeClock, cases: CaseService) -> Iterator[PlanChangeService]:
    """A :class:`PlanChangeService` (local account backend) on ``db`` with the fake clock."""
    yield PlanChangeService(db, config, cases=cases, clock=clock)
