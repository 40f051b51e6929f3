"""A control plane that answers nonsense, or a caller that sends ids meant to steer URLs: the
worker and the runtime's client refuse cleanly and never raise out of a request."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from websockets.asyncio.client import connect

from switchboard_runtime.client import ControlPlaneClient, ControlPlaneError, path_id
from switchboard_runtime.worker import WorkerSettings, create_worker_app
from tests.fakes.server import BackgroundServer, free_port
from tests.integration.callstack import Phone

ODD_ANSWERS: list[Any] = [
    ["a", "list"],
    "a string",
    {"version": 2, "features": []},
    {"call_id": "../../admin", "workspace_id": "acme", "agent_id": "a", "lease_seconds": 60},
    None,
]


class OddControlPlane:
    """Answers every request with the same odd body, and records the paths it was asked for."""

    def __init__(self) -> None:
        self.answer: Any = None
        self.raw: bytes | None = None
        self.paths: list[str] = []

    def app(self) -> Starlette:
        async def anything(request: Request) -> Response:
            self.paths.append(request.url.path)
            if self.raw is not None:
                return Response(self.raw, media_type="application/json")
            return JSONResponse(
                self.answer, status_code=201 if "calls" in request.url.path else 200
            )

        methods = ["GET", "POST"]
        return Starlette(routes=[Route("/{path:path}", anything, methods=methods)])


@pytest.fixture
def odd() -> Iterator[tuple[OddControlPlane, str, str]]:
    control_plane = OddControlPlane()
    with BackgroundServer(control_plane.app()) as server:
        port = free_port()
        settings = WorkerSettings(  # type: ignore[call-arg]
            _env_file=None,
            environment="test",
            control_plane_url=server.base_url,
            service_token=SecretStr("sbt_service"),
            worker_public_url=f"http://127.0.0.1:{port}",
            stream_start_timeout_seconds=1,
        )
        with BackgroundServer(create_worker_app(settings), port=port) as worker:
            yield control_plane, server.base_url, worker.base_url


@pytest.mark.parametrize("answer", ODD_ANSWERS)
async def test_the_client_refuses_odd_answers(
    odd: tuple[OddControlPlane, str, str], answer: Any
) -> None:
    control_plane, base, _ = odd
    control_plane.answer = answer
    client = ControlPlaneClient(base, "sbt_service")
    try:
        for call in (
            client.issue_call("acme", "agt_1"),
            client.start_call("acme", "agt_1"),
            client.claim_call("st1.a.b", "agt_1"),
            client.session_config("acme", "agt_1"),
        ):
            with pytest.raises(ControlPlaneError) as refused:
                await call
            assert refused.value.code == "bad_answer"
    finally:
        await client.aclose()


async def test_the_client_refuses_an_answer_that_is_not_json(
    odd: tuple[OddControlPlane, str, str],
) -> None:
    control_plane, base, _ = odd
    control_plane.raw = b"<html>proxy error</html>"
    client = ControlPlaneClient(base, "sbt_service")
    with pytest.raises(ControlPlaneError) as refused:
        await client.session_config("acme", "agt_1")
    assert refused.value.code == "bad_answer"
    await client.aclose()


@pytest.mark.parametrize("answer", ODD_ANSWERS)
async def test_the_worker_survives_odd_answers(
    odd: tuple[OddControlPlane, str, str], answer: Any
) -> None:
    control_plane, _, worker = odd
    control_plane.answer = answer
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{worker}/twiml/agt_1?workspace_id=acme", data={"CallSid": "CA1"}
        )
    assert response.status_code == 200  # a polite hang-up, not a 500
    assert "<Hangup/>" in response.text
    async with connect(worker.replace("http", "ws") + "/ws/twilio/agt_1") as websocket:
        phone = Phone("twilio", websocket)
        await phone.start({"stream_token": "st1.a.b"})
        assert await phone.closed() == (4401, "unauthorized")


@pytest.mark.parametrize(
    "workspace", ["../../../api/v1/tokens?x=", "acme/../globex", "acme%2F..", "a" * 65, ""]
)
async def test_ids_that_would_steer_a_url_never_reach_the_control_plane(
    odd: tuple[OddControlPlane, str, str], workspace: str
) -> None:
    control_plane, _, worker = odd
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{worker}/twiml/agt_1", params={"workspace_id": workspace}, data={"CallSid": "CA1"}
        )
    assert response.status_code == 403
    assert control_plane.paths == []
    with pytest.raises(ControlPlaneError):
        path_id(workspace, "workspace id")


def dropping_first(attempts: list[int]) -> httpx.MockTransport:
    """A control plane that drops the first request's connection without answering (a pooled
    connection it closed while idle), then answers."""

    def handle(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, json={"call_id": "call_1", "lease_expires_at": "x"})

    return httpx.MockTransport(handle)


async def test_a_connection_dropped_before_any_answer_is_tried_again() -> None:
    attempts: list[int] = []
    async with httpx.AsyncClient(transport=dropping_first(attempts)) as http:
        client = ControlPlaneClient("http://control-plane", "sbt_service", http=http)
        await client.renew_lease("call_1")
    assert len(attempts) == 2


async def test_without_that_retry_the_dropped_connection_fails_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from switchboard_runtime import client as client_module

    real = client_module.httpx

    class NoRetry:
        ConnectError, ConnectTimeout, HTTPError = (
            real.ConnectError,
            real.ConnectTimeout,
            real.HTTPError,
        )
        RemoteProtocolError = type("NeverRaised", (Exception,), {})
        AsyncClient = real.AsyncClient

    monkeypatch.setattr(client_module, "httpx", NoRetry)
    attempts: list[int] = []
    async with httpx.AsyncClient(transport=dropping_first(attempts)) as http:
        client = ControlPlaneClient("http://control-plane", "sbt_service", http=http)
        with pytest.raises(ControlPlaneError) as refused:
            await client.renew_lease("call_1")
    assert refused.value.code == "control_plane_unreachable" and len(attempts) == 1
