"""The resolved session config: everything a call backend needs to run one call."""

from typing import Any, Literal

from pydantic import BaseModel

from control_plane.rollout.models import FlagDecision

CredentialsMode = Literal["key", "ephemeral", "none"]


class TierSummary(BaseModel):
    id: str
    name: str
    engine: str


class ProviderInfo(BaseModel):
    name: str
    model: str
    realtime_url: str | None
    stt: str | None = None
    tts: str | None = None
    telephony: str


class TurnDetection(BaseModel):
    type: Literal["server_vad"] = "server_vad"
    threshold: float
    prefix_padding_ms: int = 200
    silence_duration_ms: int = 600


class AudioFormat(BaseModel):
    type: str
    rate: int | None = None


class AudioDirection(BaseModel):
    format: AudioFormat


class AudioConfig(BaseModel):
    input: AudioDirection
    output: AudioDirection


class SessionSettings(BaseModel):
    voice: str
    requested_voice: str
    instructions: str
    language: str
    turn_detection: TurnDetection
    tools: list[dict[str, Any]]
    audio: AudioConfig


class Credentials(BaseModel):
    type: Literal["api_key", "ephemeral"]
    provider: str
    value: str
    expires_at: int | None = None


class ResolvedSessionConfig(BaseModel):
    config_version: str
    workspace_id: str
    agent_id: str | None
    agent_name: str
    tier: TierSummary
    engine: str
    provider: ProviderInfo
    session: SessionSettings
    credentials: Credentials | None
    flag: FlagDecision | None
    stale: bool = False
