"""The runtime against an xAI that behaves like a real one: non-fatal errors, cancel races,
audio in flight after a cancel, server-side cancels, streamed and parallel tool calls, connect
failures, expiring secrets, its session limit. Each behaviour beside a twin that removes it
(monkeypatch) and shows the test failing, where the behaviour is a rule the runtime keeps."""

import asyncio
import time
from typing import Any

import pytest

from switchboard_runtime import session as runtime_session
from switchboard_runtime.session import (
    AudioOut,
    CallEnded,
    CallRefusedError,
    ClearAudio,
    SessionConfigError,
)
from switchboard_runtime.tools import ToolRegistry
from tests.fakes.fake_xai import ToolTurn
from tests.integration.callstack import (
    CALLER_FRAMES,
    Stack,
    phone_call,
    poll,
    session_for,
    wait_for_report,
)

NON_FATAL = {"type": "server_error", "code": "internal_error", "message": "The server had an error"}


async def speak(call: Any, frames: list[str] = CALLER_FRAMES) -> None:
    for payload in frames:
        await call.send_audio(payload)


async def collect(call: Any, until: Any, seconds: float = 5.0) -> list[Any]:
    seen: list[Any] = []
    async with asyncio.timeout(seconds):
        async for event in call.events():
            seen.append(event)
            if until(seen):
                break
    return seen


def audio(seen: list[Any]) -> list[str]:
    return [e.payload for e in seen if isinstance(e, AudioOut)]


# --- errors -----------------------------------------------------------------------------------


async def test_a_non_fatal_error_does_not_end_the_call(stack: Stack) -> None:
    stack.xai.errors_on_utterance = {0: NON_FATAL}
    async with session_for(stack) as call:
        await speak(call)
        await speak(call)  # a second turn, answered normally
        seen = await collect(call, lambda s: len(audio(s)) >= len(stack.xai.reply_audio))
        assert call.ended is None
    assert not any(isinstance(e, CallEnded) for e in seen)
    report = stack.telemetry.reports[-1]
    assert (report.end_reason, report.completed, report.nonfatal_errors) == ("closed", True, 1)


async def test_were_every_error_fatal_that_call_would_have_ended(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(runtime_session.FATAL_ERRORS, "internal_error", "twin")
    stack.xai.errors_on_utterance = {0: NON_FATAL}
    async with session_for(stack) as call:
        await speak(call)
        seen = await collect(call, lambda s: isinstance(s[-1], CallEnded))
    assert seen[-1].reason == "xai_error"


@pytest.mark.parametrize(
    "error",
    [
        {"type": "authentication_error", "code": "invalid_api_key", "message": "revoked"},
        {"type": "invalid_request_error", "code": "session_expired", "message": "over"},
    ],
)
async def test_fatal_errors_end_the_call_with_a_reason(stack: Stack, error: dict[str, str]) -> None:
    stack.xai.errors_on_utterance = {0: error}
    async with session_for(stack) as call:
        await speak(call)
        seen = await collect(call, lambda s: isinstance(s[-1], CallEnded))
    assert (seen[-1].reason, seen[-1].detail.split(":")[0]) == ("xai_error", error["code"])
    assert stack.telemetry.reports[-1].completed is False


async def test_an_unknown_error_that_closes_the_socket_ends_the_call(stack: Stack) -> None:
    stack.xai.errors_on_utterance = {0: {"type": "mystery", "code": "mystery", "message": "?"}}
    stack.xai.close_after_error = 1011
    async with session_for(stack) as call:
        await speak(call)
        seen = await collect(call, lambda s: isinstance(s[-1], CallEnded))
    assert seen[-1].reason == "xai_disconnected"
    report = stack.telemetry.reports[-1]
    assert (report.nonfatal_errors, report.websocket_disconnects) == (1, 1)


async def test_unknown_events_are_skipped_and_counted(stack: Stack) -> None:
    async with session_for(stack) as call:
        await speak(call)
        await collect(call, lambda s: len(audio(s)) >= len(stack.xai.reply_audio))
    assert stack.telemetry.reports[-1].unknown_events == 1  # the fake's x.future_event


async def test_session_created_first_and_pings_mid_call(stack: Stack) -> None:
    stack.xai.session_created_first, stack.xai.ping_interval = True, 0.02
    stack.xai.delta_interval = 0.02
    async with session_for(stack) as call:
        await speak(call)
        await collect(call, lambda s: len(audio(s)) >= len(stack.xai.reply_audio))
    sent = [e["type"] for e in stack.xai.connections[-1].sent]
    assert sent[:2] == ["session.created", "conversation.created"]
    assert sent.count("ping") >= 3
    assert stack.telemetry.reports[-1].completed is True


async def test_a_malformed_session_update_is_refused_by_xai(stack: Stack) -> None:
    async with session_for(stack) as probe:  # a valid config to spoil
        assert probe.config is not None
        config = probe.config.model_copy(deep=True)
    config.session.voice = "Nobody"
    with pytest.raises(CallRefusedError) as refused:
        async with session_for(stack, config=config):
            pass
    assert refused.value.code == "xai_error"
    assert "unknown voice" in refused.value.message


# --- cancel and barge-in ---------------------------------------------------------------------


async def test_audio_of_a_cancelled_response_never_reaches_the_phone(stack: Stack) -> None:
    stack.xai.delta_interval = 0.03
    stack.xai.reply_audio = [bytes([i]) * 160 for i in range(1, 41)]
    stack.xai.audio_after_cancel = 3  # still on the wire when the cancel lands
    async for phone in phone_call(stack, "twilio"):
        await phone.speak(CALLER_FRAMES)
        await phone.collect(lambda p: len(p.media()) >= 3)
        await phone.speak(CALLER_FRAMES[:1])  # the caller talks over the agent
        await phone.collect(lambda p: bool(p.events("clear")))
        before_clear = len(phone.media())
        with pytest.raises(TimeoutError):  # read everything the worker sends for a while
            await phone.collect(lambda p: False, seconds=0.5)
        await phone.hang_up()
    connection = stack.xai.connections[-1]
    cancelled = connection.sent_of_type("response.done")[-1]["response"]
    assert cancelled["status"] == "cancelled"
    late = [
        e
        for e in connection.sent_of_type("response.output_audio.delta")
        if e["response_id"] == cancelled["id"]
    ]
    assert len(late) > before_clear  # xAI sent more of that response than the phone played...
    played_after_clear = phone.received[
        phone.received.index({"event": "clear", "streamSid": "MZ123"}) + 1 :
    ]
    assert [f for f in played_after_clear if f.get("event") == "media"] == []  # ...none after
    assert phone.events("clear") == [{"event": "clear", "streamSid": "MZ123"}]  # once
    assert len(connection.of_type("response.cancel")) == 1


async def test_a_cancel_that_races_the_end_of_the_response_is_no_error(stack: Stack) -> None:
    async with session_for(stack) as call:
        await speak(call)
        await collect(call, lambda s: len(audio(s)) >= len(stack.xai.reply_audio))
        await asyncio.sleep(0.05)  # response.done has arrived: nothing is active
        call._active_response = "resp_already_done"  # the race: we still think it is
        await speak(call, CALLER_FRAMES[:1])
        await poll(lambda: bool(stack.xai.connections[-1].sent_of_type("error")))
        await asyncio.sleep(0.05)
        assert call.ended is None
    error = stack.xai.connections[-1].sent_of_type("error")[0]["error"]
    assert error["code"] == "response_cancel_not_active"
    assert stack.telemetry.reports[-1].nonfatal_errors == 0


async def test_a_server_side_cancel_clears_the_phone_once(stack: Stack) -> None:
    stack.xai.server_cancel_on_speech = True
    stack.xai.audio_after_cancel = 3
    stack.xai.delta_interval = 0.03
    stack.xai.reply_audio = [bytes([i]) * 160 for i in range(1, 41)]
    async with session_for(stack) as call:
        await speak(call)
        seen = await collect(call, lambda s: len(audio(s)) >= 3)
        await speak(call, CALLER_FRAMES[:1])
        seen += await collect(call, lambda s: any(isinstance(e, ClearAudio) for e in s))
        await asyncio.sleep(0.3)
        while not call._outbound.empty():
            seen.append(call._outbound.get_nowait())
    assert sum(isinstance(e, ClearAudio) for e in seen) == 1
    after_clear = seen[[isinstance(e, ClearAudio) for e in seen].index(True) + 1 :]
    assert audio(after_clear) == []


# --- tools -------------------------------------------------------------------------------------


def tools_registry(
    log: list[tuple[str, Any]], *, gate: asyncio.Event | None = None
) -> ToolRegistry:
    registry = ToolRegistry(timeout_seconds=2)

    @registry.tool("lookup_order")
    async def lookup_order(arguments: dict[str, Any]) -> dict[str, Any]:
        log.append(("lookup_order", arguments))
        if gate is not None:
            gate.set()
        return {"status": "shipped", "id": arguments.get("id")}

    @registry.tool("check_stock")
    async def check_stock(arguments: dict[str, Any]) -> dict[str, Any]:
        log.append(("check_stock", arguments))
        if gate is not None:
            await gate.wait()  # finishes only once lookup_order has started: they overlap
        return {"in_stock": True}

    return registry


async def test_streamed_arguments_are_assembled(stack: Stack) -> None:
    log: list[tuple[str, Any]] = []
    stack.xai.tool_turns = {
        0: ToolTurn("lookup_order", {"id": "A-1042", "rush": True}, "streamed_bare_done")
    }
    async with session_for(stack, tools=tools_registry(log)) as call:
        await speak(call)
        await poll(lambda: bool(stack.xai.connections[-1].of_type("response.create")))
    assert log == [("lookup_order", {"id": "A-1042", "rush": True})]
    connection = stack.xai.connections[-1]
    (delta, _) = connection.sent_of_type("response.function_call_arguments.delta")
    done = connection.sent_of_type("response.function_call_arguments.done")[0]
    assert "arguments" not in done  # only the deltas carried them
    outputs = connection.of_type("conversation.item.create")
    assert [o["item"]["call_id"] for o in outputs] == [delta["call_id"]]


async def test_two_tools_in_one_response_run_together_and_the_model_goes_on_once(
    stack: Stack,
) -> None:
    log: list[tuple[str, Any]] = []
    stack.xai.tool_turns = {
        0: [ToolTurn("check_stock", {"sku": "X"}), ToolTurn("lookup_order", {"id": "A-1"})]
    }
    async with session_for(stack, tools=tools_registry(log, gate=asyncio.Event())) as call:
        await speak(call)
        await poll(lambda: bool(stack.xai.connections[-1].of_type("response.create")))
        await asyncio.sleep(0.1)
    connection = stack.xai.connections[-1]
    announced = {
        e["item"]["call_id"]: e["item"]["name"]
        for e in connection.sent_of_type("response.output_item.added")
        if e["item"].get("type") == "function_call"
    }
    answered = [e["item"]["call_id"] for e in connection.of_type("conversation.item.create")]
    assert sorted(answered) == sorted(announced)  # each call answered once, with its own id
    assert len(connection.of_type("response.create")) == 1
    kinds = [e["type"] for e in connection.received]
    assert kinds.index("response.create") > max(
        i for i, kind in enumerate(kinds) if kind == "conversation.item.create"
    )
    assert {name for name, _ in log} == {"check_stock", "lookup_order"}
    report = stack.telemetry.reports[-1]
    assert (report.tool_calls_ok, report.tool_calls_failed) == (2, 0)


async def test_a_tool_that_outlives_the_call_is_cancelled(stack: Stack) -> None:
    cancelled = asyncio.Event()
    registry = ToolRegistry(timeout_seconds=60)

    @registry.tool("lookup_order")
    async def slow(arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.set()
        return {}

    stack.xai.tool_turns = {0: ToolTurn("lookup_order", {"id": "A-1"})}
    async with session_for(stack, tools=registry) as call:
        await speak(call)
        await poll(lambda: bool(stack.xai.connections[-1].sent_of_type("response.done")))
    assert cancelled.is_set()
    assert stack.xai.connections[-1].of_type("response.create") == []


# --- connecting -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
async def test_a_busy_xai_is_retried_within_the_setup_deadline(stack: Stack, status: int) -> None:
    stack.xai.upgrade_failures = [status, status]
    async with session_for(stack) as call:
        assert call.ready_at is not None
    assert stack.xai.upgrade_attempts == 3
    assert stack.telemetry.reports[-1].connect_retries == 2


@pytest.mark.parametrize(
    ("status", "reason"), [(429, "xai_rate_limited"), (503, "xai_unavailable")]
)
async def test_a_lasting_failure_ends_with_its_reason_never_another_provider(
    stack: Stack, status: int, reason: str
) -> None:
    stack.xai.upgrade_failures = [status] * 20
    started = time.monotonic()
    with pytest.raises(CallRefusedError) as refused:
        async with session_for(stack, setup_deadline=1.5):
            pass
    assert refused.value.code == reason
    assert time.monotonic() - started < 5
    assert 1 < stack.xai.upgrade_attempts <= 4
    report = stack.telemetry.reports[-1]
    assert (report.end_reason, report.completed) == (reason, False)


async def test_without_retries_one_busy_answer_ends_the_call(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_retry(*args: Any, **kwargs: Any) -> bool:
        return False

    monkeypatch.setattr(runtime_session, "_backoff", no_retry)
    stack.xai.upgrade_failures = [429]
    with pytest.raises(CallRefusedError) as refused:
        async with session_for(stack):
            pass
    assert refused.value.code == "xai_rate_limited"


async def test_client_secret_rate_limits_are_retried(stack: Stack) -> None:
    stack.xai.secret_failures = [429]
    async with session_for(stack, credentials="ephemeral") as call:
        assert call.ready_at is not None
    assert stack.xai.connections[-1].authorization.startswith("xai-eph-")
    assert [r for r in stack.xai.requests if r[1] == "/v1/realtime/client_secrets"] == [
        ("POST", "/v1/realtime/client_secrets")
    ] * 2


async def test_client_secrets_refused_for_good_end_the_call(stack: Stack) -> None:
    stack.xai.secret_failures = [503] * 20
    with pytest.raises(SessionConfigError) as refused:
        async with session_for(stack, credentials="ephemeral", setup_deadline=1.0):
            pass
    assert refused.value.code == "xai_unavailable"
    assert stack.xai.connections == []
    assert stack.telemetry.reports[-1].end_reason == "xai_unavailable"


async def test_a_secret_near_expiry_is_minted_again_before_use(stack: Stack) -> None:
    stack.xai.secret_ttl_seconds = 10  # the control plane caches it; it is nearly spent
    async with session_for(stack, credentials="ephemeral") as first:
        assert first.config is not None and first.config.credentials is not None
        stale = first.config
    assert (stale.credentials.expires_at or 0) - time.time() < 30
    stack.xai.secret_ttl_seconds = None
    async with session_for(stack, credentials="ephemeral", config=stale) as call:
        used = stack.xai.connections[-1].authorization
        assert used != stale.credentials.value
        assert call.config is not None and call.config.credentials is not None
        assert call.config.credentials.value == used


async def test_xai_closing_at_its_session_limit_tells_the_phone(stack: Stack) -> None:
    stack.xai.session_limit_seconds = 0.5
    async for phone in phone_call(stack, "twilio"):
        assert await phone.closed() == (1000, "xai_session_limit")
    await wait_for_report(stack)
    report = stack.telemetry.reports[-1]
    assert (report.end_reason, report.completed) == ("xai_session_limit", True)
