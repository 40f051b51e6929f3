"""A fake xAI API on loopback, for tests and benchmarks: the real one is out of reach here.

HTTP: `GET /v1/api-key` (key check) and `POST /v1/realtime/client_secrets` (ephemeral secrets).
WebSocket: `/v1/realtime?model=...`, speaking the documented protocol with its quirks:
`conversation.created` before `session.updated`, `ping` events, function calls both as
`response.function_call_arguments.done` and only inside `response.done`, `error` events, and a
close at its session limit. Behaviour is scripted through FakeXAIState; every connection records
what it received.

A caller "utterance" is `frames_per_utterance` appended audio frames: the fake then plays server
VAD (speech_started/stopped, committed, the caller's transcript) and answers with a response:
audio deltas (the bytes in `reply_audio`, paced by `delta_interval`), the agent's transcript, or a
tool call first when the turn is scripted for one.
"""

import asyncio
import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


@dataclass
class ToolTurn:
    name: str
    arguments: dict[str, Any]
    # "arguments_done": response.function_call_arguments.done and response.done;
    # "response_done_only": the call appears only inside response.done's output.
    style: str = "arguments_done"


@dataclass
class Connection:
    model: str
    authorization: str
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    closed_by_fake: str | None = None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e.get("type") == kind]


@dataclass
class FakeXAIState:
    accepted_keys: set[str] = field(default_factory=set)
    secrets_minted: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    http_delay: float = 0.0
    # Realtime behaviour.
    frames_per_utterance: int = 5
    reply_audio: list[bytes] = field(
        default_factory=lambda: [bytes([i]) * 160 for i in range(1, 6)]
    )
    delta_interval: float = 0.0
    caller_transcripts: list[str] = field(default_factory=lambda: ["Hello, where is my order?"])
    agent_transcript: str = "Let me check that for you."
    tool_turns: dict[int, ToolTurn] = field(default_factory=dict)  # utterance index → tool call
    error_on_utterance: int | None = None
    drop_on_utterance: int | None = None
    session_limit_seconds: float | None = None
    send_unknown_events: bool = True
    handshake_delay: float = 0.0
    connections: list[Connection] = field(default_factory=list)

    def valid_secret(self, token: str) -> bool:
        return token in self.accepted_keys or any(s["value"] == token for s in self.secrets_minted)


def _bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    return token if scheme.lower() == "bearer" and token else None


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        {"code": "unauthorized", "error": "Incorrect API key provided"}, status_code=401
    )


def build_http_routes(state: FakeXAIState) -> list[Route]:
    async def api_key(request: Request) -> JSONResponse:
        state.requests.append(("GET", "/v1/api-key"))
        if state.http_delay:
            await asyncio.sleep(state.http_delay)
        key = _bearer(request.headers.get("authorization", ""))
        if key not in state.accepted_keys:
            return _unauthorized()
        return JSONResponse(
            {"redacted_api_key": key[:4] + "****" + key[-4:], "api_key_blocked": False}
        )

    async def client_secrets(request: Request) -> JSONResponse:
        state.requests.append(("POST", "/v1/realtime/client_secrets"))
        key = _bearer(request.headers.get("authorization", ""))
        if key not in state.accepted_keys:
            return _unauthorized()
        body = await request.json()
        seconds = int(body.get("expires_after", {}).get("seconds", 600))
        secret = {
            "value": "xai-eph-" + secrets.token_urlsafe(24),
            "expires_at": int(time.time()) + seconds,
        }
        state.secrets_minted.append(secret)
        return JSONResponse(secret)

    return [
        Route("/v1/api-key", api_key, methods=["GET"]),
        Route("/v1/realtime/client_secrets", client_secrets, methods=["POST"]),
    ]


class RealtimeConversation:
    """One realtime connection of the fake."""

    def __init__(self, state: FakeXAIState, websocket: WebSocket, record: Connection) -> None:
        self.state, self.ws, self.record = state, websocket, record
        self.frames = 0
        self.utterance = 0
        self.responding: asyncio.Task[None] | None = None
        self.pending_tool: str | None = None
        self.counter = 0

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter}"

    async def send(self, kind: str, **fields: Any) -> None:
        event = {"type": kind, "event_id": self.next_id("event"), **fields}
        self.record.sent.append(event)
        await self.ws.send_text(json.dumps(event))

    async def run(self) -> None:
        await self.send(
            "conversation.created", conversation={"id": "conv_1", "object": "realtime.conversation"}
        )
        limit = (
            asyncio.create_task(self.session_limit()) if self.state.session_limit_seconds else None
        )
        try:
            while True:
                event = json.loads(await self.ws.receive_text())
                self.record.received.append(event)
                await self.on_event(event)
        except (WebSocketDisconnect, RuntimeError):
            return  # the peer left, or the fake closed the socket itself
        finally:
            if limit:
                limit.cancel()
            if self.responding:
                self.responding.cancel()

    async def session_limit(self) -> None:
        await asyncio.sleep(self.state.session_limit_seconds or 0)
        self.record.closed_by_fake = "session_limit"
        await self.ws.close(1000, "session time limit reached")

    async def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "session.update":
            await asyncio.sleep(self.state.handshake_delay)
            await self.send("ping", timestamp=int(time.time() * 1000))
            await self.send("session.updated", session=event.get("session", {}))
        elif kind == "input_audio_buffer.append":
            base64.b64decode(event["audio"], validate=True)  # a real server refuses garbage too
            self.frames += 1
            if self.frames == 1:
                await self.send(
                    "input_audio_buffer.speech_started",
                    audio_start_ms=0,
                    item_id=self.next_id("item"),
                )
            if self.frames >= self.state.frames_per_utterance:
                self.frames = 0
                await self.end_of_utterance()
        elif (
            kind == "conversation.item.create"
            and event.get("item", {}).get("type") == "function_call_output"
        ):
            self.pending_tool = None
        elif kind == "response.create":
            self.responding = asyncio.create_task(self.respond_with_audio())
        elif kind == "response.cancel" and self.responding and not self.responding.done():
            self.responding.cancel()

    async def end_of_utterance(self) -> None:
        index = self.utterance
        self.utterance += 1
        await self.send(
            "input_audio_buffer.speech_stopped", audio_end_ms=100, item_id=self.next_id("item")
        )
        await self.send("input_audio_buffer.committed", item_id=self.next_id("item"))
        transcripts = self.state.caller_transcripts
        transcript = (
            transcripts[index] if index < len(transcripts) else f"caller utterance {index + 1}"
        )
        await self.send(
            "conversation.item.input_audio_transcription.completed",
            item_id=self.next_id("item"),
            transcript=transcript,
        )
        if self.state.send_unknown_events:
            await self.send("rate_limits.updated", rate_limits=[])
        if self.state.error_on_utterance == index:
            await self.send(
                "error",
                error={
                    "type": "server_error",
                    "code": "internal_error",
                    "message": "The server had an error",
                    "event_id": None,
                },
            )
            return
        if self.state.drop_on_utterance == index:
            self.record.closed_by_fake = "drop"
            await self.ws.close(1011, "internal error")
            return
        tool = self.state.tool_turns.get(index)
        if tool is not None:
            await self.call_tool(tool)
        else:
            self.responding = asyncio.create_task(self.respond_with_audio())

    async def call_tool(self, tool: ToolTurn) -> None:
        response_id, call_id = self.next_id("resp"), self.next_id("call")
        arguments = json.dumps(tool.arguments)
        self.pending_tool = call_id
        await self.send("response.created", response={"id": response_id, "status": "in_progress"})
        if tool.style == "arguments_done":
            await self.send(
                "response.function_call_arguments.done",
                response_id=response_id,
                call_id=call_id,
                name=tool.name,
                arguments=arguments,
            )
        output = [
            {"type": "function_call", "call_id": call_id, "name": tool.name, "arguments": arguments}
        ]
        await self.send(
            "response.done", response={"id": response_id, "status": "completed", "output": output}
        )

    async def respond_with_audio(self) -> None:
        response_id = self.next_id("resp")
        await self.send("response.created", response={"id": response_id, "status": "in_progress"})
        await self.send(
            "response.output_item.added", response_id=response_id, item={"type": "message"}
        )
        for chunk in self.state.reply_audio:
            await self.send(
                "response.output_audio.delta",
                response_id=response_id,
                delta=base64.b64encode(chunk).decode(),
            )
            if self.state.delta_interval:
                await asyncio.sleep(self.state.delta_interval)
        await self.send("response.output_audio.done", response_id=response_id)
        await self.send(
            "response.output_audio_transcript.done",
            response_id=response_id,
            transcript=self.state.agent_transcript,
        )
        await self.send(
            "response.done",
            response={"id": response_id, "status": "completed", "output": [], "usage": {}},
        )


def build_app(state: FakeXAIState) -> Starlette:
    async def realtime(websocket: WebSocket) -> None:
        token = _bearer(websocket.headers.get("authorization", ""))
        if token is None or not state.valid_secret(token):
            await websocket.close(4001, "unauthorized")  # before accept: the handshake is refused
            return
        await websocket.accept()
        record = Connection(model=websocket.query_params.get("model", ""), authorization=token)
        state.connections.append(record)
        await RealtimeConversation(state, websocket, record).run()

    return Starlette(routes=[*build_http_routes(state), WebSocketRoute("/v1/realtime", realtime)])
