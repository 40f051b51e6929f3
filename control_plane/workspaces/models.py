from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator, model_validator
from pydantic import Field as PydanticField
from pydantic_core import PydanticCustomError
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from control_plane.core import UTCDateTime, utcnow
from control_plane.jsontypes import (
    JsonBool,
    JsonFloat,
    JsonInt,
    VisibleText64,
    VisibleText200,
    omittable,
)

WORKSPACE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{2,63}$"
LANGUAGE_PATTERN = r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8}){0,2}$"


class Workspace(SQLModel, table=True):
    __tablename__ = "workspaces"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Bumped by every write that can change a session config of this workspace (keys, settings).
    revision: int = 1


class WorkspaceSettings(SQLModel, table=True):
    """Per-workspace settings (the seed's user_settings)."""

    __tablename__ = "workspace_settings"

    workspace_id: str = Field(
        primary_key=True, max_length=64, foreign_key="workspaces.id", ondelete="CASCADE"
    )
    default_tier_id: str | None = Field(default=None, max_length=64, foreign_key="tiers.id")
    default_language: str = Field(default="en", max_length=32)
    # Calls this workspace may run at once, across every worker; admins change it.
    max_concurrent_calls: int = Field(default=20, sa_column_kwargs={"server_default": "20"})
    # Call transcripts are kept (for accuracy reviews) only when the workspace opts in, and
    # deleted after this many days.
    keep_transcripts: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})
    transcript_retention_days: int = Field(default=30, sa_column_kwargs={"server_default": "30"})
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Agent(SQLModel, table=True):
    __tablename__ = "agents"

    id: str = Field(primary_key=True, max_length=64)
    workspace_id: str = Field(
        max_length=64, foreign_key="workspaces.id", index=True, ondelete="CASCADE"
    )
    name: str = Field(max_length=200)
    pricing_tier: str = Field(max_length=64, foreign_key="tiers.id", index=True)
    # The tier the agent was created on (adoption counts new agents by it).
    created_tier: str | None = Field(default=None, max_length=64)
    voice: str = Field(max_length=64)
    instructions: str = Field(default="")
    language: str = Field(default="en", max_length=32)
    turn_detection_threshold: float | None = None
    tools: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    builtin_tools: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    version: int = 1
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# --- API schemas ---------------------------------------------------------------------------


class WorkspaceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: VisibleText200
    id: Annotated[str, StringConstraints(pattern=WORKSPACE_ID_PATTERN)] | None = None


class WorkspaceRead(BaseModel):
    id: str
    name: str
    created_at: datetime


class WorkspaceList(BaseModel):
    workspaces: list[WorkspaceRead]
    next_cursor: str | None = PydanticField(
        default=None, description="Pass as ?cursor= for the next page; null on the last page."
    )


class WorkspaceSettingsRead(BaseModel):
    workspace_id: str
    default_tier_id: str | None
    default_language: str
    max_concurrent_calls: int
    keep_transcripts: bool
    transcript_retention_days: int
    updated_at: datetime


class WorkspaceSettingsPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_tier_id: str | None = None
    default_language: Annotated[str, StringConstraints(pattern=LANGUAGE_PATTERN)] = omittable()
    max_concurrent_calls: JsonInt = omittable(ge=0, le=100_000, description="Admins only.")
    keep_transcripts: JsonBool = omittable(
        description="Keep call transcripts for accuracy reviews; turning it off deletes them."
    )
    transcript_retention_days: JsonInt = omittable(ge=1, le=365)


ToolName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]


class FunctionTool(BaseModel):
    """A function the model may call, described by a JSON schema.

    Accepts the flat realtime form `{"type": "function", "name", ...}` and the Chat Completions
    form `{"type": "function", "function": {...}}`; stores the flat form.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"] = "function"
    name: ToolName
    description: str = PydanticField(default="", max_length=1024)
    parameters: dict[str, Any] = PydanticField(
        default_factory=lambda: {"type": "object", "properties": {}}
    )

    @model_validator(mode="before")
    @classmethod
    def _flatten_chat_completions_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("function"), dict):
            return {"type": data.get("type", "function"), **data["function"]}
        return data

    @field_validator("parameters")
    @classmethod
    def _parameters_are_an_object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type", "object") != "object":
            raise ValueError('parameters must be a JSON schema of "type": "object"')
        properties = value.get("properties", {})
        if not isinstance(properties, dict):
            raise ValueError("parameters.properties must be an object")
        return value


class XSearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed_x_handles: list[
        Annotated[str, StringConstraints(pattern=r"^@?[A-Za-z0-9_]{1,15}$")]
    ] = PydanticField(default_factory=list, max_length=10)


class BuiltinTools(BaseModel):
    model_config = ConfigDict(extra="forbid")

    web_search: JsonBool = False
    x_search: XSearchConfig | None = None


Threshold = Annotated[JsonFloat, PydanticField(ge=0.0, le=1.0)]
AgentName = VisibleText200
Language = Annotated[str, StringConstraints(pattern=LANGUAGE_PATTERN)]
Instructions = Annotated[str, StringConstraints(max_length=20_000)]


def unique_tool_names(cls: type, tools: list[FunctionTool]) -> list[FunctionTool]:
    names = [t.name for t in tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PydanticCustomError(
            "duplicate_tool_name",
            "tool names must be unique: {names}",
            {"names": ", ".join(duplicates), "code": "duplicate_tool_name"},
        )
    return tools


class AgentConfig(BaseModel):
    """Everything that describes how an agent talks: shared by agents and inline session configs."""

    model_config = ConfigDict(extra="forbid")

    name: AgentName = "Inline agent"
    pricing_tier: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    voice: VisibleText64 | None = None
    instructions: Instructions = ""
    language: Language = "en"
    turn_detection_threshold: Threshold | None = None
    tools: list[FunctionTool] = PydanticField(default_factory=list, max_length=64)
    builtin_tools: BuiltinTools = PydanticField(default_factory=BuiltinTools)

    _unique_tool_names = field_validator("tools")(unique_tool_names)


class AgentCreate(AgentConfig):
    name: AgentName


class AgentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: AgentName = omittable()
    pricing_tier: Annotated[str, StringConstraints(min_length=1, max_length=64)] = omittable()
    voice: VisibleText64 | None = None
    instructions: Instructions = omittable()
    language: Language = omittable()
    turn_detection_threshold: Threshold | None = None
    tools: list[FunctionTool] = omittable(max_length=64)
    builtin_tools: BuiltinTools = omittable()

    _unique_tool_names = field_validator("tools")(unique_tool_names)


class AgentRead(BaseModel):
    id: str
    workspace_id: str
    name: str
    pricing_tier: str
    voice: str
    resolved_voice: str
    instructions: str
    language: str
    turn_detection_threshold: float | None
    tools: list[FunctionTool]
    builtin_tools: BuiltinTools
    version: int
    created_at: datetime
    updated_at: datetime


class AgentList(BaseModel):
    agents: list[AgentRead]
    next_cursor: str | None = PydanticField(
        default=None, description="Pass as ?cursor= for the next page; null on the last page."
    )
