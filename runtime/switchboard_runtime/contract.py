"""The typed contract between the control plane and the runtime: the resolved session config it
serves, the call report it takes, and the format of the stream tokens it issues. One definition,
imported by both sides (the runtime never imports the control plane; the control plane imports
this)."""

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from switchboard_runtime.jsontypes import IsoDateTime, JsonBool, JsonFloat, JsonInt

CredentialsMode = Literal["key", "ephemeral", "none"]
# Where the call's audio comes from: a phone (G.711 μ-law, 8 kHz) or a browser (PCM16, 24 kHz).
AudioChannel = Literal["phone", "browser"]
Stage = Literal["off", "internal", "beta", "ga"]


# --- the resolved session config --------------------------------------------------------------


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


class FlagDecision(BaseModel):
    flag: str
    workspace_id: str
    enabled: bool
    stage: Stage
    killed: bool
    reason: str | None = None
    code: str | None = None


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
    keep_transcripts: bool = Field(
        default=False,
        description="The workspace keeps call transcripts: the call's report carries them.",
    )


# --- the call report --------------------------------------------------------------------------

Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Name = Annotated[str, StringConstraints(max_length=64)]


def _milliseconds(description: str) -> Any:
    """An optional duration of a call's first audio, in ms (at most ten minutes)."""
    return Field(default=None, ge=0, le=600_000, description=description)


class TranscriptEntry(BaseModel):
    """One turn of a call's words, as xAI transcribed them."""

    role: Literal["caller", "agent"]
    text: Annotated[str, StringConstraints(max_length=4000)]


# The end reason of a call its worker ended because the worker was stopped (a deploy): the
# call says nothing about the provider, so the rollout guard leaves it out of call completion.
WORKER_SHUTDOWN = "worker_shutdown"
# xAI refused the workspace's key (HTTP 401/403 at the realtime upgrade).
XAI_KEY_REFUSED = "xai_key_refused"


class CallReport(BaseModel):
    """One finished call, as the runtime reports it. The control plane accepts reports of calls
    it issued only, and takes workspace, agent, tier and engine from the issued call."""

    model_config = ConfigDict(extra="ignore", validate_assignment=False)

    call_id: Id
    workspace_id: Id | None = None
    agent_id: Id | None = None
    tier: Name | None = None
    engine: Name | None = None
    started_at: IsoDateTime = Field(default_factory=lambda: datetime.now(UTC))
    time_to_first_audio_ms: JsonFloat | None = _milliseconds(
        "xAI's part of first audio: the caller stops speaking (xAI's speech_stopped; the session"
        " being ready when the agent speaks first) to the agent's first audio"
    )
    setup_wait_ms: JsonFloat | None = _milliseconds(
        "our part: the media stream's start to the xAI session being ready (0 when a warm"
        " session was ready first)"
    )
    first_audio_relay_ms: JsonFloat | None = _milliseconds(
        "our part: the agent's first audio from xAI to its frame sent to the phone"
    )
    warm_start: JsonBool | None = Field(
        default=None,
        description="the call attached to an xAI session set up before its media stream started",
    )
    tool_calls_ok: JsonInt = Field(default=0, ge=0, le=100_000)
    tool_calls_failed: JsonInt = Field(default=0, ge=0, le=100_000)
    tool_calls_failed_in_tool: JsonInt = Field(
        default=0,
        ge=0,
        le=100_000,
        description="of tool_calls_failed, those that failed inside the agent's own tool"
        " (it raised or timed out), not because of what the model asked for",
    )
    transcript_events: JsonInt = Field(default=0, ge=0, le=1_000_000)
    end_reason: Name = ""
    completed: JsonBool = False
    websocket_disconnects: JsonInt = Field(default=0, ge=0, le=100_000)
    duration_ms: JsonFloat = Field(default=0.0, ge=0, le=86_400_000)
    nonfatal_errors: JsonInt = Field(
        default=0, ge=0, le=1_000_000, description="xAI errors the call survived"
    )
    unknown_events: JsonInt = Field(
        default=0, ge=0, le=10_000_000, description="xAI events skipped as unknown or unreadable"
    )
    connect_retries: JsonInt = Field(
        default=0, ge=0, le=100, description="retries of the xAI connection (429, 5xx, timeouts)"
    )
    held_audio_dropped: JsonInt = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="caller frames lost because set-up outlasted the hold (10 s): the oldest go",
    )
    transcript: list[TranscriptEntry] | None = Field(
        default=None,
        max_length=2000,
        description="Only when the session config says keep_transcripts; stored only then.",
    )


# --- stream tokens ------------------------------------------------------------------------------
# `st1.<payload>.<mac>`: the payload is base64url (unpadded) compact JSON naming the call, its
# workspace and agent and when the token expires (Unix seconds); the mac is the control plane's
# HMAC over the payload (calls/tokens.py). The runtime can read a token, never check it.

STREAM_TOKEN_PREFIX = "st1"  # noqa: S105 - a format marker, not a secret
MAX_STREAM_TOKEN_PAYLOAD = 1024


@dataclass(frozen=True)
class StreamTokenPayload:
    call_id: str
    workspace_id: str
    agent_id: str
    expires_at: int


def encode_stream_token_payload(payload: StreamTokenPayload) -> str:
    body = {
        "c": payload.call_id,
        "w": payload.workspace_id,
        "a": payload.agent_id,
        "x": payload.expires_at,
    }
    encoded = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode())
    return encoded.rstrip(b"=").decode("ascii")


def split_stream_token(token: str) -> tuple[str, str] | None:
    """(payload, mac) of a token in this format, or None."""
    prefix, _, rest = token.partition(".")
    payload, _, mac = rest.partition(".")
    if prefix != STREAM_TOKEN_PREFIX or not payload or not mac or "." in mac:
        return None
    if len(payload) > MAX_STREAM_TOKEN_PAYLOAD:
        return None
    return payload, mac


def decode_stream_token_payload(payload: str) -> StreamTokenPayload | None:
    try:
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return StreamTokenPayload(
            call_id=_text(body["c"]),
            workspace_id=_text(body["w"]),
            agent_id=_text(body["a"]),
            expires_at=int(body["x"]),
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def stream_token_call_id(token: str) -> str | None:
    """The call a stream token names, unverified (only the control plane can check it)."""
    parts = split_stream_token(token)
    payload = decode_stream_token_payload(parts[0]) if parts else None
    return payload.call_id if payload else None
