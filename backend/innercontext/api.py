"""HTTP routes. nginx strips the ``/api`` prefix, so routes live at the root."""

import ipaddress
import logging
from collections.abc import Iterator, Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from innercontext.models import PriceObservation, Product
from innercontext.schemas import (
    HealthOk,
    HealthPublic,
    HealthUnavailable,
    PriceOut,
    ProductCreate,
    ProductOut,
)

logger = logging.getLogger(__name__)

HEALTH_STATEMENT_TIMEOUT_MS = 3000

PRODUCTS_PAGE_DEFAULT = 100
PRODUCTS_PAGE_MAX = 500
# products.id is a PostgreSQL integer: a larger `after` would fail in the database, not match.
PRODUCT_ID_MAX = 2**31 - 1

router = APIRouter()


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def database_revision(engine: Engine) -> str | None:
    """The alembic revision recorded in the database, or None if it has not been migrated."""
    with engine.connect() as conn:
        conn.execute(text(f"SET LOCAL statement_timeout = {HEALTH_STATEMENT_TIMEOUT_MS}"))
        migrated = conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        if not migrated:
            return None
        return conn.scalar(text("SELECT version_num FROM alembic_version LIMIT 1"))


def is_loopback(request: Request) -> bool:
    """Whether the client is this machine. Behind nginx, uvicorn (``--proxy-headers
    --forwarded-allow-ips 127.0.0.1``) puts the real client from X-Forwarded-For here, so a
    request through nginx is loopback only when it came from the server itself."""
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


@router.get(
    "/health-check",
    response_model=HealthOk | HealthPublic,
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": HealthUnavailable | HealthPublic}},
)
def health_check(request: Request) -> HealthOk | HealthPublic | JSONResponse:
    """200 when the database answers, 503 when it does not. Only loopback clients (the
    deployer's probe on the server) see the detail: database state, schema revision, reason."""
    local = is_loopback(request)
    try:
        revision = database_revision(request.app.state.engine)
    except SQLAlchemyError as exc:
        # The driver's message names host, port and user (never the password): log it, but
        # answer with the error class only.
        logger.warning("health check failed: %s", getattr(exc, "orig", None) or exc)
        body: HealthUnavailable | HealthPublic = (
            HealthUnavailable(reason=f"database unavailable ({exc.__class__.__name__})")
            if local
            else HealthPublic(status="unavailable")
        )
        return JSONResponse(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE, content=body.model_dump()
        )
    return HealthOk(revision=revision) if local else HealthPublic(status="ok")


@router.get("/products", response_model=list[ProductOut])
def list_products(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=PRODUCTS_PAGE_MAX)] = PRODUCTS_PAGE_DEFAULT,
    after: Annotated[int, Query(ge=0, le=PRODUCT_ID_MAX)] = 0,
) -> Sequence[Product]:
    """One page of products by id (keyset paging): at most ``limit`` products whose id is
    greater than ``after``. The next page starts after the last id of this one; a page shorter
    than ``limit`` is the last."""
    query = select(Product).where(Product.id > after).order_by(Product.id).limit(limit)
    return session.scalars(query).all()


@router.post("/products", response_model=ProductOut, status_code=status.HTTP_201_CREATED)
def create_product(body: ProductCreate, session: SessionDep) -> Product:
    product = Product(name=body.name, url=body.url)
    session.add(product)
    session.commit()
    return product


@router.get("/products/{product_id}/prices", response_model=list[PriceOut])
def list_product_prices(product_id: int, session: SessionDep) -> Sequence[PriceObservation]:
    if session.get(Product, product_id) is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="Product not found")
    query = (
        select(PriceObservation)
        .where(PriceObservation.product_id == product_id)
        .order_by(PriceObservation.observed_at.desc(), PriceObservation.id.desc())
    )
    return session.scalars(query).all()
