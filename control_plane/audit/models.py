from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from control_plane.core import UTCDateTime, utcnow


class AuditEntry(SQLModel, table=True):
    """One change: who, when, what, before and after. Never holds secret material."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    actor: str = Field(max_length=200, index=True)
    action: str = Field(max_length=64, index=True)
    workspace_id: str | None = Field(default=None, max_length=64, index=True)
    target: str | None = Field(default=None, max_length=200, index=True)
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    after: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    details: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class AuditEntryRead(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    workspace_id: str | None
    target: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    details: dict[str, Any] | None


class AuditPage(BaseModel):
    entries: list[AuditEntryRead]
    next_before_id: int | None
    next_cursor: str | None = None
