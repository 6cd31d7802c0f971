"""Helpers shared by the tests."""

import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from alembic.config import Config
from sqlalchemy import Engine, text

from alembic import command
from innercontext.config import Settings

BACKEND_DIR = Path(__file__).resolve().parents[1]
HEAD_REVISION = "0002_price_history"
ENV_VARS = (
    "DATABASE_URL",
    "GEMINI_API_KEY",
    "PRICING_INTERVAL_SECONDS",
    "PRICE_MAX_AGE_SECONDS",
    "DOCS_ENABLED",
)
# TestClient's peer address for a request from the server itself (the default, "testclient",
# is not an IP address and counts as a remote client).
LOOPBACK = ("127.0.0.1", 50000)


def reset_schema(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))


def migrate(engine: Engine, revision: str = "head", *, down: bool = False) -> None:
    config = Config(BACKEND_DIR / "alembic.ini")
    config.attributes["configure_logger"] = False
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        if down:
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.scalar(text("SELECT version_num FROM alembic_version"))


def make_settings(database_url: str, **overrides: object) -> Settings:
    return Settings(database_url=database_url, _env_file=None, **overrides)


class Process:
    """A child process whose merged stdout/stderr is collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            args,
            cwd=BACKEND_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, needle: str, timeout: float = 60) -> str:
        """Block until a line containing ``needle`` is printed; fail on exit or timeout.

        The timeout only guards against a hang (an exit fails at once): it is no speed target.
        On a loaded two-core machine uvicorn's start took over 10 s.
        """
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                pytest.fail(f"process exited before printing {needle!r}:\n{self.output}")
            self.lines.append(line)
            if needle in line:
                return line
        pytest.fail(f"no line containing {needle!r} within {timeout}s:\n{self.output}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 5) -> int:
        """Send ``sig``; return the exit status, failing if the process outlives ``timeout``."""
        self.popen.send_signal(sig)
        try:
            status = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"process still running {timeout}s after {sig.name}:\n{self.output}")
        self._reader.join(timeout=timeout)
        while not self._queue.empty():
            if (line := self._queue.get_nowait()) is not None:
                self.lines.append(line)
        return status

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._reader.join(timeout=5)
        assert self.popen.stdout is not None
        self.popen.stdout.close()


FIXTURE_MIGRATIONS = BACKEND_DIR / "tests" / "migrations"


def backend_copy(tmp_path: Path, *fixtures: str) -> Path:
    """A copy of the backend (never the checkout itself: a killed test run would leave a
    migration there for the next deploy to run) with the named fixture revisions of
    tests/migrations on top of the real ones, chained in the order given."""
    ignore = shutil.ignore_patterns("__pycache__")
    backend = tmp_path / "backend"
    for part in ("innercontext", "alembic"):
        shutil.copytree(BACKEND_DIR / part, backend / part, ignore=ignore)
    shutil.copy2(BACKEND_DIR / "alembic.ini", backend / "alembic.ini")
    below = HEAD_REVISION
    for name in fixtures:
        source = (FIXTURE_MIGRATIONS / f"{name}.py").read_text()
        chained = re.sub(r"(?m)^down_revision = .*$", f'down_revision = "{below}"', source)
        (backend / "alembic" / "versions" / f"{name}.py").write_text(chained)
        below = name
    return backend
