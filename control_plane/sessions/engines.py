"""What differs between engines, as data: one profile per engine named in the catalogue.

Adding an engine is adding a row here (and the tier rows that use it), never an if/elif in the
resolver.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from control_plane.settings import Settings
from control_plane.workspaces.models import BuiltinTools, FunctionTool


def to_grok_tools(functions: list[FunctionTool], builtin: BuiltinTools) -> list[dict[str, Any]]:
    """The agent's tools in the format xAI's realtime `session.update` takes.

    The one place that knows Grok's tool shape: flat function tools, plus the built-in
    web_search and x_search. (One open-source client reports a nested, Chat-Completions-style
    function shape; should xAI move to it, this function is what changes.)
    """
    tools: list[dict[str, Any]] = [
        {
            "type": "function",
            "name": f.name,
            "description": f.description,
            "parameters": f.parameters,
        }
        for f in functions
    ]
    if builtin.web_search:
        tools.append({"type": "web_search"})
    if builtin.x_search is not None:
        x_search: dict[str, Any] = {"type": "x_search"}
        handles = [h.lstrip("@") for h in builtin.x_search.allowed_x_handles]
        if handles:
            x_search["allowed_x_handles"] = handles
        tools.append(x_search)
    return tools


def to_openai_tools(functions: list[FunctionTool], builtin: BuiltinTools) -> list[dict[str, Any]]:
    """OpenAI Realtime takes flat function tools; it has no built-in web or X search."""
    return [
        {
            "type": "function",
            "name": f.name,
            "description": f.description,
            "parameters": f.parameters,
        }
        for f in functions
    ]


@dataclass(frozen=True)
class EngineProfile:
    provider: str
    realtime_url: Callable[[Settings], str | None]
    convert_tools: Callable[[list[FunctionTool], BuiltinTools], list[dict[str, Any]]]
    # Which workspace key the call needs, and whether a call cannot run without it.
    key_provider: str | None
    key_required: bool
    supports_ephemeral: bool
    # Phone audio crosses untouched (G.711 μ-law 8 kHz); a browser speaks PCM16 at 24 kHz.
    telephony_audio: str = "audio/pcmu"
    browser_audio: str = "audio/pcm"
    browser_rate: int = 24_000


ENGINES: dict[str, EngineProfile] = {
    "grok-realtime": EngineProfile(
        provider="xai",
        realtime_url=lambda s: s.xai_realtime_url,
        convert_tools=to_grok_tools,
        key_provider="xai",
        key_required=True,
        supports_ephemeral=True,
    ),
    "openai-realtime": EngineProfile(
        provider="openai",
        realtime_url=lambda s: s.openai_realtime_url,
        convert_tools=to_openai_tools,
        key_provider="openai",
        key_required=False,
        supports_ephemeral=False,
    ),
    "pipecat-pipeline": EngineProfile(
        provider="pipecat",
        realtime_url=lambda _s: None,
        convert_tools=to_openai_tools,
        key_provider=None,
        key_required=False,
        supports_ephemeral=False,
    ),
}
