"""The resolved session config: everything a call backend needs to run one call. Defined once,
in the runtime's contract with the control plane."""

from switchboard_runtime.contract import (
    AudioChannel,
    AudioConfig,
    AudioDirection,
    AudioFormat,
    Credentials,
    CredentialsMode,
    ProviderInfo,
    ResolvedSessionConfig,
    SessionSettings,
    TierSummary,
    TurnDetection,
)

__all__ = [
    "AudioChannel",
    "AudioConfig",
    "AudioDirection",
    "AudioFormat",
    "Credentials",
    "CredentialsMode",
    "ProviderInfo",
    "ResolvedSessionConfig",
    "SessionSettings",
    "TierSummary",
    "TurnDetection",
]
