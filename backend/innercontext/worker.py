"""Pricing worker: ``python -m innercontext.worker``.

Every ``PRICING_INTERVAL_SECONDS`` the worker prices the products that have never been priced or
whose price is older than ``PRICE_MAX_AGE_SECONDS``, in batches of one transaction each. SIGTERM
or SIGINT lets the current batch commit, then the process exits with status 0.
"""

import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from types import FrameType

from sqlalchemy import or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from innercontext.config import Settings, configure_logging, get_settings
from innercontext.db import create_db_engine, create_session_factory
from innercontext.models import DEFAULT_CURRENCY, PriceObservation, Product
from innercontext.pricing import compute_price
from innercontext.sdnotify import notify

# Not __name__: that is "__main__" when run with ``python -m``.
logger = logging.getLogger("innercontext.worker")

BATCH_SIZE = 100


def refresh_batch(
    session_factory: sessionmaker[Session], *, now: datetime, cutoff: datetime, batch_size: int
) -> int:
    """Price up to ``batch_size`` products last priced before ``cutoff``; commit; return count.

    Rows are locked with SKIP LOCKED, so a second worker (e.g. during a deploy) never prices the
    same product concurrently.
    """
    stale = or_(Product.price_updated_at.is_(None), Product.price_updated_at < cutoff)
    query = (
        select(Product)
        .where(stale)
        .order_by(Product.price_updated_at.asc().nulls_first(), Product.id)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    with session_factory.begin() as session:
        products = session.scalars(query).all()
        for product in products:
            price = compute_price(product.id, product.name, now)
            session.add(
                PriceObservation(
                    product_id=product.id, price=price, currency=DEFAULT_CURRENCY, observed_at=now
                )
            )
            product.current_price = price
            product.currency = DEFAULT_CURRENCY
            product.price_updated_at = now
    return len(products)


def run_cycle(
    session_factory: sessionmaker[Session],
    *,
    max_age: timedelta,
    stop: threading.Event | None = None,
    batch_size: int = BATCH_SIZE,
    now: datetime | None = None,
) -> int:
    """Refresh every stale product, batch by batch, until none is left or ``stop`` is set.

    All products priced in one cycle get the same timestamp, which is newer than the cutoff, so
    the cycle always terminates.
    """
    now = now or datetime.now(UTC)
    cutoff = now - max_age
    total = 0
    while True:
        refreshed = refresh_batch(session_factory, now=now, cutoff=cutoff, batch_size=batch_size)
        total += refreshed
        if refreshed < batch_size or (stop is not None and stop.is_set()):
            return total


def run(settings: Settings, stop: threading.Event) -> None:
    """Run pricing cycles until ``stop`` is set. A failed cycle is logged and retried later."""
    engine = create_db_engine(settings.database_url)
    session_factory = create_session_factory(engine)
    max_age = timedelta(seconds=settings.price_max_age_seconds)
    logger.info(
        "pricing worker started: interval %ss, max price age %ss, GEMINI_API_KEY %s",
        settings.pricing_interval_seconds,
        settings.price_max_age_seconds,
        "configured" if settings.gemini_configured else "not configured",
    )
    # Started: systemd's `restart` of this unit returns now (Type=notify).
    notify("READY=1")
    try:
        while not stop.is_set():
            try:
                refreshed = run_cycle(session_factory, max_age=max_age, stop=stop)
            except SQLAlchemyError as exc:
                # The driver's message (never the password), without SQLAlchemy's SQL echo.
                logger.error("pricing cycle failed: %s", getattr(exc, "orig", None) or exc)
            else:
                logger.info("worker heartbeat: refreshed %d products", refreshed)
            stop.wait(settings.pricing_interval_seconds)
    finally:
        notify("STOPPING=1")
        engine.dispose()
    logger.info("pricing worker stopped")


def main() -> int:
    configure_logging()
    settings = get_settings()
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s, stopping after the current batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    # The loop runs in a worker thread: signal handlers always run in the main thread, which
    # here only waits, so setting the event can never interrupt the loop's own use of it.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pricing") as pool:
        pool.submit(run, settings, stop).result()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
