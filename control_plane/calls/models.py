from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints
from pydantic import Field as PydanticField
from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from control_plane.core import UTCDateTime, utcnow
from control_plane.jsontypes import JsonBool

# Ids the runtime puts into URLs: letters, digits, '_' and '-', nothing that changes a path.
SAFE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
SafeId = Annotated[str, StringConstraints(pattern=SAFE_ID_PATTERN)]

CallState = Literal["issued", "active", "ended", "lapsed"]
Channel = Literal["twilio", "telnyx", "api"]
# Where a call's audio comes from: a phone (twilio, telnyx), the backend itself (api), or a
# person's browser on the agent page (browser, a test call).
CallChannel = Literal["twilio", "telnyx", "api", "browser"]
# What kind of media stream presents a stream token: a phone provider's or a browser's.
StreamKind = Literal["phone", "browser"]
STREAM_CHANNELS: dict[str, tuple[str, ...]] = {
    "phone": ("twilio", "telnyx"),
    "browser": ("browser",),
}
# States that hold one of the workspace's concurrent-call slots while their lease runs.
HOLDING_STATES = ("issued", "active")


class Call(SQLModel, table=True):
    """A call the control plane issued. Only issued calls may reach xAI or count in telemetry."""

    __tablename__ = "calls"
    # Issuing a call counts the workspace's calls that hold a slot: (workspace, state). One
    # provider call (Twilio CallSid, Telnyx call_control_id) is one issued call.
    __table_args__ = (
        Index("ix_calls_workspace_id_state", "workspace_id", "state"),
        Index("uq_calls_provider_call", "workspace_id", "channel", "provider_call_id", unique=True),
    )

    id: str = Field(primary_key=True, max_length=64)
    workspace_id: str = Field(max_length=64, foreign_key="workspaces.id", ondelete="CASCADE")
    agent_id: str = Field(max_length=64)
    tier: str = Field(max_length=64)
    engine: str = Field(max_length=64)
    provider: str = Field(max_length=32)
    channel: str = Field(max_length=16)
    provider_call_id: str | None = Field(default=None, max_length=128)
    state: str = Field(default="issued", max_length=16)
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lease_expires_at: datetime = Field(sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    end_reason: str = Field(default="", max_length=64)


# --- API schemas ---------------------------------------------------------------------------


class TwilioWebhook(BaseModel):
    """What Twilio signed: the public URL it requested and the POST parameters."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["twilio"]
    url: str = PydanticField(min_length=8, max_length=2048, pattern=r"^https?://")
    params: dict[
        Annotated[str, StringConstraints(max_length=128)],
        Annotated[str, StringConstraints(max_length=4096)],
    ] = PydanticField(default_factory=dict, max_length=200)
    signature: str = PydanticField(max_length=256)


class TelnyxWebhook(BaseModel):
    """What Telnyx signed: `{timestamp}|{raw body}`, the body as base64 of its exact bytes."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["telnyx"]
    body_base64: str = PydanticField(max_length=200_000)
    timestamp: str = PydanticField(max_length=32)
    signature: str = PydanticField(max_length=256)


class CallIssue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel = "api"
    provider_call_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    webhook: TwilioWebhook | TelnyxWebhook | None = PydanticField(
        default=None,
        discriminator="provider",
        description="Required for twilio and telnyx: the signed webhook the call arrived on.",
    )
    claim: JsonBool = PydanticField(
        default=False,
        description="Channel api only: the caller runs the call itself, with no media stream "
        "to present the token later, so the call is claimed at once (one round trip).",
    )


class IssuedCall(BaseModel):
    call_id: str
    workspace_id: str
    agent_id: str
    stream_token: str = PydanticField(
        description="Single-use; present it at the media stream's start before it expires."
    )
    expires_at: datetime
    engine: str = PydanticField(
        description="The engine the agent's tier runs on (a worker sets up grok-realtime early)."
    )
    state: CallState = PydanticField(description="`active` when issued with `claim`.")
    lease_seconds: int | None = PydanticField(
        default=None, description="With `claim`: renew the lease within this many seconds."
    )
    replayed: bool = PydanticField(
        default=False,
        description="The call an earlier request issued for this provider call id (a webhook "
        "delivered again): the same call and token; no second slot was held.",
    )


class CallClaim(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stream_token: str = PydanticField(min_length=1, max_length=1024)
    agent_id: SafeId | None = PydanticField(
        default=None, description="The agent the stream was opened for; must match the token."
    )
    stream: StreamKind | None = PydanticField(
        default=None,
        description="The kind of stream presenting the token: a phone call's token opens no "
        "browser stream and a test call's no phone stream (409 `stream_token_channel`).",
    )


class ClaimedCall(BaseModel):
    call_id: str
    workspace_id: str
    agent_id: str
    channel: CallChannel
    lease_seconds: int
    lease_expires_at: datetime


class BrowserCall(BaseModel):
    """A call from the browser: open `url` as a WebSocket and send the token first."""

    call_id: str
    url: str = PydanticField(description="The call worker's browser stream for this agent.")
    token: str = PydanticField(
        description="Single-use; send it as the stream's first message before it expires."
    )
    expires_at: datetime


class LeaseRenewed(BaseModel):
    call_id: str
    lease_expires_at: datetime


class CallEnd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "ended"


class CallRead(BaseModel):
    id: str
    workspace_id: str
    agent_id: str
    tier: str
    engine: str
    provider: str
    channel: CallChannel
    provider_call_id: str | None
    state: CallState
    started_at: datetime
    claimed_at: datetime | None
    lease_expires_at: datetime
    ended_at: datetime | None
    end_reason: str


class CallList(BaseModel):
    calls: list[CallRead]
    next_cursor: str | None = PydanticField(
        default=None, description="Pass as ?cursor= for the next page; null on the last page."
    )
    active: int = PydanticField(description="Calls holding a slot now (issued or active).")
    max_concurrent_calls: int
