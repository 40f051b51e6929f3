"""The call worker's settings: environment variables with the prefix SWITCHBOARD_ (a `.env`
file works too), the same names the control plane's documentation uses."""

import hmac
import ipaddress
from typing import Literal, Protocol, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseSettings):
    """What any Switchboard HTTP server reads: the control plane's settings extend it too."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    log_level: str = "INFO"
    # A request's headers must arrive within this many seconds of connecting (`serve`/`worker`).
    http_header_timeout_seconds: float = Field(default=10.0, gt=0)
    # A request body must arrive whole within this many seconds of its headers (one deadline,
    # not per read): 408 `body_timeout`. The worker's webhooks have their own, shorter one.
    http_body_timeout_seconds: float = Field(default=30.0, gt=0)
    # Requests still sending headers or body, per client address (`serve`/`worker`, uvicorn):
    # one more from that address is closed at once. Trusted proxies are not counted.
    http_max_pending_per_address: int = Field(default=64, ge=1, le=100_000)
    # Proxies whose X-Forwarded-For is believed (addresses or networks, comma-separated).
    # Empty: nobody's, the TCP peer is the client (sign-in throttling, the bounds above).
    trusted_proxies: str = ""
    # /metrics: open outside production; in production only with
    # `Authorization: Bearer <metrics_token>` (404 without a token set).
    metrics_token: SecretStr | None = None

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_parse(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip():
                try:
                    ipaddress.ip_network(part.strip(), strict=False)
                except ValueError:
                    raise ValueError("must be IP addresses or networks, comma-separated") from None
        return value

    @property
    def trusted_proxy_networks(self) -> "ProxyNetworks":
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in self.trusted_proxies.split(",")
            if part.strip()
        )


class WorkerSettings(ServerSettings):
    # Where the control plane is, and the service-scope token the worker uses with it.
    control_plane_url: str = "http://127.0.0.1:8000"
    service_token: SecretStr | None = None
    # Requests to the control plane in flight at once (call starts, claims, reports); the rest
    # queue. A pool with hundreds at once spends its CPU on bookkeeping while calls wait.
    control_plane_max_concurrent_requests: int = Field(default=16, ge=1, le=1000)
    # The public base URL phone providers reach the worker on (TwiML/TeXML answers; webhook
    # signatures cover it), and this replica's own base URL for media streams when webhooks
    # reach replicas through a shared name: the stream comes back here.
    worker_public_url: str = "http://127.0.0.1:8001"
    worker_stream_url: str | None = None
    # The media plane: the listener phone media streams and browser test calls arrive on
    # (worker/media_plane.py). Unset: the worker app's own HTTP server carries them (through
    # Starlette). 0 picks a free port. Without WORKER_STREAM_URL, answers point streams at the
    # public URL's host on this port (behind a proxy that routes /ws/ here, set the stream URL).
    worker_media_host: str = "127.0.0.1"
    worker_media_port: int | None = Field(default=None, ge=0, le=65535)
    tool_timeout_seconds: float = 10.0
    # A webhook body (at most 64 KiB) must arrive whole within this time after its headers.
    worker_body_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # The largest WebSocket message a phone media stream, and a browser test call, may send;
    # a larger one closes the socket (1009) before its payload is read. Twilio and Telnyx
    # frames are under 1 KiB; a browser sends 20 ms of PCM16 (960 bytes), at most 1 s.
    media_stream_max_frame_bytes: int = Field(default=16 * 1024, ge=1024, le=64 * 1024)
    browser_call_max_frame_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 1024)
    # A media stream that sends no valid `start` (a browser call no token) within this time is
    # closed. Until then it holds no call place, only one of these: per worker (past it the
    # oldest is closed) and per client address (past it the new one is refused).
    stream_start_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    worker_max_pre_start_sockets: int = Field(default=256, ge=1, le=100_000)
    worker_max_pre_start_per_address: int = Field(default=32, ge=1, le=100_000)
    # Webhooks the control plane refused (a bad signature, a malformed body) per client address
    # in a minute; past it that address's webhooks are answered 403 without asking. An address
    # that had a webhook accepted in the last hour is never held back (webhook_budget.py).
    worker_max_webhook_refusals_per_address: int = Field(default=20, ge=1, le=100_000)
    # Warm start: once a webhook's call is issued, its xAI session is set up before the media
    # stream arrives; a session no stream claims within this time is closed and its call
    # released. At most this many warm sessions per worker (beyond that, calls start cold).
    warm_start: bool = True
    warm_session_unclaimed_seconds: float = Field(default=15.0, gt=0, le=60)
    max_warm_sessions: int = Field(default=200, ge=1, le=100_000)
    # Calls this worker takes at once (webhooks admitted, streams bridged, browser test calls);
    # beyond it webhooks are answered busy and /readyz says 503. Unset: no limit. Measure what
    # one worker process carries on your machines (docs/benchmarks.md) and set it below that.
    worker_max_calls: int | None = Field(default=None, ge=1, le=100_000)
    # When the worker is stopped (SIGTERM), it first refuses new calls while the streams of the
    # calls it answered arrive (`serving.SwitchboardServer`), then stops listening and lets its
    # live calls go on for up to this long before they end as `worker_shutdown`. Keep both below
    # the grace period the orchestrator gives before it kills the process. 0: cut at once.
    worker_drain_seconds: float = Field(default=0.0, ge=0, le=3600)
    # A bridged call's audio frames relayed in compiled code where the runtime was built with it
    # (worker/native_relays.py); false: every frame takes the Python path.
    worker_native_frame_relay: bool = True
    # How often the worker samples its event loop's lateness (the loop-lag histogram). Each
    # sample wakes the loop once; at 20 ms the sampler alone cost ~10 % of the worker's CPU at
    # 25 calls here (docs/benchmarks.md). A stall as long as the interval is always seen, a
    # shorter one in proportion to its length; garbage collections are timed apart, each one.
    worker_loop_lag_interval_seconds: float = Field(default=0.1, ge=0.005, le=10)


ProxyNetworks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def is_trusted_proxy(address: str | None, proxies: ProxyNetworks) -> bool:
    """Whether `address` is one of SWITCHBOARD_TRUSTED_PROXIES (whose X-Forwarded-For counts)."""
    if not address or not proxies:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


class SettingsError(Exception):
    """Settings from the environment that do not validate: one line per setting, named as its
    environment variable, without the value given (a mistyped secret must not be echoed)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


AnySettings = TypeVar("AnySettings", bound=BaseSettings)


def load_settings(settings_class: type[AnySettings]) -> AnySettings:
    """The settings, or a `SettingsError` a command line can print as it is."""
    try:
        return settings_class()
    except ValidationError as exc:
        prefix = str(settings_class.model_config.get("env_prefix", ""))
        raise SettingsError(
            [
                f"{prefix}{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
                for error in exc.errors(include_url=False, include_input=False)
            ]
        ) from None


class MetricsAccess(Protocol):
    @property
    def environment(self) -> str: ...

    @property
    def metrics_token(self) -> SecretStr | None: ...


def metrics_allowed(settings: MetricsAccess, authorization: str | None) -> bool:
    """/metrics (control plane and worker): outside production anyone may scrape; in
    production only with the metrics token."""
    if settings.environment != "production" and settings.metrics_token is None:
        return True
    if settings.metrics_token is None or authorization is None:
        return False
    expected = f"Bearer {settings.metrics_token.get_secret_value()}"
    return hmac.compare_digest(authorization.encode(), expected.encode())
