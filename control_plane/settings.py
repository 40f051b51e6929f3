"""Every knob of Switchboard, in one place. Environment variables use the prefix SWITCHBOARD_."""

import re
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from control_plane.auth.passwords import PasswordCost
from switchboard_runtime.worker.settings import ServerSettings, metrics_allowed

__all__ = ["Settings", "metrics_allowed", "production_refusals"]

ORIGIN = re.compile(
    r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$"
)


class Settings(ServerSettings):
    """Environment, log level, header timeout and metrics token come from ServerSettings, which
    the call worker's settings share."""

    database_url: str = "sqlite:///./switchboard.db"
    database_pool_size: int = 10
    # Seconds a request waits for a database connection before the write fails with 503.
    database_timeout_seconds: float = 5.0
    # PostgreSQL: a query or commit that gets no answer within this many seconds (a paused or
    # cut-off database, where connections hang instead of failing) is abandoned and its
    # connection closed, so requests fail with 503 instead of holding a worker thread forever.
    database_query_timeout_seconds: float = Field(default=30.0, gt=0)
    # PostgreSQL: a pooled connection that sat unused longer than this is pinged before it is
    # lent (one round trip); one back sooner is lent as it is. A connection the database dropped
    # in that window fails its first statement, which discards the whole pool (reads fall back to
    # the last known answer, writes answer 503). 0 pings at every checkout.
    database_ping_idle_seconds: float = Field(default=0.5, ge=0)

    # Keyring for provider API keys: "id1:base64key,id2:base64key"; the first entry is active.
    master_keys: SecretStr | None = None
    master_key_file: Path | None = None

    xai_base_url: str = "https://api.x.ai"
    xai_realtime_url: str = "wss://api.x.ai/v1/realtime"
    openai_realtime_url: str = "wss://api.openai.com/v1/realtime"
    xai_verify_keys: bool = False
    # Checks of candidate xAI keys with xAI, per workspace per hour: one workspace token must
    # not become an oracle for stolen keys.
    key_verifications_per_hour: int = Field(default=10, ge=1)
    # Per-workspace quotas: agents, and the size of one agent's instructions and tools as JSON.
    max_agents_per_workspace: int = Field(default=500, ge=1)
    max_agent_config_bytes: int = Field(default=65_536, ge=1024)
    max_tools_per_agent: int = Field(default=32, ge=0, le=64)
    xai_timeout_seconds: float = 5.0
    ephemeral_secret_ttl_seconds: int = 300

    # Scale mode: a real Unleash server owns the flags when this is set.
    unleash_url: str | None = None
    unleash_client_token: SecretStr | None = None
    unleash_admin_token: SecretStr | None = None
    unleash_project: str = "default"
    unleash_environment: str = "development"
    unleash_app_name: str = "switchboard"
    unleash_refresh_interval_seconds: int = 2

    # Tokens accepted by the served Unleash client API (/api/client/features), comma separated.
    client_api_tokens: SecretStr | None = None

    # Call entry. Stream tokens are signed with this secret (by default a key derived from the
    # master keyring), must be used within the TTL, once; a running call renews its lease.
    # (The call worker's own settings, SWITCHBOARD_SERVICE_TOKEN and friends, are
    # switchboard_runtime.worker.WorkerSettings.)
    stream_token_secret: SecretStr | None = None
    # Browser test calls: the call worker's public base URL for /ws/realtime (unset: off).
    browser_call_url: str | None = None
    # Origins (exact, comma separated) whose browser code may read the REST API; none by
    # default. Cookies are never sent cross-origin: only bearer tokens work from there.
    cors_origins: str | None = None
    stream_token_ttl_seconds: int = Field(default=60, ge=5, le=60)
    call_lease_seconds: int = Field(default=60, ge=10, le=3600)
    # Install-wide webhook secrets for single-tenant installs; a workspace's own secret (the
    # `twilio` / `telnyx` rows of its provider keys) wins.
    twilio_auth_token: SecretStr | None = None
    telnyx_public_key: str | None = None

    session_secret: SecretStr | None = None
    # API docs (/docs, /openapi.json): on by default outside production, off in production
    # unless set.
    public_docs: bool | None = None
    # A page session ends after this long without a request, and after this long in any case.
    session_idle_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    session_absolute_hours: int = Field(default=12, ge=1, le=30 * 24)
    # Sign-in throttling: free failures per account from one client address, and per address
    # (any accounts), then a lock of
    # base * 2^(extra failures) seconds, capped. Password hashes run at most N at a time (each
    # argon2 hash takes 64 MiB), so a flood of sign-ins cannot exhaust memory.
    sign_in_free_attempts: int = Field(default=5, ge=1)
    sign_in_free_attempts_per_address: int = Field(default=20, ge=1)
    sign_in_backoff_base_seconds: float = Field(default=1.0, gt=0)
    sign_in_backoff_max_seconds: float = Field(default=900.0, gt=0)
    max_concurrent_password_hashes: int = Field(default=2, ge=1, le=64)
    # What a password hash costs (auth/passwords.py): "cheapest" is for test suites only.
    password_hash_cost: PasswordCost = "standard"  # noqa: S105 (a cost, not a password)
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    max_json_depth: int = Field(default=32, ge=2)
    max_header_bytes: int = Field(default=32_768, ge=1024)
    max_header_count: int = Field(default=100, ge=10)
    config_cache_size: int = Field(default=10_000, ge=1)
    telemetry_webhook_url: str | None = None
    # A report whose calls each meet every guarded target skips the guard's look if the guard
    # looked at the flag less than this long ago (telemetry/looks.py); 0: every report looks.
    # A look reads every call of the flag in the guard's window.
    guard_look_interval_seconds: float = Field(default=1.0, ge=0, le=60)
    # Release plans are checked, and expired transcripts deleted, this often (0: never, tests).
    maintenance_interval_seconds: float = Field(default=60.0, ge=0)
    # Production sends webhooks to public addresses only; these hosts are let through as named.
    webhook_allowed_hosts: str | None = None

    @cached_property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def scale_mode(self) -> bool:
        return bool(self.unleash_url)

    @cached_property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in (self.cors_origins or "").split(",") if o.strip()]

    @field_validator("cors_origins")
    @classmethod
    def _exact_origins(cls, value: str | None) -> str | None:
        """Each a scheme, host and optional port, nothing more: `*` would let any site read."""
        for origin in (value or "").split(","):
            origin = origin.strip()
            if origin and not ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin like https://app.example.com (no '*', path "
                    "or trailing slash)"
                )
        return value


MIN_SESSION_SECRET_BYTES = 32


def production_refusals(settings: Settings) -> list[str]:
    """What production refuses to start with, one line each (empty outside production).

    The master key is checked where it is read (`Keyring.from_settings`): a development key file
    is refused there.
    """
    if settings.environment != "production":
        return []
    refusals = []
    secret = settings.session_secret.get_secret_value() if settings.session_secret else ""
    if len(secret.encode()) < MIN_SESSION_SECRET_BYTES:
        refusals.append(
            f"SWITCHBOARD_SESSION_SECRET is {len(secret.encode())} bytes; production needs at "
            f"least {MIN_SESSION_SECRET_BYTES} (python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))')."
        )
    if settings.password_hash_cost == "cheapest":  # noqa: S105 (a cost, not a password)
        refusals.append(
            "SWITCHBOARD_PASSWORD_HASH_COST is cheapest, which is for test suites; production "
            "hashes passwords at the standard cost (unset it)."
        )
    return refusals
