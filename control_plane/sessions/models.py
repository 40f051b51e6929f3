"""The resolved session config: everything a call backend needs to run one call. Defined once,
in the runtime's contract with the control plane."""

from switchboard_runtime.contract import (
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
