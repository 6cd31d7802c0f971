"""The API answers 503 (never 500) when its database cannot be reached, for every endpoint."""

import time
from collections.abc import Iterator

import psycopg
import psycopg.errors
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from innercontext.app import create_app
from innercontext.errors import UNAVAILABLE_BODY, database_unreachable
from tests.support import make_settings

ENDPOINTS = [
    ("GET", "/products", None),
    ("POST", "/products", {"name": "Desk lamp"}),
    ("GET", "/products/1/prices", None),
]


@pytest.fixture
def dead_client(free_port: int) -> Iterator[TestClient]:
    """A client of an app whose database does not answer (nothing listens on its port)."""
    url = f"postgresql+psycopg://innercontext:hunter2-secret@127.0.0.1:{free_port}/innercontext"
    with TestClient(create_app(make_settings(url))) as client:
        yield client


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_every_endpoint_answers_503_without_its_database(
    dead_client: TestClient, free_port: int, method: str, path: str, body: object
) -> None:
    started = time.monotonic()
    response = dead_client.request(method, path, json=body)
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.json() == UNAVAILABLE_BODY
    assert response.json()["error"] == "database_unavailable"
    # Nothing about the server: no password, user, address or port.
    for secret in ("hunter2", "innercontext:", "127.0.0.1", str(free_port)):
        assert secret not in response.text
    assert elapsed < 5


def test_the_health_check_says_the_same(dead_client: TestClient) -> None:
    assert dead_client.get("/health-check").status_code == 503
    assert dead_client.get("/products").status_code == 503


def test_a_failing_query_is_still_a_server_error(scratch_db: Engine, database_url: str) -> None:
    # The database answers, but the schema is empty: a bug to fix, not an outage to wait out.
    app = create_app(make_settings(database_url))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/products")
    assert response.status_code == 500


def _wrapped(orig: Exception) -> OperationalError:
    return OperationalError("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    ("exc", "unreachable"),
    [
        # Refused, timed out, closed under us: the driver has no SQLSTATE for these.
        (_wrapped(psycopg.OperationalError("connection refused")), True),
        (_wrapped(psycopg.errors.AdminShutdown("terminating connection")), True),
        (_wrapped(psycopg.errors.CannotConnectNow("the database system is starting up")), True),
        (_wrapped(psycopg.errors.TooManyConnections("too many clients")), True),
        (_wrapped(psycopg.errors.ConnectionFailure("connection failure")), True),
        (PoolTimeout("QueuePool limit reached"), True),
        # A statement that took too long or a broken query: the database is there.
        (_wrapped(psycopg.errors.QueryCanceled("statement timeout")), False),
        (
            ProgrammingError(
                "SELECT 1", {}, psycopg.errors.UndefinedTable("relation does not exist")
            ),
            False,
        ),
        (ValueError("not a database error"), False),
    ],
)
def test_what_counts_as_unreachable(exc: Exception, unreachable: bool) -> None:
    assert database_unreachable(exc) is unreachable
