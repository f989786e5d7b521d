"""Settings from CONVEYOR_* environment variables; built explicitly, never at import."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator
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
    # How many tasks this node runs at once; a task waiting for a person holds none. 0: the
    # node serves the API and the web UI and runs no task (a drained node, docs/operations.md).
    task_slots: int = Field(default=100, ge=0)
    # How long a node holds a task without renewing its lease; a node renews every tenth of
    # it (at most every 2 s), and other nodes take over the tasks of one that stopped renewing.
    lease_seconds: float = Field(default=20.0, ge=1.0)
    # How long a stopping node (SIGTERM) lets running steps finish before it interrupts them;
    # its tasks then carry on, from their next step, on another node (or this one restarted).
    stop_grace_seconds: float = Field(default=10.0, ge=0.0)
    # Database connections this node may open (PostgreSQL): with N nodes, N times this plus
    # N listeners must stay under the server's max_connections (docs/operations.md).
    database_connections: int = Field(default=40, ge=2)
    # How many script processes this node runs at once, over all tasks and parallel steps
    # (0: 50 per CPU core); a script over the limit waits for one to end before it starts.
    script_slots: int = 0
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

    # Versions of a package each target keeps, the live one included: older ones are removed
    # after a deployment, so rolling back to a kept one only switches its `current` link.
    keep_package_versions: int = Field(default=3, ge=1)

    # --- Release governance (docs/governance.md) -------------------------------------------
    # An approval given ahead of time counts for this long.
    approval_hours: float = Field(default=72.0, gt=0.0)
    # How often each node looks at held deployments again (windows opening, start times and
    # freezes passing, approvals expiring); an approval or a revocation acts at once.
    gate_check_seconds: float = Field(default=10.0, gt=0.0)

    # --- Retention (docs/retention.md) -----------------------------------------------------
    # How often the lifecycles' retention policies are applied (by one node at a time; 0: only
    # `conveyor retention apply`), and how many things one transaction deletes at most.
    retention_interval: float = Field(default=3600.0, ge=0.0)
    retention_batch: int = Field(default=200, ge=1, le=10_000)

    # --- Targets and workers (docs/targets.md) ----------------------------------------------
    # The server itself is the built-in worker of the default pool: script steps that name no
    # target roles run on it (sandboxed). False empties the pool: such steps then need a worker.
    builtin_worker: bool = True
    # How often each node checks the health of every target (0: only `conveyor target check`).
    target_check_seconds: float = Field(default=300.0, ge=0.0)
    # How long connecting to an ssh target may take before the step (or check) fails.
    ssh_connect_seconds: float = Field(default=15.0, gt=0.0)
    # An SSH keepalive every this many seconds; two unanswered and the connection counts as
    # lost, so a machine cut off mid-step fails the step instead of hanging it.
    ssh_keepalive_seconds: float = Field(default=10.0, gt=0.0)
    # An idle SSH connection is kept this long for the next step on the same target.
    ssh_idle_seconds: float = Field(default=60.0, ge=0.0)
    # An agent that has not polled for this long is unhealthy (it polls every few seconds).
    agent_offline_seconds: float = Field(default=90.0, gt=0.0)

    # --- Script sandbox (docs/security.md) -------------------------------------------------
    # Scripts and package steps on the server run under bubblewrap as an unprivileged user.
    # Without a usable sandbox they are refused, unless an administrator allows this here.
    allow_unsandboxed_scripts: bool = False
    # The operating-system user scripts run as when the server itself runs as root.
    sandbox_user: str = "nobody"
    # Whether sandboxed scripts share the server's network (deploy scripts usually need it).
    sandbox_network: bool = True
    # The bubblewrap binary (Debian package `bubblewrap`).
    sandbox_bwrap: str = "/usr/bin/bwrap"

    # --- Limits on what a caller can make the server do (docs/security.md) ----------------
    # Request bodies, enforced while streaming and before anything is buffered.
    max_request_bytes: int = 4 * 1024 * 1024
    # Package uploads (the one kind of body allowed to be large), authenticated callers only.
    max_upload_bytes: int = 1024 * 1024 * 1024
    # One field of a web form.
    max_form_field_bytes: int = 1024 * 1024
    # Configuration files (apply, dry-run): size and nesting depth.
    max_config_bytes: int = 2 * 1024 * 1024
    max_config_depth: int = 64
    # Package archives: total extracted size, entry count and compression ratio.
    max_extracted_bytes: int = 2 * 1024 * 1024 * 1024
    max_archive_entries: int = 100_000
    max_compression_ratio: int = 200
    # #{...} substitution and run-condition expressions: output size and time.
    max_substitution_bytes: int = 1024 * 1024
    expression_timeout_seconds: float = 2.0

    # --- Network trust -------------------------------------------------------------------
    # Addresses (or CIDR ranges) of reverse proxies whose X-Forwarded-For is believed.
    trusted_proxies: list[str] = Field(default_factory=list)
    # Webhook subscriptions may target loopback, link-local and private addresses only if set.
    allow_private_webhooks: bool = False

    # --- Observability (docs/operations.md "Metrics, health and logs") ---------------------
    # "text" (uvicorn's lines) or "json": one JSON object per line, secrets redacted.
    log_format: str = Field(default="text", pattern="^(text|json)$")
    # Who may read /metrics: requests from these addresses or CIDR ranges (the client address,
    # after trusted_proxies), or with `Authorization: Bearer <metrics_token>` when it is set.
    metrics_networks: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    metrics_token: str | None = None
    # How long the counts read from the database for /metrics are reused between scrapes.
    metrics_cache_seconds: float = Field(default=5.0, ge=0.0)

    # --- Single sign-on and CI tokens (docs/sso.md) ------------------------------------------
    # The OpenID provider people sign in with (its issuer URL, as in its discovery document),
    # this server's client id and secret there, the scopes asked for, the button's name.
    sso_issuer: str | None = None
    sso_client_id: str | None = None
    sso_client_secret: str | None = None
    sso_scopes: str = "openid profile email"
    sso_name: str = "single sign-on"
    # The claim listing a person's groups (team membership follows it: teams' sso_groups).
    sso_groups_claim: str = "groups"
    # Whether a first sign-in creates the user; otherwise an administrator creates them first
    # and the first sign-in links the account whose username is the preferred_username.
    sso_create_users: bool = True
    # False: the sign-in page offers single sign-on only (API keys keep working).
    password_sign_in: bool = True
    # How long an issuer's keys (JWKS) are trusted before they are fetched again; an unknown
    # key id fetches them at once (key rotation), at most every oidc_jwks_refetch_seconds.
    oidc_jwks_seconds: float = Field(default=300.0, ge=0.0)
    oidc_jwks_refetch_seconds: float = Field(default=10.0, ge=0.0)

    # Cheap password hashing for the test suite only; `conveyor server` and `demo` refuse it.
    insecure_fast_password_hashing: bool = False

    @field_validator("trusted_proxies", "metrics_networks")
    @classmethod
    def _addresses_or_ranges(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an address or a CIDR range (such as 10.0.0.0/8)"
                ) from None
        return entries

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
