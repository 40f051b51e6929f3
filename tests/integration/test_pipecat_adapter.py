"""The optional pipecat adapter, tested when `switchboard[pipecat]` is installed."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from switchboard_runtime.session import CallRefusedError
from tests.conftest import Tokens, auth, skip_or_fail

try:
    import pipecat.services.xai.realtime.events  # noqa: F401
except ImportError:
    skip_or_fail("switchboard[pipecat] not installed (make test installs the dev extra)")

XAI_KEY = "xai-" + "PipecatAdapterKey012345678" + "Pq9r"


def resolved(client: TestClient, tokens: Tokens, **agent: Any) -> dict[str, Any]:
    client.put(
        "/api/v1/cohorts/internal", json={"members": ["acme"]}, headers=auth(tokens.admin)
    ).raise_for_status()
    client.put(
        "/api/v1/workspaces/acme/settings/api-keys",
        json={"xai_api_key": XAI_KEY},
        headers=auth(tokens.acme),
    ).raise_for_status()
    body = {
        "pricing_tier": "grok-realtime",
        "voice": "shimmer",
        "instructions": "Be brief.",
    } | agent
    response = client.post(
        "/api/v1/workspaces/acme/session-config", json=body, headers=auth(tokens.service)
    )
    assert response.status_code == 200, response.text
    config: dict[str, Any] = response.json()
    return config


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_session_properties_from_a_resolved_config(client: TestClient, tokens: Tokens) -> None:
    from switchboard_runtime.pipecat_adapter import grok_llm_service, session_properties

    config = resolved(
        client,
        tokens,
        turn_detection_threshold=0.5,
        tools=[{"name": "lookup_order", "parameters": {"type": "object", "properties": {}}}],
        builtin_tools={"web_search": True, "x_search": {"allowed_x_handles": ["xai"]}},
    )
    properties = session_properties(config)
    assert properties.voice == "eve"  # shimmer → Eve, as pipecat spells it
    assert "Be brief." in properties.instructions
    assert (
        properties.turn_detection.threshold == 0.5
        and properties.turn_detection.silence_duration_ms == 600
    )
    assert (
        properties.audio.input.format.type == "audio/pcmu"
        and properties.audio.output.format.type == "audio/pcmu"
    )
    dumped = properties.model_dump(exclude_none=True)
    assert dumped["model"] == "grok-voice-latest"
    service = grok_llm_service(config)
    assert type(service).__name__ == "GrokRealtimeLLMService"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_other_engines_are_refused(client: TestClient, tokens: Tokens) -> None:
    from switchboard_runtime.pipecat_adapter import session_properties

    config = resolved(client, tokens, pricing_tier="premium", voice="alloy")
    with pytest.raises(CallRefusedError) as refused:
        session_properties(config)
    assert refused.value.code == "engine_mismatch"
