import http.client
import json
import signal

from tests.support import HEAD_REVISION


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

    connection = http.client.HTTPConnection("127.0.0.1", free_port, timeout=5)
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
