"""The control plane's own schedule (`control_plane/maintenance.py`), run by the app's lifespan
on the real clock: a release plan whose milestone is done dwelling advances by itself and a
transcript past its retention is deleted, with nobody calling the API. A twin with the job
switched off (interval 0) shows neither happens on its own."""

import shutil
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from control_plane.app import create_app
from control_plane.audit.models import AuditEntry
from control_plane.core import utcnow
from control_plane.demo import seed_demo
from control_plane.insights.models import CallTranscript
from control_plane.releases import service as releases
from control_plane.releases.models import Milestone, PlanWrite
from control_plane.rollout import service as rollout
from control_plane.settings import Settings
from tests.conftest import issued_grok_call

FLAG = "grok-realtime-tier"
PLAN = PlanWrite(
    milestones=[
        Milestone(name="internal alpha", stage="internal", min_dwell_hours=0, min_calls=0),
        Milestone(name="beta 10 %", stage="beta", beta_percentage=10),
    ]
)


def launch(tmp_path: Path, sqlite_template: Path, interval: float) -> TestClient:
    database = tmp_path / "maintenance.db"
    shutil.copyfile(sqlite_template, database)
    app = create_app(
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            environment="test",
            database_url=f"sqlite:///{database}",
            master_key_file=tmp_path / "master.key",
            maintenance_interval_seconds=interval,
        )
    )
    with Session(app.state.engine) as session:
        seed_demo(session, app.state.passwords)
        releases.put_plan(session, app.state.flag_gate, FLAG, PLAN, actor="test")
        now = utcnow()
        call = issued_grok_call("acme", now - timedelta(days=40), agent_id="agt_old", state="ended")
        session.add(call)
        session.flush()
        session.add(
            CallTranscript(
                call_id=call.id,
                workspace_id="acme",
                tier="grok-realtime",
                entries=[{"role": "caller", "text": "an old call"}],
                caller_text="an old call",
                created_at=now - timedelta(days=40),
                kept_until=now - timedelta(days=10),
            )
        )
        session.commit()
    return TestClient(app)


def world(client: TestClient) -> tuple[str, int, int, int]:
    """The flag's stage, its beta share, transcripts kept, automatic steps audited."""
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        flag = rollout.get_flag(session, FLAG)
        transcripts = len(session.exec(select(CallTranscript)).all())
        steps = session.exec(
            select(AuditEntry).where(col(AuditEntry.action) == "flag.auto_advance")
        ).all()
        return flag.stage, flag.beta_percentage, transcripts, len(steps)


def wait_for(client: TestClient, wanted: tuple[str, int, int, int], seconds: float) -> tuple:
    deadline = time.monotonic() + seconds
    while (seen := world(client)) != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    return seen


@pytest.fixture
def scheduled(tmp_path: Path, sqlite_template: Path) -> Iterator[TestClient]:
    with launch(tmp_path, sqlite_template, interval=0.2) as client:
        yield client


@pytest.fixture
def unscheduled(tmp_path: Path, sqlite_template: Path) -> Iterator[TestClient]:
    with launch(tmp_path, sqlite_template, interval=0) as client:
        yield client


def test_the_schedule_advances_a_ready_plan_and_deletes_old_transcripts(
    scheduled: TestClient,
) -> None:
    assert wait_for(scheduled, ("beta", 10, 0, 1), seconds=20) == ("beta", 10, 0, 1)
    with Session(scheduled.app.state.engine) as session:  # type: ignore[attr-defined]
        step = session.exec(
            select(AuditEntry).where(col(AuditEntry.action) == "flag.auto_advance")
        ).one()
        assert step.actor == releases.PLAN_ACTOR
        assert step.details["from"] == "internal alpha" and step.details["to"] == "beta 10 %"


def test_without_the_schedule_nothing_moves_by_itself(unscheduled: TestClient) -> None:
    # Two seconds: ten rounds of the interval the scheduled twin runs at.
    assert wait_for(unscheduled, ("beta", 10, 0, 1), seconds=2) == ("internal", 0, 1, 0)
