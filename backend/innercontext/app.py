"""Application factory."""

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from innercontext import errors
from innercontext.api import router
from innercontext.config import Settings, get_settings
from innercontext.db import create_db_engine, create_session_factory
from innercontext.draining import CloseWhenDraining, watch_for_stop

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; ``settings`` default to the environment and ``.env``.

    The engine is created here (no connection is made until a request needs one) and disposed
    of on shutdown; once a stop signal arrived, responses close their connections (see
    ``draining``). Tests pass their own settings to point the app at any database. The API
    docs (/docs, /redoc, /openapi.json) exist only with ``DOCS_ENABLED=true``. A request that
    needs the database while it cannot be reached answers 503 (see ``errors``).
    """
    settings = settings or get_settings()
    engine = create_db_engine(settings.database_url)
    # Set by the server's stop signal: from then on every response closes its connection.
    draining = threading.Event()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        logger.info(
            "innercontext API starting (GEMINI_API_KEY %s)",
            "configured" if settings.gemini_configured else "not configured",
        )
        watch_for_stop(draining)
        yield
        engine.dispose()

    docs = settings.docs_enabled
    app = FastAPI(
        title="innercontext",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.engine = engine
    app.state.session_factory = create_session_factory(engine)
    app.include_router(router)
    errors.install(app)
    app.add_middleware(CloseWhenDraining, draining=draining)
    app.state.draining = draining
    return app
