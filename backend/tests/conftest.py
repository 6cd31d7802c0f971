"""Test fixtures. The suite needs a real PostgreSQL database named by TEST_DATABASE_URL.

The database's ``public`` schema is dropped and rebuilt from the migrations at the start of the
session, so never point TEST_DATABASE_URL at a database you care about.
"""

import os
import socket
import sys
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from innercontext.app import create_app
from innercontext.db import create_db_engine, create_session_factory
from tests.support import ENV_VARS, LOOPBACK, Process, make_settings, migrate, reset_schema


def pytest_configure(config: pytest.Config) -> None:
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        raise pytest.UsageError(
            "TEST_DATABASE_URL is not set. The tests need a throwaway PostgreSQL database, e.g.\n"
            "  TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:54329/innercontext_test"
        )
    database = make_url(url).database or ""
    if "test" not in database:
        raise pytest.UsageError(
            f"TEST_DATABASE_URL names database {database!r}; the tests drop its schema, so its "
            "name must contain 'test'."
        )


# --- database -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def database_url() -> str:
    return os.environ["TEST_DATABASE_URL"]


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def migrated_engine(engine: Engine) -> Engine:
    reset_schema(engine)
    migrate(engine)
    return engine


@pytest.fixture
def db(migrated_engine: Engine) -> Engine:
    """The migrated test database with empty tables."""
    with migrated_engine.begin() as conn:
        conn.execute(text("TRUNCATE products, price_observations RESTART IDENTITY CASCADE"))
    return migrated_engine


@pytest.fixture
def scratch_db(engine: Engine) -> Iterator[Engine]:
    """An empty schema (no tables, no alembic_version); migrated back to head afterwards."""
    reset_schema(engine)
    yield engine
    reset_schema(engine)
    migrate(engine)


@pytest.fixture
def session_factory(db: Engine) -> sessionmaker[Session]:
    return create_session_factory(db)


# --- application ----------------------------------------------------------------------------


@pytest.fixture
def client(db: Engine, database_url: str) -> Iterator[TestClient]:
    """A remote client (what comes through nginx from elsewhere)."""
    with TestClient(create_app(make_settings(database_url))) as client:
        yield client


@pytest.fixture
def local_client(db: Engine, database_url: str) -> Iterator[TestClient]:
    """A client on the server's loopback (the deployer's probe)."""
    with TestClient(create_app(make_settings(database_url)), client=LOOPBACK) as client:
        yield client


@pytest.fixture
def free_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- subprocesses ---------------------------------------------------------------------------


@pytest.fixture
def spawn() -> Iterator[Callable[..., Process]]:
    """Start ``python -m <module> ...`` from backend/ with the given settings in its environment."""
    processes: list[Process] = []

    def start(*module_args: str, **settings: str) -> Process:
        env = {key: value for key, value in os.environ.items() if key not in ENV_VARS}
        env.update({key.upper(): value for key, value in settings.items()})
        process = Process([sys.executable, "-m", *module_args], env)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.kill()
