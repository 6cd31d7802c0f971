"""What the API answers when its database cannot be reached: 503, never 500.

One exception handler for the whole app (not per endpoint): a SQLAlchemy error whose cause is
the driver failing to reach PostgreSQL (refused, timed out, closed under us, shutting down,
starting up, full of connections) or the pool waiting in vain for a connection becomes
``503 {"detail": ..., "error": "database_unavailable"}``. Anything else (a bad query, a
missing table) is a bug and stays a 500. The body names nothing of the server (no host, port
or user); the log line does, as the driver words it (never the password).
"""

import logging

import psycopg
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

logger = logging.getLogger(__name__)

DATABASE_UNAVAILABLE = "database_unavailable"
UNAVAILABLE_BODY = {
    "detail": "The database is unavailable. Please try again shortly.",
    "error": DATABASE_UNAVAILABLE,
}

# SQLSTATEs of a server that cannot serve us right now: class 08 (connection exception),
# admin/crash shutdown, "the database system is starting up / shutting down", too many
# connections.
_UNAVAILABLE_STATES = ("57P01", "57P02", "57P03", "53300")


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database could not be reached (rather than a failed query)."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if not isinstance(orig, psycopg.OperationalError):
        return False
    state = orig.sqlstate
    # No SQLSTATE: the client could not connect or lost the connection (refused, timeout,
    # "server closed the connection unexpectedly").
    return state is None or state.startswith("08") or state in _UNAVAILABLE_STATES


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if not database_unreachable(exc):
        raise exc
    logger.warning(
        "%s %s: database unavailable: %s", request.method, request.url.path, _first_line(exc)
    )
    return JSONResponse(status_code=status.HTTP_503_SERVICE_UNAVAILABLE, content=UNAVAILABLE_BODY)


def install(app: FastAPI) -> None:
    """Answer 503 for every request that needed the database and could not reach it."""
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeout, _database_error)
