"""Rollout plans: flags move off → internal → beta → GA over cohorts of workspaces, with a kill
switch. Every change recompiles the Unleash feature, is audited, and takes effect through the gate.
"""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from control_plane.audit import service as audit
from control_plane.core import utcnow
from control_plane.errors import ConflictError, InvalidInputError, NotFoundError
from control_plane.resources import resource_dir
from control_plane.rollout.compiler import compile_feature
from control_plane.rollout.gate import FlagGate
from control_plane.rollout.models import STAGES, Cohort, CohortWrite, Flag, RolloutChange
from control_plane.workspaces.models import Workspace

FLAGS_DIR = resource_dir("flags")


def _snapshot(flag: Flag) -> dict[str, Any]:
    return {
        "stage": flag.stage,
        "killed": flag.killed,
        "internal_cohorts": list(flag.internal_cohorts),
        "beta_cohorts": list(flag.beta_cohorts),
        "beta_percentage": flag.beta_percentage,
    }


def list_flags(session: Session) -> Sequence[Flag]:
    return session.exec(select(Flag).order_by(col(Flag.name))).all()


def get_flag(session: Session, name: str) -> Flag:
    flag = session.get(Flag, name)
    if flag is None:
        raise NotFoundError(f"Flag '{name}' does not exist.", code="flag_not_found")
    return flag


def cohort_members(session: Session) -> dict[str, list[str]]:
    return {c.name: list(c.members) for c in session.exec(select(Cohort))}


def _recompile(session: Session, flag: Flag) -> None:
    flag.definition = compile_feature(
        name=flag.name,
        description=flag.description,
        stage=flag.stage,
        killed=flag.killed,
        internal_cohorts=flag.internal_cohorts,
        beta_cohorts=flag.beta_cohorts,
        beta_percentage=flag.beta_percentage,
        cohorts=cohort_members(session),
    )


def _save(
    session: Session,
    gate: FlagGate | None,
    flag: Flag,
    *,
    actor: str,
    action: str,
    before: dict[str, Any] | None,
    details: dict[str, Any] | None = None,
) -> Flag:
    """Recompile, bump the version, audit, and make the change take effect."""
    _recompile(session, flag)
    flag.version += 1
    flag.updated_at = utcnow()
    flag.updated_by = actor
    session.add(flag)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=action,
        target=flag.name,
        before=before,
        after=_snapshot(flag),
        details=details,
    )
    if gate is not None:
        gate.push(session, flag)
    return flag


def set_stage(
    session: Session, gate: FlagGate | None, name: str, stage: str, *, actor: str
) -> Flag:
    flag = get_flag(session, name)
    if stage not in STAGES:
        raise InvalidInputError(
            f"Unknown stage '{stage}': use one of {', '.join(STAGES)}.", code="invalid_stage"
        )
    if flag.killed:
        raise ConflictError(
            f"Flag '{name}' is killed; resume it before changing its stage.", code="flag_killed"
        )
    before = _snapshot(flag)
    flag.stage = stage
    return _save(session, gate, flag, actor=actor, action="flag.stage", before=before)


def _check_cohorts(session: Session, names: Sequence[str]) -> list[str]:
    missing = [n for n in names if session.get(Cohort, n) is None]
    if missing:
        raise InvalidInputError(f"Unknown cohorts: {', '.join(missing)}.", code="unknown_cohort")
    return list(dict.fromkeys(names))


def set_rollout(
    session: Session, gate: FlagGate | None, name: str, change: RolloutChange, *, actor: str
) -> Flag:
    flag = get_flag(session, name)
    before = _snapshot(flag)
    if change.percentage is not None:
        flag.beta_percentage = change.percentage
    if change.internal_cohorts is not None:
        flag.internal_cohorts = _check_cohorts(session, change.internal_cohorts)
    if change.beta_cohorts is not None:
        flag.beta_cohorts = _check_cohorts(session, change.beta_cohorts)
    return _save(session, gate, flag, actor=actor, action="flag.rollout", before=before)


def kill(
    session: Session, gate: FlagGate | None, name: str, *, actor: str, reason: str | None = None
) -> Flag:
    flag = get_flag(session, name)
    before = _snapshot(flag)
    flag.killed = True
    return _save(
        session,
        gate,
        flag,
        actor=actor,
        action="flag.kill",
        before=before,
        details={"reason": reason} if reason else None,
    )


def resume(session: Session, gate: FlagGate | None, name: str, *, actor: str) -> Flag:
    flag = get_flag(session, name)
    if not flag.killed:
        raise ConflictError(f"Flag '{name}' is not killed.", code="flag_not_killed")
    before = _snapshot(flag)
    flag.killed = False
    return _save(session, gate, flag, actor=actor, action="flag.resume", before=before)


# --- cohorts --------------------------------------------------------------------------------


def list_cohorts(session: Session) -> Sequence[Cohort]:
    return session.exec(select(Cohort).order_by(col(Cohort.name))).all()


def get_cohort(session: Session, name: str) -> Cohort:
    cohort = session.get(Cohort, name)
    if cohort is None:
        raise NotFoundError(f"Cohort '{name}' does not exist.", code="cohort_not_found")
    return cohort


def put_cohort(
    session: Session, gate: FlagGate | None, name: str, body: CohortWrite, *, actor: str
) -> Cohort:
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", name):
        raise InvalidInputError(
            "Cohort names use lowercase letters, digits, '-' and '_' (at most 63).",
            code="invalid_cohort",
        )
    members = list(dict.fromkeys(m.strip() for m in body.members))
    known = (
        set(session.exec(select(Workspace.id).where(col(Workspace.id).in_(members))).all())
        if members
        else set()
    )
    unknown = [m for m in members if m not in known]
    if unknown:
        shown = ", ".join(unknown[:10]) + (" …" if len(unknown) > 10 else "")
        raise InvalidInputError(
            f"Unknown workspaces: {shown}. Nothing was changed.", code="unknown_workspace"
        )
    cohort = session.get(Cohort, name)
    before = {"members": list(cohort.members)} if cohort else None
    if cohort is None:
        cohort = Cohort(name=name, version=0)
    cohort.members = sorted(members)
    if body.description is not None:
        cohort.description = body.description
    cohort.version += 1
    cohort.updated_at = utcnow()
    cohort.updated_by = actor
    session.add(cohort)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="cohort.put",
        target=name,
        before=before,
        after={"members": cohort.members},
    )
    for flag in list_flags(session):
        if name in flag.internal_cohorts or name in flag.beta_cohorts:
            _save(
                session,
                gate,
                flag,
                actor=actor,
                action="flag.recompile",
                before=_snapshot(flag),
                details={"cohort": name},
            )
    return cohort


# --- definitions on disk --------------------------------------------------------------------


def export_definitions(session: Session) -> dict[str, Any]:
    """Flags in Unleash's feature format (plus our rollout plan under `switchboard`) and cohorts."""
    return {
        "version": 1,
        "features": [
            {**flag.definition, "switchboard": _snapshot(flag)} for flag in list_flags(session)
        ],
        "cohorts": {
            c.name: {"description": c.description, "members": list(c.members)}
            for c in list_cohorts(session)
        },
    }


def import_definitions(
    session: Session,
    gate: FlagGate | None,
    document: dict[str, Any],
    *,
    actor: str,
    only_missing: bool = False,
) -> dict[str, int]:
    """Load exported definitions. Cohort members that are not workspaces here are dropped."""
    counts = {"flags": 0, "cohorts": 0}
    existing_workspaces = set(session.exec(select(Workspace.id)).all())
    for name, spec in (document.get("cohorts") or {}).items():
        if only_missing and session.get(Cohort, name) is not None:
            continue
        cohort = session.get(Cohort, name) or Cohort(name=name, version=0)
        cohort.description = spec.get("description", "")
        cohort.members = sorted(m for m in spec.get("members", []) if m in existing_workspaces)
        cohort.version += 1
        cohort.updated_at = utcnow()
        cohort.updated_by = actor
        session.add(cohort)
        counts["cohorts"] += 1
    session.flush()
    for feature in document.get("features") or []:
        name = feature.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInputError("Every feature needs a name.", code="invalid_flag_definition")
        if only_missing and session.get(Flag, name) is not None:
            continue
        plan = feature.get("switchboard") or {}
        stage = plan.get("stage", "off")
        if stage not in STAGES:
            raise InvalidInputError(
                f"Flag '{name}': unknown stage '{stage}'.", code="invalid_stage"
            )
        flag = session.get(Flag, name) or Flag(name=name, version=0)
        before = _snapshot(flag) if flag.version else None
        flag.description = feature.get("description", "")
        flag.stage = stage
        flag.killed = bool(plan.get("killed", False))
        flag.internal_cohorts = list(plan.get("internal_cohorts", ["internal"]))
        flag.beta_cohorts = list(plan.get("beta_cohorts", []))
        flag.beta_percentage = int(plan.get("beta_percentage", 0))
        _save(session, gate, flag, actor=actor, action="flag.import", before=before)
        counts["flags"] += 1
    return counts


def load_definitions_dir(directory: Path = FLAGS_DIR) -> dict[str, Any]:
    """Read flags/*.json (one Unleash feature per file) and flags/cohorts.json."""
    features = []
    cohorts: dict[str, Any] = {}
    for path in sorted(directory.glob("*.json")):
        document = json.loads(path.read_text())
        if path.name == "cohorts.json":
            cohorts = document
        else:
            features.append(document)
    return {"version": 1, "features": features, "cohorts": cohorts}


def seed_flags(session: Session, gate: FlagGate | None = None) -> dict[str, int]:
    """First start: load the definitions in flags/ for whatever is not in the database yet."""
    return import_definitions(
        session, gate, load_definitions_dir(), actor="seed", only_missing=True
    )
