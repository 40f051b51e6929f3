"""For call backends already on pipecat: a resolved session config → pipecat's Grok service.

Needs the optional extra `pip install 'switchboard-runtime[pipecat]'`. The config is resolved by
Switchboard (voice mapped, tools converted, turn detection, μ-law audio, credentials); this only
translates it into pipecat's types, so pipecat backends get the same answer the built-in
GrokRealtimeSession does — and the same refusal, never another engine.
"""

from typing import Any

from switchboard_runtime.contract import ResolvedSessionConfig
from switchboard_runtime.session import GROK_ENGINE, CallRefusedError


def _plain(config: ResolvedSessionConfig | dict[str, Any]) -> dict[str, Any]:
    return config.model_dump(mode="json") if isinstance(config, ResolvedSessionConfig) else config


def session_properties(config: ResolvedSessionConfig | dict[str, Any]) -> Any:
    """pipecat's `SessionProperties` for a resolved grok-realtime config."""
    from pipecat.services.xai.realtime import events

    config = _plain(config)
    if config.get("engine") != GROK_ENGINE:
        raise CallRefusedError(
            "engine_mismatch", f"This agent's tier runs on {config.get('engine')}; no fallback."
        )
    session = config["session"]

    def audio_format(spec: dict[str, Any]) -> Any:
        kind = spec["format"]["type"]
        if kind == "audio/pcmu":
            return events.PCMUAudioFormat()
        if kind == "audio/pcma":
            return events.PCMAAudioFormat()
        return events.PCMAudioFormat(rate=spec["format"].get("rate") or 24000)

    tools: list[Any] = []
    for tool in session["tools"]:
        if tool["type"] == "function":
            tools.append(
                events.FunctionTool(
                    name=tool["name"],
                    description=tool.get("description", ""),
                    parameters=tool["parameters"],
                )
            )
        elif tool["type"] == "web_search":
            tools.append(events.WebSearchTool())
        elif tool["type"] == "x_search":
            tools.append(events.XSearchTool(allowed_x_handles=tool.get("allowed_x_handles")))
        else:
            tools.append(tool)  # pipecat passes provider-native dicts through
    turn = session["turn_detection"]
    return events.SessionProperties(
        instructions=session["instructions"],
        # pipecat documents xAI's built-in voices by lower-case id ("eve").
        voice=session["voice"].lower(),
        turn_detection=events.TurnDetection(
            type=turn["type"],
            threshold=turn["threshold"],
            prefix_padding_ms=turn["prefix_padding_ms"],
            silence_duration_ms=turn["silence_duration_ms"],
        ),
        audio=events.AudioConfiguration(
            input=events.AudioInput(format=audio_format(session["audio"]["input"])),
            output=events.AudioOutput(format=audio_format(session["audio"]["output"])),
        ),
        tools=tools,
        model=config["provider"]["model"],
    )


def grok_llm_service(config: ResolvedSessionConfig | dict[str, Any], **kwargs: Any) -> Any:
    """A ready `GrokRealtimeLLMService` for this call (credentials from the config)."""
    from pipecat.services.xai.realtime.llm import GrokRealtimeLLMService

    config = _plain(config)
    properties = session_properties(config)
    credentials = config.get("credentials") or {}
    if not credentials.get("value"):
        raise CallRefusedError(
            "credentials_missing", "The session config carries no xAI credentials."
        )
    return GrokRealtimeLLMService(
        api_key=credentials["value"],
        base_url=config["provider"]["realtime_url"],
        settings=GrokRealtimeLLMService.Settings(
            session_properties=properties, model=config["provider"]["model"]
        ),
        **kwargs,
    )
