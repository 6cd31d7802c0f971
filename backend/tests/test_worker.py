import signal
import socket
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from innercontext.models import PriceObservation, Product
from innercontext.pricing import compute_price
from innercontext.worker import run_cycle

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
MAX_AGE = timedelta(days=1)


def add_products(session_factory: sessionmaker[Session], *names: str) -> list[int]:
    with session_factory.begin() as session:
        products = [Product(name=name) for name in names]
        session.add_all(products)
    return [product.id for product in products]


def observation_counts(session_factory: sessionmaker[Session]) -> dict[int, int]:
    with session_factory() as session:
        rows = session.execute(
            select(PriceObservation.product_id, func.count()).group_by(PriceObservation.product_id)
        )
        return {product_id: count for product_id, count in rows}


def test_cycle_prices_never_priced_products(session_factory: sessionmaker[Session]) -> None:
    ids = add_products(session_factory, "Kettle", "Mug")

    assert run_cycle(session_factory, max_age=MAX_AGE, now=T0) == 2

    with session_factory() as session:
        for product_id in ids:
            product = session.get_one(Product, product_id)
            assert product.current_price == compute_price(product_id, product.name, T0)
            assert product.price_updated_at == T0
            observation = session.scalars(
                select(PriceObservation).where(PriceObservation.product_id == product_id)
            ).one()
            assert (observation.price, observation.observed_at) == (product.current_price, T0)


def test_cycle_refreshes_only_stale_products(session_factory: sessionmaker[Session]) -> None:
    fresh, stale = add_products(session_factory, "Fresh", "Stale")
    run_cycle(session_factory, max_age=MAX_AGE, now=T0)
    with session_factory.begin() as session:
        session.execute(
            update(Product).where(Product.id == stale).values(price_updated_at=T0 - 2 * MAX_AGE)
        )
    (new,) = add_products(session_factory, "New")

    refreshed = run_cycle(session_factory, max_age=MAX_AGE, now=T0 + timedelta(hours=1))

    assert refreshed == 2
    assert observation_counts(session_factory) == {fresh: 1, stale: 2, new: 1}
    assert run_cycle(session_factory, max_age=MAX_AGE, now=T0 + timedelta(hours=2)) == 0


def test_cycle_works_through_all_batches(session_factory: sessionmaker[Session]) -> None:
    ids = add_products(session_factory, *(f"Product {i}" for i in range(7)))

    assert run_cycle(session_factory, max_age=MAX_AGE, now=T0, batch_size=3) == 7
    assert observation_counts(session_factory) == dict.fromkeys(ids, 1)


def test_stop_commits_the_current_batch_and_ends_the_cycle(
    session_factory: sessionmaker[Session],
) -> None:
    add_products(session_factory, *(f"Product {i}" for i in range(7)))
    stop = threading.Event()
    stop.set()

    assert run_cycle(session_factory, max_age=MAX_AGE, now=T0, batch_size=3, stop=stop) == 3
    assert sum(observation_counts(session_factory).values()) == 3


@pytest.mark.parametrize(
    ("sig", "interval"),
    [(signal.SIGTERM, "3600"), (signal.SIGINT, "3600"), (signal.SIGTERM, "0.01")],
)
def test_worker_process_stops_cleanly_on_signal(
    spawn, db, database_url: str, sig: signal.Signals, interval: str
) -> None:
    worker = spawn(
        "innercontext.worker",
        database_url=database_url,
        pricing_interval_seconds=interval,
        gemini_api_key="gemini-secret-value",
    )
    worker.wait_for_line("worker heartbeat: refreshed 0 products")

    # With a one-hour interval, a prompt exit proves the sleep is interrupted.
    assert worker.stop(sig, timeout=5) == 0
    assert "pricing worker stopped" in worker.output
    assert "gemini-secret-value" not in worker.output


def test_worker_process_prices_products(spawn, session_factory, database_url: str) -> None:
    ids = add_products(session_factory, "Kettle", "Mug", "Tea")
    worker = spawn(
        "innercontext.worker", database_url=database_url, pricing_interval_seconds="3600"
    )

    worker.wait_for_line("worker heartbeat: refreshed 3 products")
    assert worker.stop() == 0
    assert observation_counts(session_factory) == dict.fromkeys(ids, 1)


def test_worker_process_survives_database_outage(spawn, free_port: int) -> None:
    url = f"postgresql+psycopg://innercontext:hunter2-secret@127.0.0.1:{free_port}/innercontext"
    worker = spawn("innercontext.worker", database_url=url, pricing_interval_seconds="0.05")

    worker.wait_for_line("pricing cycle failed")
    worker.wait_for_line("pricing cycle failed")
    assert worker.stop() == 0
    assert "hunter2" not in worker.output


def test_worker_tells_systemd_it_started_and_stops(spawn, db, database_url: str, tmp_path) -> None:
    """Type=notify: READY=1 once running (what `systemctl restart` waits for), STOPPING=1 on
    the way out."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(30)
        worker = spawn(
            "innercontext.worker",
            database_url=database_url,
            pricing_interval_seconds="3600",
            notify_socket=path,
        )
        assert sock.recv(256) == b"READY=1"
        assert worker.stop(signal.SIGTERM, timeout=5) == 0
        assert sock.recv(256) == b"STOPPING=1"
