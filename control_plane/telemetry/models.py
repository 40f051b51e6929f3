from datetime import datetime
from typing import Annotated

import httpx
from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from control_plane.core import UTCDateTime, utcnow
from control_plane.jsontypes import JsonBool, JsonFloat, JsonInt, omittable
from control_plane.telemetry.evidence import EvidenceSummary
from switchboard_runtime.contract import CallReport as RuntimeCallReport


class CallReport(SQLModel, table=True):
    """One finished call, as the runtime reported it. The call id makes reports idempotent."""

    __tablename__ = "call_reports"

    call_id: str = Field(primary_key=True, max_length=64)
    workspace_id: str = Field(max_length=64, index=True)
    agent_id: str = Field(max_length=64)
    tier: str = Field(max_length=64, index=True)
    engine: str = Field(max_length=64)
    flag: str | None = Field(default=None, max_length=128, index=True)
    cohort: str = Field(default="", max_length=64)
    started_at: datetime = Field(sa_type=UTCDateTime)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    time_to_first_audio_ms: float | None = None
    tool_calls_ok: int = 0
    tool_calls_failed: int = 0
    tool_calls_failed_in_tool: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    transcript_events: int = 0
    end_reason: str = Field(default="", max_length=64)
    completed: bool = False
    websocket_disconnects: int = 0
    duration_ms: float = 0.0
    nonfatal_errors: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    unknown_events: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    connect_retries: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    held_audio_dropped: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    setup_wait_ms: float | None = None
    first_audio_relay_ms: float | None = None
    warm_start: bool | None = None
    # A browser test call from the agent page (not a caller on a phone line): kept out of the
    # rollout's health unless its guard says otherwise.
    test_call: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})
    # Whose fault its failure was (telemetry/faults.py); only "", provider and runtime count
    # in the tier's health.
    fault: str = Field(default="", max_length=16, sa_column_kwargs={"server_default": ""})


class FlagGuard(SQLModel, table=True):
    """Health targets a flag's rollout must hold; breaching one pauses the rollout."""

    __tablename__ = "flag_guards"

    flag: str = Field(primary_key=True, max_length=128)
    enabled: bool = True
    first_audio_p95_max_ms: float = 1000.0
    first_audio_target_ms: float = 780.0
    tool_success_min: float = 0.95
    completion_min: float = 0.98
    websocket_stability_min: float = 0.995
    min_calls: int = 50
    window_seconds: int = 900
    webhook_url: str | None = Field(default=None, max_length=500)
    last_paused_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    include_test_calls: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})
    # A pause needs a breach that holds without any one workspace's calls, from at least this
    # many workspaces (telemetry/evidence.py); 1 is the pooled rule, for a cohort of one
    # trusted workspace.
    min_workspaces: int = Field(default=2, sa_column_kwargs={"server_default": "2"})


# --- API schemas ---------------------------------------------------------------------------


# A report as the runtime sends it: one definition, in the runtime's contract.
CallReportIn = RuntimeCallReport


class CallBatch(BaseModel):
    calls: list[CallReportIn] = PydanticField(min_length=1, max_length=1000)


class IngestResult(BaseModel):
    accepted: int
    duplicates: int
    paused: list[str]


class MetricHealth(BaseModel):
    value: float | None
    target: float
    ok: bool | None


class HealthFigures(BaseModel):
    calls: int
    first_audio_p50_ms: float | None
    # Where first-audio time goes (shown, not guarded): our set-up wait after the media stream
    # starts and our relay of the first audio, beside xAI's part (first_audio_*).
    setup_wait_p50_ms: float | None = None
    setup_wait_p95_ms: float | None = None
    first_audio_relay_p95_ms: float | None = None
    warm_start_share: float | None = None
    first_audio_p95: MetricHealth
    tool_call_success: MetricHealth
    call_completion: MetricHealth
    websocket_stability: MetricHealth
    enough_calls: bool = PydanticField(
        description="Enough calls to act on: the minimum without the workspace that has the"
        " most, from the minimum number of workspaces."
    )
    evidence: EvidenceSummary | None = None
    not_counted: dict[str, int] = PydanticField(
        default_factory=dict,
        description="Calls left out of the tier's figures, by whose fault they failed"
        " (workspace: its own key or set-up; caller: refused token, hung up at once).",
    )

    def missed_targets(self) -> list[tuple[str, MetricHealth]]:
        """The guarded metrics that miss their target (however few calls there were)."""
        guarded = {
            "first_audio_p95": self.first_audio_p95,
            "tool_call_success": self.tool_call_success,
            "call_completion": self.call_completion,
            "websocket_stability": self.websocket_stability,
        }
        return [(name, metric) for name, metric in guarded.items() if metric.ok is False]


class RolloutHealth(BaseModel):
    flag: str
    stage: str
    killed: bool
    window_seconds: int
    since: datetime
    overall: HealthFigures
    cohorts: dict[str, HealthFigures]
    breaches: list[str]
    held_back: list[str] = PydanticField(
        default_factory=list,
        description="Targets missed in the pool that do not hold without one workspace's calls:"
        " shown, not acted on.",
    )
    min_workspaces: int


class GuardRead(BaseModel):
    flag: str
    enabled: bool
    first_audio_p95_max_ms: float
    first_audio_target_ms: float
    tool_success_min: float
    completion_min: float
    websocket_stability_min: float
    min_calls: int
    window_seconds: int
    webhook_url: str | None
    last_paused_at: datetime | None
    include_test_calls: bool = PydanticField(
        description="Count browser test calls in the rollout's health (off: phone calls only)."
    )
    min_workspaces: int = PydanticField(
        description="A pause needs a breach that holds without any one workspace's calls, from"
        " at least this many workspaces; 1 pools every call (one workspace may decide)."
    )


class GuardWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: JsonBool = omittable()
    first_audio_p95_max_ms: JsonFloat = omittable(gt=0, le=60_000)
    tool_success_min: JsonFloat = omittable(ge=0, le=1)
    completion_min: JsonFloat = omittable(ge=0, le=1)
    websocket_stability_min: JsonFloat = omittable(ge=0, le=1)
    min_calls: JsonInt = omittable(ge=1, le=1_000_000)
    window_seconds: JsonInt = omittable(ge=60, le=7 * 86_400)
    include_test_calls: JsonBool = omittable()
    min_workspaces: JsonInt = omittable(ge=1, le=1000)
    webhook_url: (
        Annotated[
            str,
            StringConstraints(max_length=500, pattern=r"^https?://"),
            PydanticField(json_schema_extra={"format": "uri"}),
        ]
        | None
    ) = None

    @field_validator("webhook_url")
    @classmethod
    def _a_url_httpx_can_send_to(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError("webhook_url is not a valid http(s) URL") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("webhook_url needs http(s) and a host")
        return value


class WorkspaceCallHealth(BaseModel):
    """A workspace's own calls over a window, by whose fault the failed ones failed: what it
    can fix itself (its key, its tools) beside what counts against the tier."""

    workspace_id: str
    window_days: int
    since: datetime
    calls: int
    by_fault: dict[str, int] = PydanticField(
        description='Calls by fault: "" ran fine; provider and runtime count against the tier;'
        " workspace and caller do not."
    )
    end_reasons: dict[str, int] = PydanticField(description="Calls that failed, by end reason.")
    tool_calls_ok: int
    tool_calls_failed: int
    tool_calls_failed_in_tool: int = PydanticField(
        description="Of the failed tool calls, those that failed inside the agent's own tool."
    )
