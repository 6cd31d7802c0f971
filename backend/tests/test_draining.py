import signal
import threading
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from innercontext.draining import CloseWhenDraining, watch_for_stop


def small_app(draining: threading.Event) -> FastAPI:
    app = FastAPI()

    @app.get("/")
    def root() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(CloseWhenDraining, draining=draining)
    return app


def test_responses_keep_their_connection_until_a_stop_then_close_it() -> None:
    draining = threading.Event()
    with TestClient(small_app(draining)) as client:
        assert client.get("/").headers.get("connection") is None
        draining.set()
        response = client.get("/", headers={"connection": "keep-alive"})
        assert response.status_code == 200
        assert response.headers.get("connection") == "close"
        assert response.json() == {"ok": "yes"}


def test_a_stop_signal_sets_draining_and_reaches_the_servers_handler() -> None:
    seen: list[int] = []

    def server_handler(signum: int, frame: Any) -> None:
        seen.append(signum)

    before = signal.signal(signal.SIGTERM, server_handler)
    try:
        draining = threading.Event()
        watch_for_stop(draining)
        assert not draining.is_set()
        signal.raise_signal(signal.SIGTERM)
        assert draining.is_set()
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)
