"""The flag gate: one object per process that answers "is this flag on for this workspace?".

It keeps the evaluator loaded with the database's compiled features (embedded mode) or defers to
the Unleash SDK (scale mode), keeps each flag's stage for clear reasons, and pre-serializes the
Unleash client-API document with its ETag. Changes arrive through the change feed.
"""

import json
import logging
import threading
from collections import Counter
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlmodel import Session, col, select

from control_plane.changes import RESYNC, ChangeFeed
from control_plane.rollout.engine import (
    EmbeddedEvaluator,
    FlagEvaluator,
    UnleashAdmin,
    UnleashServerEvaluator,
    client_features_document,
)
from control_plane.rollout.models import Flag, FlagDecision, Stage
from control_plane.served import Served
from control_plane.settings import Settings

logger = logging.getLogger(__name__)

FLAGS_TOPIC = "flags"
# The client API document carries no secret, but each SDK polls for the newest: never cache it.
NO_STORE = "no-store"

REASONS: dict[str, tuple[str, str]] = {
    "killed": ("flag_killed", "is switched off for everyone by the kill switch"),
    "off": ("flag_off", "is not released to any workspace yet"),
    "internal": (
        "not_in_rollout",
        "is in internal alpha and this workspace is not in the internal cohort",
    ),
    "beta": (
        "not_in_rollout",
        "is in beta and this workspace is not in a beta cohort or the rollout percentage",
    ),
    "missing": ("flag_unknown", "is gated by a flag that does not exist"),
}


class FlagGate:
    def __init__(self, settings: Settings, engine: Engine, feed: ChangeFeed) -> None:
        self._engine = engine
        self._feed = feed
        self._environment = settings.unleash_environment
        self._meta: dict[str, tuple[Stage, bool]] = {}
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()
        self.evaluations: Counter[tuple[str, bool]] = Counter()
        self.client_document = Served.of(b"", NO_STORE)
        # Moved once the evaluator holds new state: answers built on older flags are stale.
        self.generation = 0
        self.evaluator: FlagEvaluator
        self.admin: UnleashAdmin | None = None
        if settings.scale_mode:
            self.evaluator = UnleashServerEvaluator(settings, on_new_state=self._evaluator_moved)
            self.admin = UnleashAdmin(settings)
        else:
            self.evaluator = EmbeddedEvaluator(settings)
        feed.subscribe(self._on_change)

    def _evaluator_moved(self) -> None:
        with self._lock:
            self.generation += 1

    @property
    def mode(self) -> str:
        return self.evaluator.mode

    def _on_change(self, topic: str) -> None:
        if topic in (FLAGS_TOPIC, RESYNC):
            try:
                self.reload()
            except (OperationalError, PoolTimeoutError):
                # The database is away (or no connection came free in time): keep evaluating
                # the flags we have until it is back.
                logger.warning(
                    "flags not reloaded: database unreachable; keeping the last known flags"
                )

    def reload(self) -> None:
        with Session(self._engine) as session:
            flags = session.exec(select(Flag).order_by(col(Flag.name))).all()
            features: list[dict[str, Any]] = [dict(f.definition) for f in flags]
            meta: dict[str, tuple[Stage, bool]] = {f.name: (f.stage, f.killed) for f in flags}  # type: ignore[misc]
            versions = {f.name: f.version for f in flags}
        body = json.dumps(
            client_features_document(features, self._environment), separators=(",", ":")
        ).encode()
        with self._lock:
            self.evaluator.load(features)
            self._meta = meta
            self._versions = versions
            self.client_document = Served.of(body, NO_STORE)
            self.generation += 1

    def sync_server(self) -> None:
        """Scale mode: create on the Unleash server whatever flags it does not have yet."""
        if self.admin is None:
            return
        self.admin.ensure_context_field()
        with Session(self._engine) as session:
            for flag in session.exec(select(Flag)):
                if not self.admin.exists(flag.name):
                    logger.info("creating flag %s on the Unleash server", flag.name)
                    self.admin.push(flag.definition)

    def push(self, session: Session, flag: Flag) -> None:
        """Make a changed flag take effect: on the server now, in every process after commit."""
        if self.admin is not None:
            self.admin.push(flag.definition)
        self._feed.publish(session, FLAGS_TOPIC)

    def stage_of(self, flag: str) -> tuple[Stage, bool] | None:
        return self._meta.get(flag)

    def version_of(self, flag: str) -> int:
        """The flag's version as loaded (0 when unknown): part of every gated config version."""
        return self._versions.get(flag, 0)

    def decide(self, flag: str, workspace_id: str, subject: str | None = None) -> FlagDecision:
        """Evaluate a flag for a workspace, with a reason a person can read when it is off."""
        meta = self._meta.get(flag)
        if meta is None:
            return self._closed(flag, workspace_id, "off", False, "missing", subject)
        stage, killed = meta
        enabled = self.evaluator.is_enabled(flag, workspace_id)
        self.evaluations[(flag, enabled)] += 1
        if enabled:
            return FlagDecision(
                flag=flag, workspace_id=workspace_id, enabled=True, stage=stage, killed=killed
            )
        return self._closed(
            flag, workspace_id, stage, killed, "killed" if killed else stage, subject
        )

    @staticmethod
    def _closed(
        flag: str, workspace_id: str, stage: Stage, killed: bool, why: str, subject: str | None
    ) -> FlagDecision:
        code, text = REASONS.get(why, REASONS["off"])
        return FlagDecision(
            flag=flag,
            workspace_id=workspace_id,
            enabled=False,
            stage=stage,
            killed=killed,
            reason=f"{subject or f'Flag {flag!r}'} {text}.",
            code=code,
        )

    def close(self) -> None:
        self.evaluator.close()
        if self.admin is not None:
            self.admin.close()
