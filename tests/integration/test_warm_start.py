"""Warm start: the worker sets a call's xAI session up between the webhook and the media stream.

Against a real control plane, the call worker (one or two replicas) and the fake xAI: the stream
attaches to the ready session; a stream on another replica is set up cold there; a failed set-up
reaches the phone with its reason; an unclaimed session is closed and its call released; audio
the caller sends during set-up reaches xAI complete and in order; a token works once.
"""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from websockets.asyncio.client import connect

from control_plane.calls import service as calls_service
from switchboard_runtime import warm as warm_module
from switchboard_runtime.warm import WarmSessions
from tests.conftest import auth
from tests.integration.callstack import (
    CALLER_FRAMES,
    Phone,
    Stack,
    StackOptions,
    answer_telnyx,
    answer_twilio,
    build_stack,
    forged,
    poll,
    wait_for_report,
)


@pytest.fixture
def short_lived(tmp_path: Path) -> Iterator[Stack]:
    """Warm sessions nobody claims are closed after 0.5 s."""
    yield from build_stack(tmp_path, StackOptions(warm_session_unclaimed_seconds=0.5))


def warm(stack: Stack, app: Any = None) -> WarmSessions:
    sessions: WarmSessions = (app or stack.worker_app).state.warm
    return sessions


def calls(stack: Stack) -> dict[str, Any]:
    response = httpx.get(
        f"{stack.control_plane}/api/v1/workspaces/acme/calls", headers=auth(stack.admin_token)
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def metrics(worker: str) -> str:
    response = httpx.get(f"{worker}/metrics")
    response.raise_for_status()
    return response.text


async def open_stream(url: str, token: str, kind: str = "twilio") -> Phone:
    phone = Phone(kind, await connect(url))
    await phone.start({"stream_token": token} if kind == "twilio" else None)
    return phone


async def talk(phone: Phone, stack: Stack) -> None:
    await phone.speak(CALLER_FRAMES)
    await phone.collect(lambda p: len(p.media()) >= len(stack.xai.reply_audio))
    await phone.hang_up()


@pytest.mark.parametrize("kind", ["twilio", "telnyx"])
async def test_the_stream_attaches_to_a_session_that_is_already_ready(
    stack: Stack, kind: str
) -> None:
    answer = await (answer_twilio if kind == "twilio" else answer_telnyx)(stack)
    await poll(lambda: len(stack.xai.connections) == 1 and stack.xai.connections[0].sent)
    connection = stack.xai.connections[0]
    await poll(lambda: bool(connection.sent_of_type("session.updated")))
    assert connection.of_type("input_audio_buffer.append") == []  # nobody has spoken yet

    phone = await open_stream(answer.stream_url, answer.stream_token or "", kind)
    await talk(phone, stack)
    await wait_for_report(stack)
    await phone.ws.close()

    assert len(stack.xai.connections) == 1  # the warm session carried the call
    assert [e["audio"] for e in connection.of_type("input_audio_buffer.append")] == CALLER_FRAMES
    report = stack.telemetry.reports[-1]
    assert report.warm_start is True
    assert report.setup_wait_ms == 0  # ready before the stream started
    assert report.first_audio_relay_ms is not None and report.time_to_first_audio_ms is not None
    assert report.end_reason == "phone_stop"
    assert warm(stack).counts["attached"] == 1 and warm(stack).open == 0
    assert 'switchboard_worker_call_starts_total{path="warm"} 1' in metrics(stack.worker)


async def test_caller_audio_sent_during_set_up_reaches_xai_complete_and_in_order(
    stack: Stack,
) -> None:
    stack.xai.handshake_delay = 0.6  # xAI confirms the session late
    answer = await answer_twilio(stack)
    phone = await open_stream(answer.stream_url, answer.stream_token or "")
    frames = [f"{i:04d}".encode().hex() * 40 for i in range(30)]  # distinct, valid base64
    await phone.speak(frames)  # all of it before the session is ready
    assert not any(c.sent_of_type("session.updated") for c in stack.xai.connections)
    await poll(
        lambda: (
            bool(stack.xai.connections)
            and len(stack.xai.connections[0].of_type("input_audio_buffer.append")) >= 30
        )
    )
    await phone.collect(lambda p: len(p.media()) >= len(stack.xai.reply_audio))
    await phone.hang_up()
    await wait_for_report(stack)
    await phone.ws.close()

    received = stack.xai.connections[0].received
    kinds = [e["type"] for e in received]
    assert kinds.index("session.update") < kinds.index("input_audio_buffer.append")
    assert [e["audio"] for e in received if e["type"] == "input_audio_buffer.append"] == frames
    report = stack.telemetry.reports[-1]
    assert report.warm_start is True and report.setup_wait_ms is not None
    assert report.setup_wait_ms > 100  # the caller waited for the late session.updated


async def test_audio_beyond_the_hold_is_dropped_oldest_first_and_reported(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from switchboard_runtime import session as session_module

    monkeypatch.setattr(session_module, "HELD_AUDIO_FRAMES", 10)  # 0.2 s instead of 10 s
    stack.xai.handshake_delay = 1.5  # xAI confirms the session late
    answer = await answer_twilio(stack)
    phone = await open_stream(answer.stream_url, answer.stream_token or "")
    frames = [f"{i:04d}".encode().hex() * 40 for i in range(30)]
    await phone.speak(frames)  # 0.6 s of speech, all of it before the session is ready
    assert not any(c.sent_of_type("session.updated") for c in stack.xai.connections)
    await poll(
        lambda: (
            bool(stack.xai.connections)
            and len(stack.xai.connections[0].of_type("input_audio_buffer.append")) >= 10
        )
    )
    await phone.hang_up()
    await wait_for_report(stack)
    await phone.ws.close()
    heard = [e["audio"] for e in stack.xai.connections[0].of_type("input_audio_buffer.append")]
    assert heard[:10] == frames[-10:]  # the newest ten, in order
    assert stack.telemetry.reports[-1].held_audio_dropped == 20


async def test_without_holding_audio_during_set_up_the_caller_is_cut(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from switchboard_runtime import session as session_module

    async def dropping(self: Any, payload: str) -> None:  # the guard off: no hold
        if self._ws is not None and self._held_audio is None:
            await self._ws.send(session_module.protocol.append_audio(payload))

    monkeypatch.setattr(session_module.GrokRealtimeSession, "send_audio", dropping)
    stack.xai.handshake_delay = 0.6
    answer = await answer_twilio(stack)
    phone = await open_stream(answer.stream_url, answer.stream_token or "")
    await phone.speak(CALLER_FRAMES)
    await asyncio.sleep(1.0)
    await phone.hang_up()
    await phone.ws.close()
    assert len(stack.xai.connections[0].of_type("input_audio_buffer.append")) < len(CALLER_FRAMES)


async def test_a_stream_on_another_replica_is_set_up_there_and_the_warm_one_is_let_go(
    short_lived: Stack,
) -> None:
    stack = short_lived
    answer = await answer_twilio(stack)  # replica A answers and warms up
    await poll(lambda: len(stack.xai.connections) == 1)
    with stack.another_worker() as (other, other_app):
        url = answer.stream_url.replace(stack.media, other_app.state.media_plane.url)
        assert url != answer.stream_url
        phone = await open_stream(url, answer.stream_token or "")
        await talk(phone, stack)
        await wait_for_report(stack)
        await phone.ws.close()
        assert warm(stack, other_app).counts["attached"] == 0
        assert 'switchboard_worker_call_starts_total{path="cold"} 1' in metrics(other)

    report = stack.telemetry.reports[-1]
    assert report.warm_start is False and report.end_reason == "phone_stop"
    assert report.setup_wait_ms is not None and report.setup_wait_ms > 0
    first, second = stack.xai.connections
    await poll(lambda: warm(stack).counts["unclaimed"] == 1 and first.closed)
    assert first.of_type("input_audio_buffer.append") == []
    assert second.of_type("input_audio_buffer.append")
    # A's release found the call claimed by B and left it as B's report will end it.
    assert calls(stack)["calls"][0]["state"] == "active"


async def test_behind_a_load_balancer_the_stream_comes_back_to_the_warm_replica(
    stack: Stack,
) -> None:
    """Webhooks reach replica B through the shared name (A's URL here, which the signature
    covers); B names itself in the stream URL, so the stream lands where the session is warm."""
    own = "http://127.0.0.1:{media_port}"  # B's own media plane
    with stack.another_worker(worker_public_url=stack.worker, worker_stream_url=own) as (b, app):
        answer = await answer_twilio(stack, via=b)
        assert answer.status == 200, answer.text
        assert answer.stream_url.startswith(app.state.media_plane.url)
        phone = await open_stream(answer.stream_url, answer.stream_token or "")
        await talk(phone, stack)
        await wait_for_report(stack)
        await phone.ws.close()
        assert warm(stack, app).counts["attached"] == 1
    assert warm(stack).counts["started"] == 0
    assert stack.telemetry.reports[-1].warm_start is True


async def test_a_failed_set_up_reaches_the_phone_with_its_reason(stack: Stack) -> None:
    stack.xai.upgrade_failures = [403]  # xAI refuses the key at the upgrade
    answer = await answer_twilio(stack)
    await poll(lambda: warm(stack).counts["failed"] == 1)
    phone = await open_stream(answer.stream_url, answer.stream_token or "")
    code, reason = await phone.closed()
    await phone.ws.close()
    assert code == 4403 and reason is not None and reason.startswith("xai_key_refused")
    await wait_for_report(stack)
    report = stack.telemetry.reports[-1]
    assert (report.end_reason, report.completed, report.warm_start) == (
        "xai_key_refused",
        False,
        True,
    )
    assert stack.xai.connections == []


async def test_an_unclaimed_session_is_closed_and_its_call_released(short_lived: Stack) -> None:
    stack = short_lived
    answer = await answer_twilio(stack)
    await poll(lambda: len(stack.xai.connections) == 1)
    await poll(lambda: stack.xai.connections[0].closed and warm(stack).open == 0)
    await poll(lambda: calls(stack)["active"] == 0)
    call = calls(stack)["calls"][0]
    assert (call["state"], call["end_reason"]) == ("ended", "unclaimed")
    assert 'switchboard_worker_warm_sessions_total{outcome="unclaimed"} 1' in metrics(stack.worker)
    assert "switchboard_worker_warm_sessions_open 0" in metrics(stack.worker)
    # The stream that comes too late finds neither the session nor the call.
    phone = await open_stream(answer.stream_url, answer.stream_token or "")
    assert await phone.closed() == (4401, "unauthorized")
    await phone.ws.close()
    assert stack.telemetry.reports == []


async def test_without_the_expiry_an_unclaimed_session_holds_xai_and_the_slot(
    short_lived: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = short_lived
    monkeypatch.setattr(WarmSessions, "_expire", lambda self, call_id: None)
    await answer_twilio(stack)
    await poll(lambda: len(stack.xai.connections) == 1)
    await asyncio.sleep(1.0)
    assert not stack.xai.connections[0].closed and warm(stack).open == 1
    assert calls(stack)["active"] == 1


async def test_two_streams_presenting_one_token_the_second_is_refused(stack: Stack) -> None:
    answer = await answer_twilio(stack)
    first = await open_stream(answer.stream_url, answer.stream_token or "")
    await poll(lambda: calls(stack)["calls"][0]["state"] == "active")
    second = await open_stream(answer.stream_url, answer.stream_token or "")
    assert await second.closed() == (4401, "unauthorized")
    await second.ws.close()
    await talk(first, stack)  # the first call is unharmed
    await wait_for_report(stack)
    await first.ws.close()
    assert len(stack.xai.connections) == 1
    assert len(stack.telemetry.reports) == 1


async def test_if_tokens_were_reusable_a_second_stream_would_run_too(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calls_service, "claimable_states", lambda: ("issued", "active"))
    answer = await answer_twilio(stack)
    first = await open_stream(answer.stream_url, answer.stream_token or "")
    await poll(lambda: calls(stack)["calls"][0]["state"] == "active")
    second = await open_stream(answer.stream_url, answer.stream_token or "")
    await second.speak(CALLER_FRAMES)
    await poll(lambda: len(stack.xai.connections) == 2)
    for phone in (first, second):
        await phone.hang_up()
        await phone.ws.close()


async def test_a_token_the_control_plane_refuses_ends_a_warm_attach(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker attaches before the control plane has redeemed the token; if the control
    plane then refuses it (say the call was released meanwhile), the call ends at once."""
    answer = await answer_twilio(stack)
    await poll(lambda: len(stack.xai.connections) == 1)
    call_id = calls(stack)["calls"][0]["id"]
    async with httpx.AsyncClient() as http:
        released = await http.post(
            f"{stack.control_plane}/api/v1/calls/{call_id}/release",
            json={},
            headers=auth(stack.service_token),
        )
    assert released.status_code == 200
    phone = await open_stream(answer.stream_url, answer.stream_token or "")
    assert await phone.closed() == (4401, "unauthorized")
    await phone.ws.close()
    await poll(lambda: stack.xai.connections[0].closed)
    assert stack.telemetry.reports == []


async def forgery_then_the_real_stream(stack: Stack) -> tuple[int | None, str | None]:
    """A forged token naming a real, warm call (right call id, wrong key), then the real
    stream; returns how the forged stream was closed."""
    answer = await answer_twilio(stack)
    await poll(lambda: bool(stack.xai.connections) and warm(stack).open == 1)
    await poll(lambda: bool(stack.xai.connections[0].sent_of_type("session.updated")))
    call_id = calls(stack)["calls"][0]["id"]
    forgery = await open_stream(answer.stream_url, forged(stack, call_id, key=b"k" * 32))
    closed = await forgery.closed()
    await forgery.ws.close()
    phone = await open_stream(answer.stream_url, answer.stream_token or "")
    await talk(phone, stack)
    await wait_for_report(stack)
    await phone.ws.close()
    return closed


async def test_a_forged_token_naming_a_warm_call_leaves_its_session_to_the_real_stream(
    stack: Stack,
) -> None:
    assert await forgery_then_the_real_stream(stack) == (4401, "unauthorized")
    assert stack.telemetry.reports[-1].warm_start is True  # the session waited for its caller
    assert len(stack.xai.connections) == 1
    assert warm(stack).counts["attached"] == 1


async def test_without_the_whole_token_check_a_forgery_takes_the_warm_session(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warm_module, "same_token", lambda presented, issued: True)
    # The control plane still refuses the forged token (the worker redeems what the phone
    # presented), but only after the forger's stream took the call's ready xAI session: the
    # real caller has to start cold.
    assert await forgery_then_the_real_stream(stack) == (4401, "unauthorized")
    assert stack.telemetry.reports[-1].warm_start is False
    assert len(stack.xai.connections) == 2
    assert warm(stack).counts["attached"] == 1


async def test_worker_metrics_report_its_event_loop_lag(stack: Stack) -> None:
    name = "switchboard_worker_event_loop_lag_seconds"

    def histograms() -> dict[str, list[Sample]]:
        text = metrics(stack.worker)
        families = text_string_to_metric_families(text)
        return {f.name: f.samples for f in families if f.type == "histogram"}

    def count() -> float:
        return next(s.value for s in histograms()[name] if s.name == f"{name}_count")

    await poll(lambda: count() >= 3)  # sampled every 100 ms (the default) from start-up
    found = histograms()
    buckets = [s.value for s in found[name] if s.name == f"{name}_bucket"]
    assert buckets == sorted(buckets) and buckets[-1] >= 3  # cumulative, +Inf = every sample
    # Beside it, the collector's pauses, which stall every call at once.
    pauses = "switchboard_worker_gc_pause_seconds"
    assert {s.labels["generation"] for s in found[pauses] if s.name == f"{pauses}_count"} == {
        "0",
        "1",
        "2",
    }


async def test_the_loop_lag_sampling_interval_is_a_setting(stack: Stack) -> None:
    name = "switchboard_worker_event_loop_lag_seconds"

    def lag_family(worker: str) -> Any:
        families = text_string_to_metric_families(metrics(worker))
        return next(family for family in families if family.name == name)

    assert "sampled every 100 ms" in lag_family(stack.worker).documentation
    with stack.another_worker(worker_loop_lag_interval_seconds=0.005) as (replica, app):
        assert app.state.loop_lag.interval == 0.005
        assert "sampled every 5 ms" in lag_family(replica).documentation

        def count() -> float:
            return next(s.value for s in lag_family(replica).samples if s.name == f"{name}_count")

        await poll(lambda: count() >= 20)
