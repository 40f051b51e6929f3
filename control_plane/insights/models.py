"""What the product team measures the Grok launch by, beside call health: ratings of calls
(NPS), transcripts kept by workspaces that opt in (accuracy against a reviewer's reference), and
the read models of adoption, usage and cost."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel

from control_plane.core import UTCDateTime, utcnow
from control_plane.jsontypes import JsonInt

# The seed's targets for the Grok tier.
ADOPTION_TARGET = 0.05  # of new agents on grok-realtime over 30 days
NPS_TARGET = 40.0
ACCURACY_TARGET = 0.90  # 1 - word error rate of the caller's transcript
GROK_TIER = "grok-realtime"


class CallFeedback(SQLModel, table=True):
    """One rating of one call, 0-10 (the NPS question), with an optional comment."""

    __tablename__ = "call_feedback"

    call_id: str = Field(
        primary_key=True, max_length=64, foreign_key="calls.id", ondelete="CASCADE"
    )
    workspace_id: str = Field(max_length=64, index=True)
    tier: str = Field(max_length=64, index=True)
    cohort: str = Field(default="", max_length=64)
    test_call: bool = False
    score: int
    comment: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    created_by: str = Field(max_length=200)


class CallTranscript(SQLModel, table=True):
    """A call's words, kept only for a workspace that opted in and only until `kept_until`."""

    __tablename__ = "call_transcripts"

    call_id: str = Field(
        primary_key=True, max_length=64, foreign_key="calls.id", ondelete="CASCADE"
    )
    workspace_id: str = Field(max_length=64, index=True)
    tier: str = Field(max_length=64, index=True)
    entries: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    caller_text: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    kept_until: datetime = Field(sa_type=UTCDateTime, index=True)
    reference_text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    reference_by: str | None = Field(default=None, max_length=200)
    reference_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Set by the product team (an admin), not by the call's own workspace: only these count
    # in a release plan's accuracy gate.
    reference_independent: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})
    word_errors: int | None = None
    reference_words: int | None = None


# --- API schemas ---------------------------------------------------------------------------


class FeedbackWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score: JsonInt = PydanticField(ge=0, le=10, description="How likely to recommend, 0-10.")
    comment: Annotated[str, StringConstraints(max_length=1000)] | None = None


class FeedbackRead(BaseModel):
    call_id: str
    workspace_id: str
    tier: str
    cohort: str
    score: int
    comment: str | None
    created_at: datetime


class ReferenceWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(min_length=1, max_length=20_000)] = PydanticField(
        description="What the caller really said, as a reviewer hears it."
    )


class TranscriptLine(BaseModel):
    role: str
    text: str


class TranscriptRead(BaseModel):
    call_id: str
    workspace_id: str
    tier: str
    entries: list[TranscriptLine]
    kept_until: datetime
    reference_text: str | None
    accuracy: float | None = PydanticField(description="1 - word error rate against the reference")


class TranscriptsPurged(BaseModel):
    deleted: int


class Target(BaseModel):
    value: float | None
    target: float
    ok: bool | None
    samples: int


class DayCount(BaseModel):
    day: str
    counts: dict[str, int]


class Adoption(BaseModel):
    window_days: int
    since: datetime
    until: datetime
    new_agents: int
    new_agents_on_grok: int
    grok_share_of_new_agents: Target
    agents_created_per_day: list[DayCount]
    share_per_day: list[tuple[str, float | None]] = PydanticField(
        description="Each day: grok-realtime's share of the agents created in the 30 days to it."
    )
    active_agents_per_tier: dict[str, int]


class TierUsage(BaseModel):
    calls: int
    minutes: float
    cost: float


class WorkspaceUsage(BaseModel):
    workspace_id: str
    calls: int
    minutes: float
    cost: float
    cost_on_grok: float = PydanticField(
        description="What the same minutes would cost on grok-realtime at its catalogue price."
    )
    moving_to_grok_costs: float = PydanticField(description="cost_on_grok - cost")


class Usage(BaseModel):
    window_days: int
    since: datetime
    until: datetime
    per_tier: dict[str, TierUsage]
    per_workspace: list[WorkspaceUsage]
    grok_price_per_minute: float


class NpsFigures(BaseModel):
    responses: int
    promoters: int
    passives: int
    detractors: int
    nps: Target


class Nps(BaseModel):
    window_days: int
    since: datetime
    per_tier: dict[str, NpsFigures]
    per_cohort: dict[str, NpsFigures] = PydanticField(description="Grok tier only, by cohort.")
    per_week: list[tuple[str, float | None]] = PydanticField(description="Grok tier, NPS by week.")


class AccuracyFigures(BaseModel):
    reviewed_calls: int
    reference_words: int
    word_errors: int
    accuracy: Target


class Accuracy(BaseModel):
    window_days: int
    since: datetime
    per_tier: dict[str, AccuracyFigures]
