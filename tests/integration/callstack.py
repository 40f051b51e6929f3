"""A running call stack for tests: a real control plane, the call worker and the fake xAI on
loopback, and a scripted phone provider that answers with signed webhooks and speaks Twilio's or
Telnyx's media-stream protocol. Twilio signatures come from the official `twilio` helper library
(an independent implementation); Telnyx's from an Ed25519 key made here."""

import asyncio
import base64
import contextlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import SecretStr
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect

from control_plane.app import create_app
from control_plane.calls import tokens
from control_plane.settings import Settings
from switchboard_runtime.contract import ResolvedSessionConfig
from switchboard_runtime.session import GrokRealtimeSession, MemoryTelemetrySink
from switchboard_runtime.tools import ToolRegistry
from switchboard_runtime.worker import WorkerSettings, create_worker_app
from switchboard_runtime.worker.serving import SwitchboardServer
from tests.conftest import auth
from tests.fakes.fake_xai import FakeXAIState, build_app
from tests.fakes.server import BackgroundServer, ReservedPorts

XAI_KEY = "xai-" + "RuntimeTestKey0123456789ab" + "Rt42"
CALLER_FRAMES = [base64.b64encode(bytes([0x7F - i]) * 160).decode() for i in range(5)]


@dataclass
class Stack:
    control_plane: str
    worker: str
    service_token: str
    admin_token: str
    agent_id: str
    xai: FakeXAIState
    telemetry: MemoryTelemetrySink
    tool_log: list[dict[str, Any]]
    twilio_auth_token: str
    telnyx_key: Ed25519PrivateKey
    database_url: str
    stream_token_key: bytes
    worker_app: Any
    worker_settings: WorkerSettings

    @property
    def media(self) -> str:
        """The worker's media plane (call sockets), `ws://host:port`."""
        return str(self.worker_app.state.media_plane.url)

    def worker_replica(self, **settings: Any) -> tuple[BackgroundServer, Any]:
        """A second worker replica on the same control plane, not started: its server (which
        stops as `switchboard worker` does) and app ("{port}" and "{media_port}" in a setting
        become the replica's HTTP and media plane ports)."""
        reserved = ReservedPorts(2)  # held until the replica listens on them
        port, media_port = reserved.ports
        update = {
            "worker_public_url": f"http://127.0.0.1:{port}",
            "worker_media_port": media_port,
            **settings,
        }
        update = {
            k: v.replace("{port}", str(port)).replace("{media_port}", str(media_port))
            if isinstance(v, str)
            else v
            for k, v in update.items()
        }
        app = create_worker_app(
            self.worker_settings.model_copy(update=update), telemetry=self.telemetry
        )
        return BackgroundServer(
            app, port=port, server_class=SwitchboardServer, reserved=reserved
        ), app

    @contextlib.contextmanager
    def another_worker(self, **settings: Any) -> Iterator[tuple[str, Any]]:
        """A second worker replica on the same control plane, running: its base URL and app."""
        server, app = self.worker_replica(**settings)
        with server:
            yield server.base_url, app

    def ws(self, path: str) -> str:
        """A call socket's URL: on the media plane, or the worker's HTTP port without one."""
        if self.worker_app.state.media_plane is None:
            return self.worker.replace("http://", "ws://") + path
        return self.media + path


def telnyx_public_key(private_key: Ed25519PrivateKey) -> str:
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


@dataclass
class StackOptions:
    max_concurrent_calls: int | None = None
    stream_start_timeout_seconds: float = 1.0
    stream_token_ttl_seconds: int = 60
    warm_start: bool = True
    warm_session_unclaimed_seconds: float = 15.0
    cors_origins: str | None = None
    # Call sockets on the worker's media plane, as under `switchboard worker`; False: on the
    # worker's HTTP server (through Starlette), as under a host backend's own ASGI server.
    media_plane: bool = True
    # How uvicorn serves the worker's WebSockets without a media plane: as `switchboard worker`
    # would, unless a test asks for uvicorn's defaults (e.g. {"ws_per_message_deflate": True}).
    worker_websockets: dict[str, Any] = field(default_factory=dict)


def provision(
    http: httpx.Client,
    twilio_token: str,
    telnyx_key: Ed25519PrivateKey,
    max_concurrent_calls: int | None = None,
) -> str:
    """acme and globex in the internal cohort with their webhook secrets; acme has an xAI key
    and a Grok agent (with a tool and web search), whose id is returned. `http` is an admin's."""
    for ws in ("acme", "globex"):
        http.post("/api/v1/workspaces", json={"id": ws, "name": ws}).raise_for_status()
        http.put(
            f"/api/v1/workspaces/{ws}/settings/api-keys",
            json={"twilio_api_key": twilio_token, "telnyx_api_key": telnyx_public_key(telnyx_key)},
        ).raise_for_status()
        if max_concurrent_calls is not None:
            http.patch(
                f"/api/v1/workspaces/{ws}/settings",
                json={"max_concurrent_calls": max_concurrent_calls},
            ).raise_for_status()
    http.put("/api/v1/cohorts/internal", json={"members": ["acme", "globex"]}).raise_for_status()
    http.put(
        "/api/v1/workspaces/acme/settings/api-keys", json={"xai_api_key": XAI_KEY}
    ).raise_for_status()
    agent = http.post(
        "/api/v1/workspaces/acme/agents",
        json={
            "name": "Ava",
            "pricing_tier": "grok-realtime",
            "voice": "marin",
            "instructions": "You are Ava.",
            "tools": [
                {
                    "name": "lookup_order",
                    "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
                }
            ],
            "builtin_tools": {"web_search": True},
        },
    )
    agent.raise_for_status()
    return str(agent.json()["id"])


def build_stack(tmp_path: Path, options: StackOptions | None = None) -> Iterator[Stack]:
    from sqlmodel import Session

    from control_plane.auth import service as auth_service
    from control_plane.catalogue.seed import seed_catalogue
    from control_plane.db import make_engine
    from control_plane.migrate import upgrade

    options = options or StackOptions()
    xai = FakeXAIState(accepted_keys={XAI_KEY})
    database_url = f"sqlite:///{tmp_path}/cp.db"
    upgrade(database_url)
    twilio_token = secrets.token_hex(16)
    telnyx_key = Ed25519PrivateKey.generate()
    reserved = ReservedPorts(2)  # held until the worker listens on them
    worker_port, media_port = reserved.ports
    call_port = media_port if options.media_plane else worker_port  # browser calls go here
    with BackgroundServer(build_app(xai)) as fake:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            environment="test",
            database_url=database_url,
            master_key_file=tmp_path / "master.key",
            xai_base_url=fake.base_url,
            xai_realtime_url=fake.base_url.replace("http://", "ws://") + "/v1/realtime",
            stream_token_ttl_seconds=options.stream_token_ttl_seconds,
            browser_call_url=f"http://127.0.0.1:{call_port}",
            cors_origins=options.cors_origins,
        )
        app = create_app(settings)
        engine = make_engine(settings)
        with Session(engine) as session:
            seed_catalogue(session)
            _, admin = auth_service.create_token(session, name="admin", scopes=["admin"])
            _, service = auth_service.create_token(session, name="service", scopes=["service"])
            session.commit()
        engine.dispose()
        with (
            BackgroundServer(app) as control_plane,
            httpx.Client(base_url=control_plane.base_url, headers=auth(admin)) as http,
        ):
            agent_id = provision(http, twilio_token, telnyx_key, options.max_concurrent_calls)
            telemetry = MemoryTelemetrySink()
            tool_log: list[dict[str, Any]] = []

            def tools_factory(_config: ResolvedSessionConfig) -> ToolRegistry:
                registry = ToolRegistry(timeout_seconds=1)

                @registry.tool("lookup_order")
                async def lookup_order(arguments: dict[str, Any]) -> dict[str, Any]:
                    tool_log.append(arguments)
                    if arguments.get("id") == "broken":
                        raise RuntimeError("order service down")
                    return {"status": "shipped", "id": arguments.get("id")}

                return registry

            worker_settings = WorkerSettings(  # type: ignore[call-arg]
                _env_file=None,
                environment="test",
                control_plane_url=control_plane.base_url,
                service_token=SecretStr(service),
                worker_public_url=f"http://127.0.0.1:{worker_port}",
                stream_start_timeout_seconds=options.stream_start_timeout_seconds,
                warm_start=options.warm_start,
                warm_session_unclaimed_seconds=options.warm_session_unclaimed_seconds,
                worker_media_port=media_port if options.media_plane else None,
            )
            worker_app = create_worker_app(
                worker_settings, tools_factory=tools_factory, telemetry=telemetry
            )
            with BackgroundServer(
                worker_app, port=worker_port, reserved=reserved, **options.worker_websockets
            ) as worker:
                yield Stack(
                    control_plane=control_plane.base_url,
                    worker=worker.base_url,
                    service_token=service,
                    admin_token=admin,
                    agent_id=agent_id,
                    xai=xai,
                    telemetry=telemetry,
                    tool_log=tool_log,
                    twilio_auth_token=twilio_token,
                    telnyx_key=telnyx_key,
                    database_url=database_url,
                    stream_token_key=app.state.call_policy.stream_token_key,
                    worker_app=worker_app,
                    worker_settings=worker_settings,
                )


def session_for(
    stack: Stack, workspace: str = "acme", agent_id: str | None = None, **kwargs: Any
) -> GrokRealtimeSession:
    return GrokRealtimeSession(
        control_plane_url=stack.control_plane,
        service_token=stack.service_token,
        workspace_id=workspace,
        agent_id=agent_id or stack.agent_id,
        telemetry=stack.telemetry,
        **kwargs,
    )


# --- the phone provider's side ------------------------------------------------------------------


@dataclass
class Answer:
    """What the worker answered a phone provider's webhook with."""

    status: int
    text: str

    @property
    def stream_url(self) -> str:
        match = re.search(r'<Stream url="([^"]+)"', self.text)
        assert match, self.text
        return match.group(1).replace("&amp;", "&")

    @property
    def stream_token(self) -> str | None:
        if "<Stream" not in self.text:
            return None
        match = re.search(r'<Parameter name="stream_token" value="([^"]+)"', self.text)
        if match:
            return match.group(1)
        query = re.search(r"token=([^&\"]+)", self.stream_url)
        return query.group(1) if query else None


def webhook_url(stack: Stack, kind: str, agent_id: str | None, workspace: str) -> str:
    """The URL a phone number is configured with: the worker's public URL, path and query."""
    query = urlencode({"workspace_id": workspace})
    return f"{stack.worker}/{kind}/{agent_id or stack.agent_id}?{query}"


def twilio_params(call_sid: str | None = None) -> dict[str, str]:
    """A ringing call's webhook parameters; a fresh CallSid each time unless given (each real
    call has its own, and one CallSid issues one call)."""
    return {
        "CallSid": call_sid or f"CA{secrets.token_hex(16)}",
        "AccountSid": "AC" + "0" * 32,
        "From": "+15550100",
        "To": "+15550199",
        "CallStatus": "ringing",
        "Direction": "inbound",
    }


async def answer_twilio(
    stack: Stack,
    agent_id: str | None = None,
    workspace: str = "acme",
    *,
    auth_token: str | None = None,
    signature: str | None = None,
    params: dict[str, str] | None = None,
    via: str | None = None,
) -> Answer:
    """POST /twiml as Twilio does, signed by the official helper library's RequestValidator.
    `via`: the replica a load balancer hands the request to (the signed URL stays the same)."""
    params = params if params is not None else twilio_params()
    url = webhook_url(stack, "twiml", agent_id, workspace)
    if signature is None:
        signature = RequestValidator(auth_token or stack.twilio_auth_token).compute_signature(
            url, params
        )
    target = url.replace(stack.worker, via, 1) if via else url
    async with httpx.AsyncClient() as http:
        response = await http.post(target, data=params, headers={"X-Twilio-Signature": signature})
    return Answer(response.status_code, response.text)


async def answer_telnyx(
    stack: Stack,
    agent_id: str | None = None,
    workspace: str = "acme",
    *,
    key: Ed25519PrivateKey | None = None,
    timestamp: int | None = None,
    signature: str | None = None,
    tamper: bool = False,
    call_id: str | None = None,
    body: bytes | None = None,
) -> Answer:
    """POST /texml as Telnyx does: Ed25519 over `{timestamp}|{raw body}`. A fresh call id each
    time unless given (or a whole `body`)."""
    call_id = call_id or f"v3:{secrets.token_urlsafe(16)}"
    if body is None:
        body = urlencode({"CallSid": call_id, "From": "+15550100", "To": "+15550199"}).encode()
    sent_at = str(timestamp if timestamp is not None else int(time.time()))
    if signature is None:
        signed = (key or stack.telnyx_key).sign(sent_at.encode() + b"|" + body)
        signature = base64.b64encode(signed).decode()
    url = webhook_url(stack, "texml", agent_id, workspace)
    async with httpx.AsyncClient() as http:
        response = await http.post(
            url,
            content=body + (b"&x=1" if tamper else b""),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "telnyx-timestamp": sent_at,
                "telnyx-signature-ed25519": signature,
            },
        )
    return Answer(response.status_code, response.text)


class Phone:
    """A phone provider's side of a media stream: Twilio's or Telnyx's frames."""

    def __init__(self, kind: str, websocket: ClientConnection) -> None:
        self.kind, self.ws = kind, websocket
        self.received: list[dict[str, Any]] = []

    async def start(self, parameters: dict[str, str] | None = None) -> None:
        if self.kind == "twilio":
            await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            await self.send(
                {
                    "event": "start",
                    "sequenceNumber": "1",
                    "streamSid": "MZ123",
                    "start": {
                        "streamSid": "MZ123",
                        "callSid": "CA123",
                        "tracks": ["inbound"],
                        "customParameters": parameters or {},
                        "mediaFormat": {
                            "encoding": "audio/x-mulaw",
                            "sampleRate": 8000,
                            "channels": 1,
                        },
                    },
                }
            )
        else:
            await self.send({"event": "connected", "version": "1.0.0"})
            await self.send(
                {
                    "event": "start",
                    "sequence_number": "1",
                    "stream_id": "ts-123",
                    "start": {
                        "call_control_id": "v3:abc",
                        "custom_parameters": parameters or {},
                        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
                    },
                }
            )

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def speak(self, frames: list[str]) -> None:
        for index, payload in enumerate(frames):
            media = {
                "track": "inbound",
                "chunk": str(index + 1),
                "timestamp": str(20 * index),
                "payload": payload,
            }
            frame: dict[str, Any] = {"event": "media", "media": media}
            frame["streamSid" if self.kind == "twilio" else "stream_id"] = (
                "MZ123" if self.kind == "twilio" else "ts-123"
            )
            await self.send(frame)

    async def hang_up(self) -> None:
        await self.send(
            {"event": "stop", "stop": {"callSid": "CA123"}}
            if self.kind == "twilio"
            else {"event": "stop"}
        )

    async def collect(self, until: Any, seconds: float = 5.0) -> None:
        async with asyncio.timeout(seconds):
            while not until(self):
                self.received.append(json.loads(await self.ws.recv()))

    async def closed(self, seconds: float = 5.0) -> tuple[int | None, str | None]:
        """Wait until the worker closes the socket; its close code and reason."""
        async with asyncio.timeout(seconds):
            try:
                while True:
                    self.received.append(json.loads(await self.ws.recv()))
            except Exception:  # noqa: S110 - the close is what we wait for
                pass
        return self.ws.close_code, self.ws.close_reason

    def media(self) -> list[str]:
        return [f["media"]["payload"] for f in self.received if f.get("event") == "media"]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [f for f in self.received if f.get("event") == name]


async def phone_call(
    stack: Stack, kind: str, agent_id: str | None = None, workspace: str = "acme"
) -> AsyncIterator[Phone]:
    """A signed webhook, then the media stream the answer points at, with its token."""
    answer = await (answer_twilio if kind == "twilio" else answer_telnyx)(
        stack, agent_id, workspace
    )
    assert answer.status == 200 and "<Stream" in answer.text, answer.text
    token = answer.stream_token
    assert token
    async with connect(answer.stream_url) as websocket:
        phone = Phone(kind, websocket)
        await phone.start({"stream_token": token} if kind == "twilio" else None)
        yield phone


async def assert_audio_passes_untouched(stack: Stack, phone: Phone) -> None:
    """The caller speaks: the bytes that reach xAI are exactly the caller's, in order, and the
    bytes that reach the phone exactly the ones xAI sent."""
    await phone.speak(CALLER_FRAMES)
    expected = [base64.b64encode(chunk).decode() for chunk in stack.xai.reply_audio]
    await phone.collect(lambda p, n=len(expected): len(p.media()) >= n)
    assert phone.media() == expected
    appended = [e["audio"] for e in stack.xai.connections[-1].of_type("input_audio_buffer.append")]
    assert appended == CALLER_FRAMES


async def poll(condition: Any, seconds: float = 5.0) -> None:
    """Wait for a condition another task or server thread makes true."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - set from another thread, no event to await
            await asyncio.sleep(0.01)


async def wait_for_report(stack: Stack, count: int = 1) -> None:
    await poll(lambda: len(stack.telemetry.reports) >= count)


def forged(stack: Stack, call_id: str, *, expires_in: float = 60, key: bytes | None = None) -> str:
    """A stream token for this call, signed with `key` (a forgery) or the stack's own key."""
    grant = tokens.StreamGrant(
        call_id, "acme", stack.agent_id, datetime.now(UTC) + timedelta(seconds=expires_in)
    )
    return tokens.sign(key or stack.stream_token_key, grant)
