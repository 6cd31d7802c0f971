import http.client
import json
import signal

from tests.support import BACKEND_DIR, HEAD_REVISION

API_UNIT = BACKEND_DIR.parent / "systemd" / "innercontext.service"


def test_uvicorn_serves_the_app_from_settings(spawn, db, database_url: str, free_port: int) -> None:
    server = spawn(
        "uvicorn",
        "innercontext.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port),
        database_url=database_url,
        gemini_api_key="gemini-secret-value",
    )
    # uvicorn logs "Application startup complete" before it binds the port; "Uvicorn running
    # on" comes after the socket listens.
    server.wait_for_line("Uvicorn running on")

    connection = http.client.HTTPConnection("127.0.0.1", free_port, timeout=30)
    try:
        connection.request("GET", "/health-check")
        response = connection.getresponse()
        status, body = response.status, json.loads(response.read())
    finally:
        connection.close()

    assert status == 200
    assert body == {"status": "ok", "database": "ok", "revision": HEAD_REVISION}
    # uvicorn shuts down gracefully, then re-raises SIGTERM (systemd counts that as a clean stop).
    assert server.stop() in (0, -signal.SIGTERM)
    assert "Finished server process" in server.output
    assert "GEMINI_API_KEY configured" in server.output
    assert "gemini-secret-value" not in server.output


def proxy_flags() -> list[str]:
    """uvicorn's proxy flags exactly as the production unit passes them."""
    exec_start = next(
        line for line in API_UNIT.read_text().splitlines() if line.startswith("ExecStart=")
    )
    words = exec_start.split()
    assert "--proxy-headers" in words, exec_start
    allow = words.index("--forwarded-allow-ips")
    return ["--proxy-headers", "--forwarded-allow-ips", words[allow + 1]]


def get_json(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_health_detail_only_for_the_server_itself_behind_nginx(
    spawn, db, database_url: str, free_port: int
) -> None:
    server = spawn(
        "uvicorn",
        "innercontext.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port),
        *proxy_flags(),
        database_url=database_url,
    )
    server.wait_for_line("Uvicorn running on")

    def health(forwarded_for: str | None) -> dict[str, object]:
        # nginx connects from 127.0.0.1 and sends X-Forwarded-For: $proxy_add_x_forwarded_for,
        # i.e. whatever the client sent with the client's own address appended.
        headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
        status, body = get_json(free_port, "/health-check", headers)
        assert status == 200
        return body

    detail = {"status": "ok", "database": "ok", "revision": HEAD_REVISION}
    assert health(None) == detail  # the deployer's probe, straight to uvicorn on loopback
    assert health("127.0.0.1") == detail  # through nginx from the server itself
    assert health("203.0.113.7") == {"status": "ok"}
    assert health("127.0.0.1, 203.0.113.7") == {"status": "ok"}  # a client claiming loopback
    assert health("::1, 2001:db8::7") == {"status": "ok"}
    status, _ = get_json(free_port, "/openapi.json", {})
    assert status == 404
    assert server.stop() in (0, -signal.SIGTERM)
