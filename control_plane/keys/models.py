from datetime import datetime

from pydantic import BaseModel
from sqlmodel import Field, SQLModel

from control_plane.core import UTCDateTime, utcnow


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
