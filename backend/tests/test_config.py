from pathlib import Path

import pytest
from pydantic import ValidationError

from innercontext.config import Settings

URL = "postgresql+psycopg://innercontext:pw@127.0.0.1/innercontext"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DATABASE_URL", "GEMINI_API_KEY", "PRICING_INTERVAL_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_reads_dotenv_in_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"DATABASE_URL={URL}\nGEMINI_API_KEY=abc\n")

    settings = Settings()

    assert settings.database_url == URL
    assert settings.gemini_configured
    assert settings.pricing_interval_seconds == 60


def test_environment_overrides_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql+psycopg://from-file/db\n")
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("PRICING_INTERVAL_SECONDS", "0.5")

    settings = Settings()

    assert settings.database_url == URL
    assert settings.pricing_interval_seconds == 0.5


def test_blank_gemini_key_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("GEMINI_API_KEY", " ")

    assert not Settings().gemini_configured


def test_gemini_key_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-secret-value")

    settings = Settings()

    assert "gemini-secret-value" not in repr(settings)
    assert "gemini-secret-value" not in str(settings.model_dump())


def test_missing_database_url_error_hides_other_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-secret-value")

    with pytest.raises(ValidationError) as error:
        Settings()

    assert "database_url" in str(error.value)
    assert "gemini-secret-value" not in str(error.value)


def test_interval_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("PRICING_INTERVAL_SECONDS", "0")

    with pytest.raises(ValidationError):
        Settings()
