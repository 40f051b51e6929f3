"""switchboard-runtime: one voice-agent call on xAI's Grok Voice Agent, run with the session
config the Switchboard control plane resolves.

    from switchboard_runtime import GrokRealtimeSession, ToolRegistry

The call worker (phone numbers point at it) is `switchboard_runtime.worker`, with the `[worker]`
extra; the pipecat adapter is `switchboard_runtime.pipecat_adapter`, with `[pipecat]`.
"""

from switchboard_runtime.client import ControlPlaneClient, ControlPlaneError
from switchboard_runtime.contract import CallReport, ResolvedSessionConfig
from switchboard_runtime.session import (
    AudioDone,
    AudioOut,
    CallEnded,
    CallRefusedError,
    ClearAudio,
    GrokRealtimeSession,
    HttpTelemetrySink,
    MemoryTelemetrySink,
    Transcript,
)
from switchboard_runtime.tools import ToolRegistry

__version__ = "0.2.0"

__all__ = [
    "AudioDone",
    "AudioOut",
    "CallEnded",
    "CallRefusedError",
    "CallReport",
    "ClearAudio",
    "ControlPlaneClient",
    "ControlPlaneError",
    "GrokRealtimeSession",
    "HttpTelemetrySink",
    "MemoryTelemetrySink",
    "ResolvedSessionConfig",
    "ToolRegistry",
    "Transcript",
    "__version__",
]
