from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from control_plane.core import UTCDateTime, utcnow
from control_plane.jsontypes import JsonInt, omittable
from switchboard_runtime.contract import FlagDecision, Stage

__all__ = ["FlagDecision", "Stage"]
STAGES: tuple[Stage, ...] = ("off", "internal", "beta", "ga")
CohortName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class Flag(SQLModel, table=True):
    """A feature flag and its rollout plan; `definition` is the compiled Unleash feature."""

    __tablename__ = "flags"

    name: str = Field(primary_key=True, max_length=128)
    description: str = Field(default="", max_length=1000)
    stage: str = Field(default="off", max_length=16)
    killed: bool = False
    internal_cohorts: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    beta_cohorts: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    beta_percentage: int = 0
    definition: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    version: int = 1
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_by: str = Field(default="seed", max_length=200)


class Cohort(SQLModel, table=True):
    """A named list of workspaces (internal, beta-1, ...) that rollout stages refer to."""

    __tablename__ = "cohorts"

    name: str = Field(primary_key=True, max_length=64)
    description: str = Field(default="", max_length=500)
    members: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    version: int = 1
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_by: str = Field(default="seed", max_length=200)


# --- API schemas ---------------------------------------------------------------------------


class FlagRead(BaseModel):
    name: str
    description: str
    stage: Stage
    killed: bool
    internal_cohorts: list[str]
    beta_cohorts: list[str]
    beta_percentage: int
    definition: dict[str, Any]
    version: int
    updated_at: datetime
    updated_by: str


class FlagList(BaseModel):
    flags: list[FlagRead]
    mode: Literal["embedded", "unleash-server"]


class StageChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Stage


class RolloutChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    percentage: JsonInt = omittable(ge=0, le=100)
    internal_cohorts: list[CohortName] = omittable(max_length=20)
    beta_cohorts: list[CohortName] = omittable(max_length=20)


class CohortRead(BaseModel):
    name: str
    description: str
    members: list[str]
    version: int
    updated_at: datetime
    updated_by: str


class CohortList(BaseModel):
    cohorts: list[CohortRead]


class CohortWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    members: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = PydanticField(
        max_length=5000
    )
    description: str | None = PydanticField(default=None, max_length=500)
