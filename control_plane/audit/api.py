from typing import Annotated

from fastapi import APIRouter, Query

from control_plane.audit import service
from control_plane.audit.models import AuditEntryRead, AuditPage
from control_plane.auth.deps import AdminDep
from control_plane.deps import SessionDep
from control_plane.jsontypes import IsoDateTime
from control_plane.pagination import (
    DEFAULT_LIMIT,
    CursorQuery,
    LimitQuery,
    decode_cursor,
    encode_cursor,
)

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("", response_model=AuditPage)
def list_audit(
    session: SessionDep,
    _admin: AdminDep,
    workspace_id: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[
        str | None, Query(max_length=64, description="e.g. key or key.replace")
    ] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    target: Annotated[str | None, Query(max_length=200)] = None,
    since: IsoDateTime | None = None,
    until: IsoDateTime | None = None,
    before_id: Annotated[
        int | None, Query(ge=1, le=2**62, description="page: entries older than this id")
    ] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> AuditPage:
    # The cursor every list takes ("" is the first page); before_id stays for older clients.
    if cursor:
        before_id = decode_cursor(cursor, [int])[0]
    entries = service.list_entries(
        session,
        workspace_id=workspace_id,
        action=action,
        actor=actor,
        target=target,
        since=since,
        until=until,
        before_id=before_id,
        limit=limit,
    )
    reads = [AuditEntryRead.model_validate(e, from_attributes=True) for e in entries]
    next_before = reads[-1].id if len(reads) == limit else None
    return AuditPage(
        entries=reads,
        next_before_id=next_before,
        next_cursor=encode_cursor([next_before]) if next_before is not None else None,
    )
