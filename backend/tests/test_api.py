import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from innercontext.app import create_app
from innercontext.config import Settings
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
