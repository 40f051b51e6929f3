"""Browser test calls against a running control plane, the call worker and the fake xAI: a
member mints a single-use token, the browser stream carries PCM16 at 24 kHz both ways untouched,
the same refusals as a phone call reach the page as readable messages, and the call is reported
as a test call that stays out of the rollout's health. Each guard beside its switched-off twin."""

import asyncio
import contextlib
import json
import math
import struct
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from control_plane.calls import models as calls_models
from control_plane.calls import service as calls_service
from control_plane.calls import tokens
from switchboard_runtime.session import GrokRealtimeSession
from tests.conftest import auth
from tests.integration.callstack import Stack, answer_twilio, forged, wait_for_report

RATE = 24_000
FRAME_SAMPLES = 480  # 20 ms


def tone(frames: int, amplitude: float = 0.4) -> list[bytes]:
    """Frames of a 440 Hz tone, PCM16 little-endian: loud enough to be speech."""
    samples = [
        int(amplitude * 32767 * math.sin(2 * math.pi * 440 * n / RATE))
        for n in range(frames * FRAME_SAMPLES)
    ]
    data = struct.pack(f"<{len(samples)}h", *samples)
    size = FRAME_SAMPLES * 2
    return [data[i : i + size] for i in range(0, len(data), size)]


SILENCE = bytes(FRAME_SAMPLES * 2)
AGENT_AUDIO = tone(6, amplitude=0.2)  # what the fake answers with, 120 ms of PCM16


@pytest.fixture
def browser_stack(stack: Stack) -> Stack:
    stack.xai.reply_audio = list(AGENT_AUDIO)
    return stack


async def mint(
    stack: Stack, token: str, agent_id: str | None = None, workspace: str = "acme"
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.control_plane) as http:
        return await http.post(
            f"/api/v1/workspaces/{workspace}/agents/{agent_id or stack.agent_id}/test-calls",
            headers=auth(token),
        )


async def acme_token(stack: Stack) -> str:
    async with httpx.AsyncClient(
        base_url=stack.control_plane, headers=auth(stack.admin_token)
    ) as h:
        created = await h.post(
            "/api/v1/tokens", json={"name": "acme", "scopes": ["workspace:acme"]}
        )
    assert created.status_code == 201, created.text
    return str(created.json()["token"])


class Browser:
    """The agent page's side of the stream, as test-call.js speaks it."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.audio: list[bytes] = []
        self.messages: list[dict[str, Any]] = []
        self.sequence: list[str] = []  # "audio" or a message's type, in the order they came

    async def read_until(self, done: Any, seconds: float = 5.0) -> None:
        async with asyncio.timeout(seconds):
            while not done(self):
                frame = await self.ws.recv()
                if isinstance(frame, bytes):
                    self.audio.append(frame)
                    self.sequence.append("audio")
                else:
                    self.messages.append(json.loads(frame))
                    self.sequence.append(self.messages[-1]["type"])

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    async def closed(self) -> tuple[int | None, str | None]:
        with contextlib.suppress(Exception):  # the close is what we wait for
            await self.read_until(lambda _b: False)
        return self.ws.close_code, self.ws.close_reason


async def open_call(url: str, token: str) -> Browser:
    ws = await connect(url)
    await ws.send(json.dumps({"type": "start", "token": token}))
    return Browser(ws)


async def test_a_browser_call_carries_pcm16_at_24_khz_both_ways(browser_stack: Stack) -> None:
    stack = browser_stack
    minted = await mint(stack, await acme_token(stack))
    assert minted.status_code == 201, minted.text
    call = minted.json()
    assert call["url"] == stack.ws(f"/ws/realtime/{stack.agent_id}")
    browser = await open_call(call["url"], call["token"])
    await browser.read_until(lambda b: b.of("ready"))
    assert browser.of("ready")[0]["audio"] == {"type": "audio/pcm", "rate": RATE}
    spoken = tone(10) + [SILENCE] * 3
    for frame in spoken:
        await browser.ws.send(frame)
    await browser.read_until(
        lambda b: len(b.audio) >= len(AGENT_AUDIO) and len(b.of("transcript")) >= 2
    )
    assert browser.audio == AGENT_AUDIO  # byte for byte, no resampling
    roles = {m["role"]: m["text"] for m in browser.of("transcript")}
    assert roles == {"caller": "Hello, where is my order?", "agent": "Let me check that for you."}
    assert browser.of("first_audio")[0]["ms"] is not None
    await browser.ws.send(json.dumps({"type": "stop"}))
    await browser.read_until(lambda b: b.of("ended"))
    assert browser.of("ended")[0]["reason"] == "caller_hangup"
    await browser.ws.close()

    connection = stack.xai.connections[-1]
    formats = connection.of_type("session.update")[0]["session"]["audio"]
    assert formats == {
        "input": {"format": {"type": "audio/pcm", "rate": RATE}},
        "output": {"format": {"type": "audio/pcm", "rate": RATE}},
    }
    assert stack.xai.pcm_frames == spoken  # what the browser sent is what xAI heard
    await wait_for_report(stack)
    report = stack.telemetry.reports[-1]
    assert report.call_id == call["call_id"] and report.end_reason == "caller_hangup"


async def talk_over_the_agent(stack: Stack, until: Any = None) -> Browser:
    """A browser call in which the caller speaks, hears part of a long reply, then talks over it;
    returns the browser after everything the worker sent for longer than the rest of the reply
    takes (or, given `until`, once that holds)."""
    stack.xai.delta_interval = 0.03
    stack.xai.reply_audio = tone(40, amplitude=0.2)  # 800 ms of reply
    stack.xai.audio_after_cancel = 3  # still on the wire when the cancel lands
    call = (await mint(stack, await acme_token(stack))).json()
    browser = await open_call(call["url"], call["token"])
    await browser.read_until(lambda b: b.of("ready"))
    for frame in tone(10) + [SILENCE] * 3:
        await browser.ws.send(frame)
    await browser.read_until(lambda b: len(b.audio) >= 3)
    for frame in tone(2):  # the caller talks over the agent (and is still talking)
        await browser.ws.send(frame)
    with contextlib.suppress(TimeoutError):
        if until is None:
            await browser.read_until(lambda _b: False, seconds=1.5)
        else:
            await browser.read_until(until, seconds=10)
    await browser.ws.close()
    return browser


async def test_barge_in_clears_the_browser_once_and_drops_the_rest_of_the_reply(
    browser_stack: Stack,
) -> None:
    browser = await talk_over_the_agent(browser_stack)
    assert len(browser.of("clear")) == 1
    # The page plays what came before the clear; of the cancelled reply nothing arrives after
    # it, though xAI sent more of it (audio_after_cancel) than the page had played.
    after_clear = browser.sequence[browser.sequence.index("clear") + 1 :]
    assert "audio" not in after_clear
    assert len(browser.audio) < 40
    connection = browser_stack.xai.connections[-1]
    assert len(connection.of_type("response.cancel")) == 1
    cancelled = connection.sent_of_type("response.done")[0]["response"]
    assert cancelled["status"] == "cancelled"
    sent = [
        e
        for e in connection.sent_of_type("response.output_audio.delta")
        if e["response_id"] == cancelled["id"]
    ]
    assert len(sent) > len(browser.audio)


async def test_without_barge_in_the_browser_hears_the_whole_reply_over_the_caller(
    browser_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_barge_in(self: GrokRealtimeSession) -> None:
        return None

    monkeypatch.setattr(GrokRealtimeSession, "_barge_in", no_barge_in)
    browser = await talk_over_the_agent(browser_stack, until=lambda b: len(b.audio) >= 40)
    assert browser.of("clear") == []
    assert browser.audio[:40] == tone(40, amplitude=0.2)


async def test_a_used_token_opens_no_second_call(browser_stack: Stack) -> None:
    call = (await mint(browser_stack, await acme_token(browser_stack))).json()
    first = await open_call(call["url"], call["token"])
    await first.read_until(lambda b: b.of("ready"))
    second = await open_call(call["url"], call["token"])
    assert await second.closed() == (4401, "unauthorized")
    assert "expired or was used" in second.of("error")[0]["message"]
    await first.ws.close()
    assert len(browser_stack.xai.connections) == 1


async def test_without_single_use_a_token_opens_a_second_call(
    browser_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calls_service, "claimable_states", lambda: ("issued", "active"))
    call = (await mint(browser_stack, await acme_token(browser_stack))).json()
    first = await open_call(call["url"], call["token"])
    await first.read_until(lambda b: b.of("ready"))
    second = await open_call(call["url"], call["token"])
    await second.read_until(lambda b: b.of("ready"))
    await first.ws.close()
    await second.ws.close()
    assert len(browser_stack.xai.connections) == 2


def expired_token(stack: Stack, call_id: str) -> str:
    return forged(stack, call_id, expires_in=-1)


async def test_an_expired_token_is_refused(browser_stack: Stack) -> None:
    call = (await mint(browser_stack, await acme_token(browser_stack))).json()
    browser = await open_call(call["url"], expired_token(browser_stack, call["call_id"]))
    assert await browser.closed() == (4401, "unauthorized")
    assert browser_stack.xai.connections == []


async def test_without_the_expiry_check_an_expired_token_gets_in(
    browser_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens, "not_expired", lambda grant, now: True)
    call = (await mint(browser_stack, await acme_token(browser_stack))).json()
    browser = await open_call(call["url"], expired_token(browser_stack, call["call_id"]))
    await browser.read_until(lambda b: b.of("ready"))
    await browser.ws.close()
    assert len(browser_stack.xai.connections) == 1


async def test_a_phone_calls_token_opens_no_browser_stream_and_is_not_burned(
    browser_stack: Stack,
) -> None:
    stack = browser_stack
    stack.worker_app.state.warm = _NoWarm(stack.worker_app.state.warm)  # the token must claim
    answer = await answer_twilio(stack)
    token = answer.stream_token or ""
    browser = await open_call(stack.ws(f"/ws/realtime/{stack.agent_id}"), token)
    assert await browser.closed() == (4401, "unauthorized")
    assert stack.xai.connections == []
    async with httpx.AsyncClient(base_url=stack.control_plane) as http:
        claimed = await http.post(
            "/api/v1/calls/claim",
            json={"stream_token": token, "agent_id": stack.agent_id, "stream": "phone"},
            headers=auth(stack.service_token),
        )
    assert claimed.status_code == 200, claimed.text  # still good for the phone's stream


async def test_without_the_channel_check_a_phone_token_opens_a_browser_stream(
    browser_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = browser_stack
    everything = ("twilio", "telnyx", "api", "browser")
    monkeypatch.setitem(calls_models.STREAM_CHANNELS, "browser", everything)
    stack.worker_app.state.warm = _NoWarm(stack.worker_app.state.warm)
    answer = await answer_twilio(stack)
    browser = await open_call(stack.ws(f"/ws/realtime/{stack.agent_id}"), answer.stream_token or "")
    await browser.read_until(lambda b: b.of("ready"))
    await browser.ws.close()
    assert len(stack.xai.connections) == 1


class _NoWarm:
    """The worker's warm sessions switched off, so a phone call's token is only claimed."""

    def __init__(self, warm: Any) -> None:
        self._warm = warm

    def begin(self, *args: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._warm, name)


async def test_the_same_refusals_as_a_phone_call_reach_the_page(browser_stack: Stack) -> None:
    stack = browser_stack
    acme = await acme_token(stack)
    admin = httpx.AsyncClient(base_url=stack.control_plane, headers=auth(stack.admin_token))
    async with admin:
        globex = (
            await admin.post("/api/v1/tokens", json={"name": "g", "scopes": ["workspace:globex"]})
        ).json()["token"]
        # Another workspace's member cannot start a call on this agent.
        foreign = await mint(stack, globex)
        assert (foreign.status_code, foreign.json()["code"]) == (404, "workspace_not_found")
        # A workspace in the rollout without an xAI key hears the seed's message.
        gus = (
            await admin.post(
                "/api/v1/workspaces/globex/agents",
                json={"name": "Gus", "pricing_tier": "grok-realtime", "voice": "Rex"},
            )
        ).json()["id"]
        missing = await mint(stack, globex, gus, workspace="globex")
        assert missing.status_code == 409
        assert missing.json()["detail"] == (
            "xAI API key not configured for this workspace. Please add it in Settings > "
            "Workspace API Keys."
        )
        # Another engine is refused, never run somewhere else.
        premium = (
            await admin.post(
                "/api/v1/workspaces/acme/agents",
                json={"name": "Max", "pricing_tier": "premium", "voice": "cedar"},
            )
        ).json()["id"]
        other = await mint(stack, acme, premium)
        assert (other.status_code, other.json()["code"]) == (409, "engine_not_supported")
        # The kill switch, and the workspace's call cap.
        await admin.post("/api/v1/flags/grok-realtime-tier/kill", json={})
        assert (await mint(stack, acme)).json()["code"] == "tier_disabled"
        await admin.post("/api/v1/flags/grok-realtime-tier/resume")
        await admin.patch("/api/v1/workspaces/acme/settings", json={"max_concurrent_calls": 1})
        assert (await mint(stack, acme)).status_code == 201
        busy = await mint(stack, acme)
        assert (busy.status_code, busy.json()["code"]) == (429, "call_limit_reached")
    assert stack.xai.connections == []


async def test_test_calls_stay_out_of_the_rollouts_health_unless_the_admin_counts_them(
    browser_stack: Stack,
) -> None:
    stack = browser_stack
    call = (await mint(stack, await acme_token(stack))).json()
    browser = await open_call(call["url"], call["token"])
    await browser.read_until(lambda b: b.of("ready"))
    await browser.ws.close()
    await wait_for_report(stack)
    report = stack.telemetry.reports[-1].model_dump(mode="json")  # the worker's sink kept it
    async with httpx.AsyncClient(base_url=stack.control_plane) as http:
        posted = await http.post(
            "/api/v1/telemetry/calls", json=report, headers=auth(stack.service_token)
        )
        assert posted.status_code == 200, posted.text
        health = "/api/v1/rollouts/grok-realtime-tier/health"
        admin = auth(stack.admin_token)

        async def seen() -> tuple[int, dict[str, int]]:
            overall = (await http.get(health, headers=admin)).json()["overall"]
            return overall["calls"], overall["not_counted"]

        assert await seen() == (0, {})
        counted = await http.patch(
            "/api/v1/rollouts/grok-realtime-tier/guard",
            json={"include_test_calls": True},
            headers=admin,
        )
        assert counted.json()["include_test_calls"] is True
        # Counted now; hung up before the agent spoke, it is the caller's, shown beside the
        # tier's figures.
        assert await seen() == (0, {"caller": 1})
        calls = (await http.get("/api/v1/workspaces/acme/calls", headers=admin)).json()["calls"]
    assert [c["channel"] for c in calls if c["id"] == call["call_id"]] == ["browser"]
