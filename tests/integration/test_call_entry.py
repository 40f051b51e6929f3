"""Call entry, tried as an attacker would: only calls the control plane issued, on signed
webhooks, with an unused stream token presented at `start`, ever reach xAI.

Every refused case asserts that the fake xAI heard no caller (the only sessions it sees belong to
calls issued on signed webhooks: warm start), that no call was counted and that the phone learns
nothing but `unauthorized`. Every guard also has a twin that switches the guard
off (monkeypatch) and shows the same attack getting through, so these tests can fail.
"""

import asyncio
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from control_plane.calls import service as calls_service
from control_plane.calls import tokens, webhooks
from switchboard_runtime.client import ClaimedCall, ControlPlaneClient
from switchboard_runtime.worker import calls as worker_calls
from tests.conftest import auth
from tests.integration.callstack import (
    CALLER_FRAMES,
    Phone,
    Stack,
    answer_telnyx,
    answer_twilio,
    forged,
    phone_call,
    poll,
    wait_for_report,
)

UNAUTHORIZED = (4401, "unauthorized")


def calls_of(stack: Stack, workspace: str = "acme") -> dict[str, Any]:
    response = httpx.get(
        f"{stack.control_plane}/api/v1/workspaces/{workspace}/calls",
        headers=auth(stack.admin_token),
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def assert_nothing_reached_xai(stack: Stack) -> None:
    """No caller was heard. Warm start may have opened a session for a call issued on a signed
    webhook (never for anything else): it carries no audio."""
    assert [c for c in stack.xai.connections if c.of_type("input_audio_buffer.append")] == []
    assert len(stack.xai.connections) <= len(calls_of(stack)["calls"])
    assert stack.telemetry.reports == []
    assert [c for c in calls_of(stack)["calls"] if c["state"] == "active"] == []


async def stream(stack: Stack, path: str, parameters: dict[str, str] | None) -> Phone:
    """Open a media stream on the worker and send `start` with these custom parameters."""
    websocket = await connect(stack.ws(path))
    phone = Phone("twilio", websocket)
    await phone.start(parameters)
    return phone


async def refused_stream(stack: Stack, parameters: dict[str, str] | None, path: str = "") -> None:
    phone = await stream(stack, path or f"/ws/twilio/{stack.agent_id}", parameters)
    assert await phone.closed() == UNAUTHORIZED
    await phone.ws.close()


async def reaches_xai(stack: Stack, parameters: dict[str, str] | None, path: str = "") -> None:
    """The attack got through: the stream is bridged to xAI and the caller is heard."""
    phone = await stream(stack, path or f"/ws/twilio/{stack.agent_id}", parameters)
    await phone.speak(CALLER_FRAMES)
    await phone.collect(lambda p: len(p.media()) >= len(stack.xai.reply_audio))
    assert stack.xai.connections
    await phone.hang_up()
    await phone.ws.close()


async def another_agent(stack: Stack) -> str:
    async with httpx.AsyncClient(base_url=stack.control_plane) as http:
        response = await http.post(
            "/api/v1/workspaces/acme/agents",
            json={"name": "Bea", "pricing_tier": "grok-realtime", "voice": "Eve"},
            headers=auth(stack.admin_token),
        )
    return str(response.json()["id"])


# --- the signed flow ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["twilio", "telnyx"])
async def test_a_signed_call_runs_end_to_end_on_an_issued_call(stack: Stack, kind: str) -> None:
    async for phone in phone_call(stack, kind):
        await phone.speak(CALLER_FRAMES)
        await phone.collect(lambda p: len(p.media()) >= len(stack.xai.reply_audio))
        active = calls_of(stack)
        assert active["active"] == 1
        (call,) = active["calls"]
        assert (call["state"], call["channel"], call["tier"]) == ("active", kind, "grok-realtime")
        assert call["provider_call_id"].startswith("CA" if kind == "twilio" else "v3:")
        await phone.hang_up()
    await wait_for_report(stack)
    assert stack.telemetry.reports[-1].call_id == call["id"]  # the server's id, not the phone's
    assert len(stack.xai.connections) == 1


# --- webhooks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attack",
    [
        {"signature": ""},
        {"signature": "bm90IGEgc2lnbmF0dXJl"},
        {"auth_token": "0" * 32},
        {"params": {"CallSid": "CA999", "From": "+15550100"}},  # not what was signed
    ],
    ids=["missing", "garbage", "wrong-auth-token", "tampered-params"],
)
async def test_twiml_with_a_bad_signature_is_refused(stack: Stack, attack: dict[str, Any]) -> None:
    if "params" in attack:  # sign the real parameters, send others
        from twilio.request_validator import RequestValidator

        from tests.integration.callstack import twilio_params, webhook_url

        url = webhook_url(stack, "twiml", None, "acme")
        attack = {
            "params": attack["params"],
            "signature": RequestValidator(stack.twilio_auth_token).compute_signature(
                url, twilio_params()
            ),
        }
    answer = await answer_twilio(stack, **attack)
    assert (answer.status, answer.text) == (403, "forbidden")
    assert calls_of(stack)["calls"] == []
    assert_nothing_reached_xai(stack)


async def test_twiml_signature_check_switched_off_lets_a_forger_in(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "verify_twilio", lambda *args: None)
    answer = await answer_twilio(stack, signature="bm90IGEgc2lnbmF0dXJl")
    assert answer.status == 200 and answer.stream_token
    await reaches_xai(stack, {"stream_token": answer.stream_token})


@pytest.mark.parametrize(
    "attack",
    [
        {"signature": ""},
        {"signature": "bm90IGEgc2lnbmF0dXJl"},
        {"tamper": True},
        {"timestamp": int(time.time()) - 400},
    ],
    ids=["missing", "garbage", "tampered-body", "stale-timestamp"],
)
async def test_texml_with_a_bad_signature_is_refused(stack: Stack, attack: dict[str, Any]) -> None:
    answer = await answer_telnyx(stack, **attack)
    assert (answer.status, answer.text) == (403, "forbidden")
    assert calls_of(stack)["calls"] == []
    assert_nothing_reached_xai(stack)


async def test_texml_signed_by_another_key_is_refused(stack: Stack) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    answer = await answer_telnyx(stack, key=Ed25519PrivateKey.generate())
    assert answer.status == 403
    assert calls_of(stack)["calls"] == []


@pytest.mark.parametrize("guard", ["signature", "timestamp"])
async def test_texml_guards_switched_off_let_the_attack_in(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, guard: str
) -> None:
    if guard == "signature":
        monkeypatch.setattr(webhooks, "verify_telnyx", lambda *args: None)
        answer = await answer_telnyx(stack, signature="bm90IGEgc2lnbmF0dXJl")
    else:
        monkeypatch.setattr(webhooks, "TELNYX_MAX_AGE_SECONDS", 10**9)
        answer = await answer_telnyx(stack, timestamp=int(time.time()) - 400)
    assert answer.status == 200 and answer.stream_token
    assert calls_of(stack)["calls"][0]["state"] == "issued"


async def test_a_workspace_without_a_webhook_secret_takes_no_calls(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.control_plane) as http:
        removed = await http.delete(
            "/api/v1/workspaces/acme/settings/api-keys/twilio", headers=auth(stack.admin_token)
        )
    assert removed.status_code == 204
    answer = await answer_twilio(stack)
    assert answer.status == 403
    assert calls_of(stack)["calls"] == []


async def test_a_refused_call_hears_a_polite_hang_up_not_a_socket_error(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.control_plane) as http:
        gus = (
            await http.post(
                "/api/v1/workspaces/globex/agents",  # globex has no xAI key
                json={"name": "Gus", "pricing_tier": "grok-realtime", "voice": "Rex"},
                headers=auth(stack.admin_token),
            )
        ).json()
    for answer in (
        await answer_twilio(stack, gus["id"], "globex"),
        await answer_telnyx(stack, gus["id"], "globex"),
    ):
        assert answer.status == 200
        assert "<Say>" in answer.text and "<Hangup/>" in answer.text
        assert "<Stream" not in answer.text
    assert calls_of(stack, "globex")["calls"] == []
    assert stack.xai.connections == []


# --- stream tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws/twilio/agt_x/more", "/ws/sip/agt_x", "/ws/twilio/"])
async def test_only_the_media_stream_paths_open_a_stream(stack: Stack, path: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(stack.ws(path))
    assert refused.value.response.status_code == 403
    assert_nothing_reached_xai(stack)


async def test_a_stream_without_a_token_is_refused(stack: Stack) -> None:
    await refused_stream(stack, None)
    await refused_stream(stack, {"workspace_id": "acme"})
    assert_nothing_reached_xai(stack)


async def test_without_the_token_guard_an_anonymous_stream_runs_on_a_workspace_key(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def trusting(
        control_plane: ControlPlaneClient, agent_id: str, token: str | None, *args: object
    ) -> ClaimedCall:
        # The worker as it was: the caller names the workspace and a call is made for it.
        return await control_plane.start_call("acme", agent_id)

    monkeypatch.setattr(worker_calls, "authorize_stream", trusting)
    await reaches_xai(stack, {"workspace_id": "acme"})


async def test_a_forged_token_is_refused(stack: Stack) -> None:
    issued = await answer_twilio(stack)
    call_id = calls_of(stack)["calls"][0]["id"]
    await refused_stream(stack, {"stream_token": "st1.e30.AAAA"})
    await refused_stream(stack, {"stream_token": forged(stack, call_id, key=b"k" * 32)})
    assert_nothing_reached_xai(stack)
    # The real token still works afterwards: the forgeries did not burn the call.
    await reaches_xai(stack, {"stream_token": issued.stream_token or ""})


async def test_without_the_signature_check_a_forged_token_gets_in(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await answer_twilio(stack)
    call_id = calls_of(stack)["calls"][0]["id"]
    monkeypatch.setattr(tokens, "signature_ok", lambda *args: True)
    await reaches_xai(stack, {"stream_token": forged(stack, call_id, key=b"k" * 32)})


async def test_an_expired_token_is_refused_and_would_pass_without_the_expiry_check(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await answer_twilio(stack)
    call_id = calls_of(stack)["calls"][0]["id"]
    expired = forged(stack, call_id, expires_in=-1)
    await refused_stream(stack, {"stream_token": expired})
    assert_nothing_reached_xai(stack)
    monkeypatch.setattr(tokens, "not_expired", lambda *args: True)
    await reaches_xai(stack, {"stream_token": expired})


async def test_a_replayed_token_is_refused_and_would_pass_if_tokens_were_reusable(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = await answer_twilio(stack)
    token = answer.stream_token or ""
    await reaches_xai(stack, {"stream_token": token})
    assert len(stack.xai.connections) == 1
    await refused_stream(stack, {"stream_token": token})
    assert len(stack.xai.connections) == 1
    monkeypatch.setattr(calls_service, "claimable_states", lambda: ("issued", "active"))
    await reaches_xai(stack, {"stream_token": token})
    assert len(stack.xai.connections) == 2


async def test_a_token_for_another_agent_is_refused(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = await another_agent(stack)
    answer = await answer_twilio(stack, other)
    token = answer.stream_token or ""
    await refused_stream(stack, {"stream_token": token})  # presented on Ava's stream
    assert_nothing_reached_xai(stack)
    monkeypatch.setattr(calls_service, "token_fits", lambda *args: True)
    await reaches_xai(stack, {"stream_token": token})


async def test_the_start_frame_cannot_choose_the_workspace(stack: Stack) -> None:
    injected = "../../../api/v1/tokens?x="
    await refused_stream(stack, {"workspace_id": injected})
    assert_nothing_reached_xai(stack)
    # With a valid token, the call runs where the token says, whatever the frame claims.
    answer = await answer_twilio(stack)
    await reaches_xai(stack, {"stream_token": answer.stream_token or "", "workspace_id": "globex"})
    await wait_for_report(stack)
    assert stack.telemetry.reports[-1].workspace_id == "acme"
    assert calls_of(stack, "globex")["calls"] == []


async def test_a_stream_that_never_starts_is_closed(stack: Stack) -> None:
    async with connect(stack.ws(f"/ws/twilio/{stack.agent_id}")) as websocket:
        phone = Phone("twilio", websocket)
        await phone.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        started = time.monotonic()
        assert await phone.closed(seconds=5) == UNAUTHORIZED
        assert time.monotonic() - started < 3  # the stack's timeout is 1 s
    assert_nothing_reached_xai(stack)


async def test_without_the_start_timeout_a_silent_stream_stays_open(stack: Stack) -> None:
    stack.worker_app.state.stream_start_timeout_seconds = 30
    async with connect(stack.ws(f"/ws/twilio/{stack.agent_id}")) as websocket:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2):
                await websocket.recv()
        assert websocket.close_code is None


# --- the call cap ---------------------------------------------------------------------------------


async def set_cap(stack: Stack, cap: int) -> None:
    async with httpx.AsyncClient(base_url=stack.control_plane) as http:
        response = await http.patch(
            "/api/v1/workspaces/acme/settings",
            json={"max_concurrent_calls": cap},
            headers=auth(stack.admin_token),
        )
    response.raise_for_status()


async def test_31_calls_on_a_cap_of_30_connect_30(stack: Stack) -> None:
    await set_cap(stack, 30)
    answers = await asyncio.gather(*(answer_twilio(stack) for _ in range(31)))
    streams = [a for a in answers if a.stream_token]
    busy = [a for a in answers if '<Reject reason="busy"/>' in a.text]
    assert (len(streams), len(busy)) == (30, 1)
    phones = [
        await stream(stack, f"/ws/twilio/{stack.agent_id}", {"stream_token": a.stream_token or ""})
        for a in streams
    ]
    await poll(lambda: len(stack.xai.connections) >= 30, seconds=15)
    assert calls_of(stack)["active"] == 30
    for phone in phones:
        await phone.hang_up()
        await phone.ws.close()
    await wait_for_report(stack, 30)
    assert len(stack.xai.connections) == 30


async def test_without_the_cap_the_31st_call_is_issued(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await set_cap(stack, 30)
    monkeypatch.setattr(calls_service, "may_start_another", lambda *args: True)
    answers = await asyncio.gather(*(answer_twilio(stack) for _ in range(31)))
    assert len([a for a in answers if a.stream_token]) == 31


async def test_a_burst_of_call_starts_wider_than_the_thread_pool_is_answered(stack: Stack) -> None:
    """120 call starts at once (the server's thread pool has 40 threads): writers queue without
    holding a thread, so the one holding the SQLite write gate always gets one to finish."""
    await set_cap(stack, 1000)
    async with httpx.AsyncClient(
        base_url=stack.control_plane,
        headers=auth(stack.service_token),
        timeout=20,
        limits=httpx.Limits(max_connections=200),
    ) as http:
        answers = await asyncio.gather(
            *(
                http.post(f"/api/v1/workspaces/acme/agents/{stack.agent_id}/calls", json={})
                for _ in range(120)
            )
        )
    assert [a.status_code for a in answers] == [201] * 120
    assert calls_of(stack)["active"] == 120
