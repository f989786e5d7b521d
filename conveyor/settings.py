"""Settings from CONVEYOR_* environment variables; built explicitly, never at import."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    data_dir: Path = Field(default=Path(".conveyor"))
    database_url: str | None = None
    master_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    # The address people use to reach the server (links in emails and logs).
    public_url: str | None = None
    # How many tasks this node runs at once; a task waiting for a person holds none.
    task_slots: int = 10
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str | None = None
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    # Notifications from subscriptions and interruptions: how often a failed delivery is tried,
    # and the first wait before trying again (it doubles each time, up to an hour).
    delivery_attempts: int = 10
    delivery_backoff_seconds: float = 10.0
    # Sign-in throttling and sessions for the web UI.
    session_hours: int = 12
    # Run the task engine inside the server process (tests of the API alone turn it off).
    run_engine: bool = True

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'conveyor.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")
