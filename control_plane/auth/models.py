from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from control_plane.core import UTCDateTime, utcnow

ADMIN_SCOPE = "admin"
SERVICE_SCOPE = "service"
WORKSPACE_SCOPE_PREFIX = "workspace:"


class ApiToken(SQLModel, table=True):
    """A machine credential. Only a hash of the token is stored; the token is shown once."""

    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    token_prefix: str = Field(max_length=16)
    scopes: list[str] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class User(SQLModel, table=True):
    """A person who signs in to the pages: a product admin, or a member of one workspace."""

    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254, unique=True, index=True)
    password_hash: str = Field(max_length=200)
    role: str = Field(max_length=16)  # "admin" or "member"
    workspace_id: str | None = Field(
        default=None, max_length=64, foreign_key="workspaces.id", ondelete="CASCADE"
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Bumped on sign-out and password change: cookies that carry an older one are refused.
    session_version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class SignInThrottle(SQLModel, table=True):
    """Failed sign-ins per account ("account:<email>") and per client address ("address:<ip>"),
    kept in the database so every process sees the same count."""

    __tablename__ = "sign_in_throttles"

    key: str = Field(primary_key=True, max_length=300)
    failures: int = 0
    locked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)


def validate_scope(scope: str) -> str:
    if scope in (ADMIN_SCOPE, SERVICE_SCOPE):
        return scope
    if scope.startswith(WORKSPACE_SCOPE_PREFIX) and len(scope) > len(WORKSPACE_SCOPE_PREFIX):
        return scope
    raise ValueError(f"unknown scope {scope!r}: use admin, service or workspace:<id>")


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = PydanticField(min_length=1, max_length=200)
    scopes: list[
        Annotated[str, StringConstraints(pattern=r"^(admin|service|workspace:.+)$", max_length=80)]
    ] = PydanticField(min_length=1, max_length=20)

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, scopes: list[str]) -> list[str]:
        if not scopes:
            raise ValueError("at least one scope is required")
        return [validate_scope(s) for s in scopes]


class TokenRead(BaseModel):
    id: int
    name: str
    token_prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


class TokenList(BaseModel):
    tokens: list[TokenRead]
    next_cursor: str | None = PydanticField(
        default=None, description="Pass as ?cursor= for the next page; null on the last page."
    )


class TokenCreated(TokenRead):
    token: str
