import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from innercontext.app import create_app
from innercontext.config import Settings
from innercontext.models import Product
from innercontext.worker import run_cycle
from tests.support import HEAD_REVISION, LOOPBACK, make_settings

PRODUCT_KEYS = {"id", "name", "url", "current_price", "currency", "price_updated_at"}
MONEY = re.compile(r"^\d+\.\d{2}$")


def test_health_check_ok(local_client: TestClient) -> None:
    response = local_client.get("/health-check")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "revision": HEAD_REVISION}


@pytest.mark.parametrize("peer", [("::1", 50000), ("::ffff:127.0.0.1", 50000)])
def test_health_check_detail_for_every_loopback_address(
    db: object, database_url: str, peer: tuple[str, int]
) -> None:
    with TestClient(create_app(make_settings(database_url)), client=peer) as client:
        assert client.get("/health-check").json()["revision"] == HEAD_REVISION


@pytest.mark.parametrize("peer", [("testclient", 50000), ("10.0.0.5", 50000), ("fd00::2", 1)])
def test_health_check_hides_its_detail_from_other_clients(
    db: object, database_url: str, peer: tuple[str, int]
) -> None:
    with TestClient(create_app(make_settings(database_url)), client=peer) as client:
        response = client.get("/health-check")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(("peer", "detail"), [(LOOPBACK, True), (("203.0.113.9", 1), False)])
def test_health_check_unavailable_when_database_is_unreachable(
    free_port: int, peer: tuple[str, int], detail: bool
) -> None:
    url = f"postgresql+psycopg://innercontext:hunter2-secret@127.0.0.1:{free_port}/innercontext"
    with TestClient(create_app(make_settings(url)), client=peer) as client:
        started = time.monotonic()
        response = client.get("/health-check")
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    if detail:
        assert set(body) == {"status", "reason"}
        assert body["reason"]
    else:
        assert body == {"status": "unavailable"}
    assert "hunter2" not in response.text
    assert elapsed < 5


DOC_PATHS = ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")


def test_api_docs_are_off_by_default(local_client: TestClient) -> None:
    for path in DOC_PATHS:
        assert local_client.get(path).status_code == 404, path


def test_api_docs_when_enabled(db: object, database_url: str) -> None:
    settings = make_settings(database_url, docs_enabled=True)
    with TestClient(create_app(settings)) as client:
        assert client.get("/docs").status_code == 200
        assert client.get("/redoc").status_code == 200
        spec = client.get("/openapi.json")
    assert spec.status_code == 200
    assert "/health-check" in spec.json()["paths"]


def test_docs_enabled_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setenv("DOCS_ENABLED", "true")
    assert Settings(database_url=database_url, _env_file=None).docs_enabled
    monkeypatch.delenv("DOCS_ENABLED")
    assert not Settings(database_url=database_url, _env_file=None).docs_enabled


def test_products_empty(client: TestClient) -> None:
    response = client.get("/products")

    assert response.status_code == 200
    assert response.json() == []


def test_create_product(client: TestClient) -> None:
    response = client.post("/products", json={"name": "Kettle", "url": "https://example.com/k"})

    assert response.status_code == 201
    assert response.json() == {
        "id": 1,
        "name": "Kettle",
        "url": "https://example.com/k",
        "current_price": None,
        "currency": "EUR",
        "price_updated_at": None,
    }


def test_create_product_without_url(client: TestClient) -> None:
    for body in ({"name": "Mug", "url": None}, {"name": "Tea"}):
        response = client.post("/products", json=body)
        assert response.status_code == 201
        assert response.json()["url"] is None


def test_list_products_in_id_order(client: TestClient) -> None:
    names = ["Zebra lamp", "Apple slicer", "Mango peeler"]
    created = [client.post("/products", json={"name": name}).json() for name in names]

    listed = client.get("/products").json()

    assert listed == created
    assert [product["id"] for product in listed] == sorted(p["id"] for p in created)
    assert all(set(product) == PRODUCT_KEYS for product in listed)


def add_products(session_factory: sessionmaker[Session], count: int) -> list[int]:
    """Inserts ``count`` products in one transaction; their ids in order."""
    with session_factory() as session:
        products = [Product(name=f"Product {n}") for n in range(count)]
        session.add_all(products)
        session.commit()
        return [product.id for product in products]


def test_list_products_default_page_is_100(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    ids = add_products(session_factory, 101)

    listed = client.get("/products").json()

    assert [product["id"] for product in listed] == ids[:100]


def test_list_products_limit(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    ids = add_products(session_factory, 5)

    assert [p["id"] for p in client.get("/products?limit=2").json()] == ids[:2]
    assert [p["id"] for p in client.get("/products?limit=1").json()] == ids[:1]


def test_list_products_limit_up_to_500(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    ids = add_products(session_factory, 501)

    assert [p["id"] for p in client.get("/products?limit=500").json()] == ids[:500]


def test_list_products_after_pages_by_id(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    ids = add_products(session_factory, 5)

    first = client.get("/products?limit=2").json()
    second = client.get(f"/products?limit=2&after={first[-1]['id']}").json()
    third = client.get(f"/products?limit=2&after={second[-1]['id']}").json()
    past_the_end = client.get(f"/products?after={ids[-1]}").json()

    assert [p["id"] for p in first + second + third] == ids
    assert len(third) == 1
    assert past_the_end == []


def test_list_products_after_an_id_that_is_gone(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    ids = add_products(session_factory, 3)

    # Keyset paging: `after` need not be an existing id, the page starts above it.
    listed = client.get(f"/products?after={ids[0] - 1}&limit=1").json()
    above_a_gap = client.get(f"/products?after={ids[-1] + 10}").json()

    assert [p["id"] for p in listed] == [ids[0]]
    assert above_a_gap == []
    assert client.get(f"/products?after={2**31 - 1}").json() == []


@pytest.mark.parametrize(
    "query",
    [
        *["limit=0", "limit=501", "limit=-1", "limit=abc"],
        *["after=-1", "after=abc", "after=1.5", f"after={2**31}"],
    ],
)
def test_list_products_rejects_out_of_bounds(client: TestClient, query: str) -> None:
    response = client.get(f"/products?{query}")

    assert response.status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"url": "https://example.com"},
        {"name": ""},
        {"name": "x" * 201},
        {"name": None},
        {"name": 42},
        {"name": "Kettle", "url": 42},
        [],
    ],
)
def test_create_product_rejects_bad_input(client: TestClient, body: object) -> None:
    response = client.post("/products", json=body)

    assert response.status_code == 422
    assert client.get("/products").json() == []


def test_create_product_rejects_malformed_json(client: TestClient) -> None:
    response = client.post(
        "/products", content=b"{not json", headers={"content-type": "application/json"}
    )

    assert response.status_code == 422


def test_create_product_accepts_200_characters(client: TestClient) -> None:
    response = client.post("/products", json={"name": "x" * 200})

    assert response.status_code == 201
    assert response.json()["name"] == "x" * 200


def test_prices_of_unknown_product_is_404(client: TestClient) -> None:
    response = client.get("/products/999/prices")

    assert response.status_code == 404


def test_prices_with_non_integer_id_is_422(client: TestClient) -> None:
    assert client.get("/products/abc/prices").status_code == 422


def test_prices_of_unpriced_product_is_empty(client: TestClient) -> None:
    product = client.post("/products", json={"name": "Kettle"}).json()

    response = client.get(f"/products/{product['id']}/prices")

    assert response.status_code == 200
    assert response.json() == []


def test_price_history_newest_first(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    product = client.post("/products", json={"name": "Kettle"}).json()
    first = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    second = first + timedelta(days=2)
    max_age = timedelta(days=1)
    assert run_cycle(session_factory, max_age=max_age, now=first) == 1
    assert run_cycle(session_factory, max_age=max_age, now=second) == 1

    prices = client.get(f"/products/{product['id']}/prices").json()
    listed = client.get("/products").json()[0]

    assert [set(price) for price in prices] == [{"price", "currency", "observed_at"}] * 2
    assert [datetime.fromisoformat(p["observed_at"]) for p in prices] == [second, first]
    assert all(MONEY.match(p["price"]) and p["currency"] == "EUR" for p in prices)
    assert listed["current_price"] == prices[0]["price"]
    assert datetime.fromisoformat(listed["price_updated_at"]) == second
