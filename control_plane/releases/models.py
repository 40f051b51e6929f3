"""A flag's release plan: ordered milestones (internal → beta 10 % → beta 50 % → GA, say), each
with a minimum dwell time, a minimum number of calls and gates; the flag walks it by itself
while every gate is green, and stops where the guard pauses it."""

import itertools
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator
from pydantic import Field as PydanticField
from pydantic_core import PydanticCustomError
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from control_plane.core import UTCDateTime, utcnow
from control_plane.jsontypes import JsonBool, JsonFloat, JsonInt

PlanStatus = Literal["waiting", "held", "done"]
MilestoneStage = Literal["internal", "beta", "ga"]
STAGE_ORDER = {"internal": 0, "beta": 1, "ga": 2}


class ReleasePlan(SQLModel, table=True):
    __tablename__ = "release_plans"

    flag: str = Field(
        primary_key=True, max_length=128, foreign_key="flags.name", ondelete="CASCADE"
    )
    enabled: bool = True
    milestones: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    current: int = 0
    entered_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # When each milestone was reached: [{"index", "at"}], oldest first.
    history: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    status: str = Field(default="waiting", max_length=16)
    reason: str = Field(default="", max_length=1000)
    checked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    version: int = 1
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_by: str = Field(default="", max_length=200)


# --- API schemas ---------------------------------------------------------------------------


class Gates(BaseModel):
    """Beyond the guard's health targets (always a gate): NPS and accuracy, once they have
    enough samples in the milestone's time."""

    model_config = ConfigDict(extra="forbid")

    nps_min: JsonFloat | None = PydanticField(default=None, ge=-100, le=100)
    nps_min_responses: JsonInt = PydanticField(default=20, ge=1, le=100_000)
    accuracy_min: JsonFloat | None = PydanticField(default=None, ge=0, le=1)
    accuracy_min_reviews: JsonInt = PydanticField(default=10, ge=1, le=100_000)


class Milestone(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"[^ \t\n]")]
    stage: MilestoneStage
    beta_percentage: JsonInt = PydanticField(
        default=0, ge=0, le=100, description="Beta only: the share of other workspaces."
    )
    min_dwell_hours: JsonFloat = PydanticField(default=24, ge=0, le=24 * 180)
    min_calls: JsonInt = PydanticField(default=50, ge=0, le=10_000_000)
    min_workspaces: JsonInt = PydanticField(
        default=2,
        ge=1,
        le=1000,
        description="Calls, health, ratings and reviews must come from at least this many"
        " workspaces, and every gate must pass without any one of them (minimums counted"
        " without the workspace that has the most); 1 pools them (one workspace may decide).",
    )
    gates: Gates = PydanticField(default_factory=Gates)

    def rank(self) -> tuple[int, int]:
        return STAGE_ORDER[self.stage], self.beta_percentage if self.stage == "beta" else 0


class PlanWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    milestones: list[Milestone] = PydanticField(min_length=2, max_length=20)
    enabled: JsonBool = True

    @model_validator(mode="after")
    def _forward_only(self) -> "PlanWrite":
        ranks = [m.rank() for m in self.milestones]
        if any(a >= b for a, b in itertools.pairwise(ranks)):
            raise PydanticCustomError(
                "plan_not_forward",
                "milestones must only move forward: internal, then beta with growing "
                "percentages, then ga",
                {"code": "plan_not_forward"},
            )
        return self


class MilestoneState(BaseModel):
    index: int
    name: str
    stage: MilestoneStage
    beta_percentage: int
    state: Literal["done", "current", "next"]
    reached_at: datetime | None


class PlanRead(BaseModel):
    flag: str
    enabled: bool
    milestones: list[Milestone]
    current: int
    entered_at: datetime
    status: PlanStatus
    reason: str
    checked_at: datetime | None
    version: int
    timeline: list[MilestoneState]


class PlanCheck(BaseModel):
    flag: str
    outcome: Literal["advanced", "waiting", "held", "done", "off"]
    reason: str
    milestone: str
    figures: dict[str, Any] = PydanticField(default_factory=dict)
