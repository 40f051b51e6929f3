"""The runtime's side of the control plane's REST API: issue and claim calls, renew their
leases, pull session configs, report telemetry.

Every id that goes into a URL is checked against the id pattern and percent-encoded, and every
answer is checked for its shape: a caller cannot steer the service token to another path, and an
unexpected answer is a clear `ControlPlaneError`, never a crash.
"""

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from switchboard_runtime.contract import AudioChannel, CallReport, ResolvedSessionConfig

logger = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class ControlPlaneError(Exception):
    """The control plane refused (or could not answer): carries its problem code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class IssuedCall:
    call_id: str
    workspace_id: str
    agent_id: str
    stream_token: str
    expires_at: str
    engine: str = ""  # the engine the agent's tier runs on, when the control plane says
    # The same call an earlier request issued for this provider call (a webhook delivered
    # again): it holds nothing new, and its xAI session, if any, is already being set up.
    replayed: bool = False


@dataclass(frozen=True)
class ClaimedCall:
    call_id: str
    workspace_id: str
    agent_id: str
    lease_seconds: int
    channel: str = ""  # twilio, telnyx, api or browser, as the control plane issued it


def path_id(value: object, what: str) -> str:
    """An id, safe to put into a URL path: checked against the pattern, then encoded."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ControlPlaneError(400, "invalid_id", f"{what} is not a valid id")
    return quote(value, safe="")


def _claimed(answer: dict[str, Any]) -> ClaimedCall:
    fields = _strings(answer, "call_id", "workspace_id", "agent_id")
    lease = answer.get("lease_seconds")
    if not isinstance(lease, int) or lease <= 0:
        raise ControlPlaneError(502, "bad_answer", "the call was not claimed")
    channel = answer.get("channel")
    return ClaimedCall(
        **fields, lease_seconds=lease, channel=channel[:16] if isinstance(channel, str) else ""
    )


IDS = {"call_id", "workspace_id", "agent_id"}


def _strings(answer: dict[str, Any], *names: str) -> dict[str, str]:
    """These fields of an answer, each a non-empty string, ids matching the id pattern (they
    go into URLs later)."""
    values = {name: answer.get(name) for name in names}
    if not all(isinstance(v, str) and v for v in values.values()):
        raise ControlPlaneError(502, "bad_answer", f"the control plane's answer lacks {names}")
    if any(name in IDS and not ID_PATTERN.fullmatch(str(values[name])) for name in names):
        raise ControlPlaneError(502, "bad_answer", "the control plane's answer has a bad id")
    return {k: str(v) for k, v in values.items()}


class BoundedClient(httpx.AsyncClient):
    """An httpx client that sends at most `max_in_flight` requests at once; the rest wait here.

    httpx's connection pool rescans every queued request and connection each time one finishes,
    so a burst of hundreds of requests (call starts or reports when many calls begin or end
    together) costs time quadratic in its size: ~11 ms of CPU per request at 400 at once against
    ~1 ms bounded to 16, time in which the worker's event loop carries nobody's audio
    (`make bench-control-plane-burst`). A request holds its place until its body is read (a
    streamed one only until its headers are in). Everything else, proxies from the environment
    included, is httpx's own.
    """

    def __init__(self, *, max_in_flight: int, **options: Any) -> None:
        super().__init__(**options)
        self.slots = asyncio.Semaphore(max_in_flight)

    async def send(self, request: httpx.Request, **options: Any) -> httpx.Response:
        async with self.slots:
            return await super().send(request, **options)


class ControlPlaneClient:
    """Pass a long-lived `http` client: creating one costs tens of milliseconds (its TLS
    context), which a call start should not pay."""

    def __init__(
        self,
        base_url: str,
        service_token: str,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = 3.0,
        attempts: int = 3,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {service_token}"}
        self.timeout, self.attempts = timeout, attempts
        self._http, self._owns_http = http, http is None

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One call; retried on connection errors only, never on an answer."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout)
        for attempt in range(1, self.attempts + 1):
            try:
                response = await self._http.request(
                    method,
                    self.base_url + path,
                    json=json,
                    params=params,
                    headers=self.headers,
                    timeout=self.timeout,
                )
                break
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                # RemoteProtocolError: a pooled connection the server closed as it sat idle
                # ("disconnected without sending a response"); the request was never read.
                if attempt == self.attempts:
                    raise ControlPlaneError(
                        503,
                        "control_plane_unreachable",
                        f"Switchboard unreachable: {type(exc).__name__}",
                    ) from exc
                if not isinstance(exc, httpx.RemoteProtocolError):  # that one: again at once
                    await asyncio.sleep(0.1 * 2**attempt)
            except httpx.HTTPError as exc:
                raise ControlPlaneError(
                    503, "control_plane_unreachable", f"Switchboard failed: {type(exc).__name__}"
                ) from exc
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            answer = {}
            if response.is_success:
                raise ControlPlaneError(502, "bad_answer", "the control plane's answer is not JSON")
        if not response.is_success:
            raise ControlPlaneError(
                response.status_code,
                str(answer.get("code", "control_plane_error"))[:64],
                str(answer.get("detail", f"Switchboard answered {response.status_code}"))[:500],
            )
        return answer

    async def session_config(
        self,
        workspace_id: str,
        agent_id: str,
        credentials: str = "key",
        channel: AudioChannel = "phone",
    ) -> ResolvedSessionConfig:
        """The agent's config; `channel` picks its audio (phone: μ-law 8 kHz, browser: PCM16
        24 kHz)."""
        ws, agent = path_id(workspace_id, "workspace id"), path_id(agent_id, "agent id")
        params = {"credentials": credentials}
        if channel != "phone":
            params["channel"] = channel
        answer = await self._request(
            "GET", f"/api/v1/workspaces/{ws}/agents/{agent}/session-config", params=params
        )
        try:
            return ResolvedSessionConfig.model_validate(answer)
        except ValidationError as exc:
            raise ControlPlaneError(
                502, "bad_answer", f"the session config does not fit ({exc.error_count()} fields)"
            ) from exc

    async def issue_call(
        self,
        workspace_id: str,
        agent_id: str,
        *,
        channel: str = "api",
        provider_call_id: str | None = None,
        webhook: dict[str, Any] | None = None,
    ) -> IssuedCall:
        ws, agent = path_id(workspace_id, "workspace id"), path_id(agent_id, "agent id")
        body: dict[str, Any] = {"channel": channel}
        if provider_call_id:
            body["provider_call_id"] = provider_call_id[:128]
        if webhook is not None:
            body["webhook"] = webhook
        answer = await self._request(
            "POST", f"/api/v1/workspaces/{ws}/agents/{agent}/calls", json=body
        )
        fields = _strings(
            answer, "call_id", "workspace_id", "agent_id", "stream_token", "expires_at"
        )
        engine = answer.get("engine")
        return IssuedCall(
            **fields,
            engine=engine[:64] if isinstance(engine, str) else "",
            replayed=answer.get("replayed") is True,
        )

    async def start_call(self, workspace_id: str, agent_id: str) -> ClaimedCall:
        """Issue and claim a call in one round trip, for a backend that runs it itself."""
        ws, agent = path_id(workspace_id, "workspace id"), path_id(agent_id, "agent id")
        answer = await self._request(
            "POST",
            f"/api/v1/workspaces/{ws}/agents/{agent}/calls",
            json={"channel": "api", "claim": True},
        )
        return _claimed(answer)

    async def claim_call(
        self, stream_token: str, agent_id: str, stream: AudioChannel = "phone"
    ) -> ClaimedCall:
        """Redeem a stream token for the kind of stream presenting it (a phone's, a browser's):
        the control plane refuses a token of the other kind without using it."""
        path_id(agent_id, "agent id")
        answer = await self._request(
            "POST",
            "/api/v1/calls/claim",
            json={"stream_token": stream_token, "agent_id": agent_id, "stream": stream},
        )
        return _claimed(answer)

    async def renew_lease(self, call_id: str) -> None:
        await self._request("POST", f"/api/v1/calls/{path_id(call_id, 'call id')}/lease")

    async def release_call(self, call_id: str, reason: str = "unclaimed") -> None:
        """Release an issued call no media stream claimed; one claimed meanwhile (on another
        worker) is left running. Failures are logged only: the slot lapses by itself."""
        await self._let_go(call_id, "release", reason, expected=("call_claimed",))

    async def end_call(self, call_id: str, reason: str) -> None:
        """Release a call that ends without a telemetry report; failures are logged only."""
        await self._let_go(call_id, "end", reason)

    async def _let_go(
        self, call_id: str, action: str, reason: str, expected: tuple[str, ...] = ()
    ) -> None:
        """POST /calls/{id}/{action}; a refusal is logged (unless expected), never raised."""
        try:
            await self._request(
                "POST",
                f"/api/v1/calls/{path_id(call_id, 'call id')}/{action}",
                json={"reason": reason[:64]},
            )
        except ControlPlaneError as exc:
            if exc.code not in expected:
                logger.warning("call %s not released: %s", call_id, exc.code)

    async def report(self, report: CallReport) -> None:
        await self._request("POST", "/api/v1/telemetry/calls", json=report.model_dump(mode="json"))


@contextlib.asynccontextmanager
async def keep_lease(client: ControlPlaneClient, call: ClaimedCall) -> AsyncIterator[None]:
    """Renew the call's lease while the block runs, about a third of the lease at a time, so
    the call keeps its slot; a worker that dies stops renewing and the slot comes back by itself.

    Each wait is drawn from 0.8-1.2 thirds of the lease (still two renewals inside any lease):
    calls that started together, e.g. a burst of dial-outs, would otherwise renew together,
    forever, a burst of control-plane requests on the worker's loop each time."""

    async def renew_forever() -> None:
        while True:
            await asyncio.sleep(call.lease_seconds / 3 * random.uniform(0.8, 1.2))  # noqa: S311 - spread, not secrecy
            try:
                await client.renew_lease(call.call_id)
            except ControlPlaneError as exc:
                logger.warning("lease of call %s not renewed: %s", call.call_id, exc.code)

    task = asyncio.create_task(renew_forever(), name=f"lease-{call.call_id}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
