from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, StringConstraints
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Column, Numeric
from sqlmodel import Field, SQLModel

from control_plane.core import UTCDateTime, utcnow
from control_plane.jsontypes import JsonFloat, VisibleText200, a_json_number, omittable

PricingSource = Literal["seed", "operator-set"]
FeatureText = VisibleText200


class Tier(SQLModel, table=True):
    """A pricing tier: what a call costs and which engine and providers run it."""

    __tablename__ = "tiers"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=120)
    description: str = Field(max_length=1000)
    cost_per_hour: Decimal = Field(sa_column=Column(Numeric(10, 4), nullable=False))
    cost_per_minute: Decimal = Field(sa_column=Column(Numeric(10, 4), nullable=False))
    pricing_source: str = Field(default="seed", max_length=32)
    features: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    engine: str = Field(max_length=64)
    llm_provider: str = Field(max_length=64)
    llm_model: str = Field(max_length=128)
    stt_provider: str | None = Field(default=None, max_length=64)
    stt_model: str | None = Field(default=None, max_length=128)
    tts_provider: str | None = Field(default=None, max_length=64)
    tts_model: str | None = Field(default=None, max_length=128)
    telephony_provider: str = Field(max_length=64)
    voice_provider: str = Field(max_length=64)
    expected_latency_ms: int | None = None
    quality: str = Field(default="standard", max_length=64)
    flag_name: str | None = Field(default=None, max_length=128)
    sort_order: int = 0
    version: int = 1
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_by: str = Field(default="seed", max_length=200)


class Voice(SQLModel, table=True):
    __tablename__ = "voices"

    provider: str = Field(primary_key=True, max_length=64)
    name: str = Field(primary_key=True, max_length=64)
    description: str = Field(default="", max_length=500)
    is_default: bool = False
    sort_order: int = 0


class VoiceMap(SQLModel, table=True):
    """How voices of one provider translate into another's (OpenAI names → Grok voices)."""

    __tablename__ = "voice_maps"

    target_provider: str = Field(primary_key=True, max_length=64)
    source_provider: str = Field(max_length=64)
    default_voice: str = Field(max_length=64)
    version: int = 1
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_by: str = Field(default="seed", max_length=200)


class VoiceMapEntry(SQLModel, table=True):
    __tablename__ = "voice_map_entries"

    target_provider: str = Field(
        primary_key=True,
        max_length=64,
        foreign_key="voice_maps.target_provider",
        ondelete="CASCADE",
    )
    source_voice: str = Field(primary_key=True, max_length=64)
    target_voice: str = Field(max_length=64)


# --- API schemas ---------------------------------------------------------------------------


class ProviderConfig(BaseModel):
    llm_provider: str
    llm_model: str
    stt_provider: str | None
    stt_model: str | None
    tts_provider: str | None
    tts_model: str | None
    telephony_provider: str


class TierAvailability(BaseModel):
    workspace_id: str
    available: bool
    reason: str | None = None
    reason_code: str | None = None


class TierRead(BaseModel):
    id: str
    name: str
    description: str
    cost_per_hour: float
    cost_per_minute: float
    pricing_source: str
    features: list[str]
    engine: str
    provider_config: ProviderConfig
    voice_provider: str
    voices: list[str]
    expected_latency_ms: int | None
    quality: str
    flag_name: str | None
    version: int
    updated_at: datetime
    available: bool | None = None
    unavailable_reason: str | None = None
    unavailable_code: str | None = None


class TierList(BaseModel):
    tiers: list[TierRead]


class TierPatch(BaseModel):
    """Operator-editable catalogue fields; anything left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    name: str = omittable(min_length=1, max_length=120)
    description: str = omittable(max_length=1000)
    cost_per_hour: JsonFloat = omittable(ge=0, le=1000)
    cost_per_minute: JsonFloat = omittable(ge=0, le=100)
    pricing_source: PricingSource = omittable()
    features: list[FeatureText] = omittable(max_length=20)
    llm_model: str = omittable(min_length=1, max_length=128)
    stt_model: str | None = PydanticField(default=None, max_length=128)
    tts_model: str | None = PydanticField(default=None, max_length=128)
    telephony_provider: str = omittable(min_length=1, max_length=64)
    expected_latency_ms: (
        Annotated[int, PydanticField(ge=0, le=60_000), BeforeValidator(a_json_number)] | None
    ) = None
    quality: str = omittable(min_length=1, max_length=64)


class VoiceRead(BaseModel):
    provider: str
    name: str
    description: str
    is_default: bool


class VoiceList(BaseModel):
    voices: list[VoiceRead]


VoiceName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$"),
]


class VoiceMapRead(BaseModel):
    target_provider: str
    source_provider: str
    default_voice: str
    entries: dict[str, str]
    version: int
    updated_at: datetime
    updated_by: str


class VoiceMapWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_provider: str = PydanticField(default="openai", min_length=1, max_length=64)
    default_voice: VoiceName
    entries: dict[VoiceName, VoiceName] = PydanticField(
        max_length=500,
        # Say in the document what the code accepts: keys are voice names, nothing else.
        json_schema_extra={
            "additionalProperties": False,
            "propertyNames": {
                "minLength": 1,
                "maxLength": 64,
                "pattern": r"^\s*[A-Za-z0-9_.-]+\s*$",
            },
        },
    )


class VoiceResolution(BaseModel):
    target_provider: str
    requested: str
    voice: str
    matched: Literal["target_voice", "map_entry", "default"]
