"""The audit log: every change to keys, catalogue, flags and cohorts, newest first."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from control_plane.audit.models import AuditEntry


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    workspace_id: str | None = None,
    target: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        actor=actor,
        action=action,
        workspace_id=workspace_id,
        target=target,
        before=before,
        after=after,
        details=details,
    )
    session.add(entry)
    session.flush()
    return entry


def list_entries(
    session: Session,
    *,
    workspace_id: str | None = None,
    action: str | None = None,
    actor: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> Sequence[AuditEntry]:
    query = select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit)
    if workspace_id is not None:
        query = query.where(AuditEntry.workspace_id == workspace_id)
    if action is not None:
        # "key" matches key.set, key.replace, ...; "key.set" matches exactly.
        query = query.where(
            (col(AuditEntry.action) == action) | col(AuditEntry.action).startswith(action + ".")
        )
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if target is not None:
        query = query.where(AuditEntry.target == target)
    if since is not None:
        query = query.where(col(AuditEntry.at) >= since)
    if until is not None:
        query = query.where(col(AuditEntry.at) < until)
    if before_id is not None:
        query = query.where(col(AuditEntry.id) < before_id)
    return session.exec(query).all()
