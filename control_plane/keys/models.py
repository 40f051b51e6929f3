from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from control_plane.core import UTCDateTime, utcnow
from control_plane.jsontypes import JsonInt


class KeyProvider(SQLModel, table=True):
    """A provider whose API keys workspaces can store, with the rules a key must follow."""

    __tablename__ = "key_providers"

    id: str = Field(primary_key=True, max_length=32)
    display_name: str = Field(max_length=100)
    key_prefix: str = Field(default="", max_length=16)
    min_length: int = 20
    max_length: int = 256
    console_url: str = Field(default="", max_length=300)


class WorkspaceApiKey(SQLModel, table=True):
    """A provider key, encrypted with AES-256-GCM under the master key named by master_key_id."""

    __tablename__ = "workspace_api_keys"

    workspace_id: str = Field(
        primary_key=True,
        max_length=64,
        foreign_key="workspace_settings.workspace_id",
        ondelete="CASCADE",
    )
    provider: str = Field(primary_key=True, max_length=32, foreign_key="key_providers.id")
    ciphertext: str = Field(max_length=2048)
    nonce: str = Field(max_length=64)
    master_key_id: str = Field(max_length=64, index=True)
    last4: str = Field(max_length=4)
    fingerprint: str = Field(max_length=64)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_by: str = Field(max_length=200)


class ProviderKeyStatus(BaseModel):
    provider: str
    display_name: str
    configured: bool
    last4: str | None = None
    fingerprint: str | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None


class ApiKeysStatus(BaseModel):
    workspace_id: str
    keys: list[ProviderKeyStatus]


class ApiKeysUpdate(BaseModel):
    """Set (string), remove (null) or leave alone (absent) each provider's key.

    Fields are `<provider>_api_key` for every provider in the catalogue of key providers; xAI and
    OpenAI are spelled out here for the docs, others are accepted the same way.
    """

    model_config = ConfigDict(
        extra="allow",
        hide_input_in_errors=True,
        json_schema_extra={
            "propertyNames": {"pattern": r"^[a-z0-9]{2,32}_api_key$"},
            "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    )

    xai_api_key: SecretStr | None = PydanticField(default=None, description="xai-…")
    openai_api_key: SecretStr | None = PydanticField(default=None, description="sk-…")

    def requested_changes(self) -> dict[str, object]:
        """field → new key, or None to remove; only the fields the caller sent."""
        changes: dict[str, object] = {}
        for field in self.model_fields_set | set(self.model_extra or {}):
            value = (
                getattr(self, field, None)
                if field in type(self).model_fields
                else (self.model_extra or {})[field]
            )
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            changes[field] = value
        return changes


class KeyVerification(BaseModel):
    provider: str
    result: Literal["valid", "unreachable", "skipped"]
    detail: str


class ApiKeysUpdated(ApiKeysStatus):
    verification: list[KeyVerification]


class KeyProviderRead(BaseModel):
    id: str
    display_name: str
    key_prefix: str
    min_length: int
    max_length: int
    console_url: str


class KeyProviderWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: str = PydanticField(min_length=1, max_length=100)
    key_prefix: str = PydanticField(default="", max_length=16, pattern=r"^[A-Za-z0-9_-]*$")
    min_length: JsonInt = PydanticField(default=20, ge=8, le=512)
    max_length: JsonInt = PydanticField(default=256, ge=8, le=1024)
    console_url: str = PydanticField(default="", max_length=300)
