"""The product team's pages in a real Chromium: the insights page shows adoption, cost, NPS and
accuracy against the seed's targets with server-drawn charts, and the rollout console shows a
release plan's timeline and why it waits, and checks it on request."""

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from control_plane.app import create_app
from control_plane.auth.principal import SYSTEM
from control_plane.core import utcnow
from control_plane.demo import DEMO_PASSWORD, seed_demo
from control_plane.insights import service as insights
from control_plane.insights.models import FeedbackWrite
from control_plane.releases import service as releases
from control_plane.releases.models import Milestone, PlanWrite
from control_plane.settings import Settings
from control_plane.telemetry import service as telemetry
from control_plane.telemetry.models import CallReportIn
from control_plane.workspaces import service as workspaces
from control_plane.workspaces.models import AgentCreate
from tests.conftest import issued_grok_call
from tests.e2e.test_pages import SCREENSHOTS
from tests.fakes.server import BackgroundServer

pytestmark = pytest.mark.browser


def seed_a_launch(app: Any) -> None:
    """Two weeks: 50 new agents with the demo's four (3 on Grok: 6 %), Grok calls with ratings,
    and a release plan."""
    now = utcnow()
    with Session(app.state.engine) as session:
        for index in range(45):
            workspaces.create_agent(
                session,
                SYSTEM,
                "globex",
                AgentCreate(name=f"p{index}", pricing_tier="premium", voice="alloy"),
                gate=None,
            ).created_at = now - timedelta(days=index % 14)
        for index in range(1):
            workspaces.create_agent(
                session,
                SYSTEM,
                "acme",
                AgentCreate(name=f"g{index}", pricing_tier="grok-realtime", voice="Ara"),
                gate=None,
            ).created_at = now - timedelta(days=index * 4)
        reports = []
        for index in range(12):
            call = issued_grok_call("acme", now, agent_id="agt_x")
            session.add(call)
            reports.append(
                CallReportIn(
                    call_id=call.id,
                    started_at=now - timedelta(days=index % 7, minutes=5),
                    time_to_first_audio_ms=650.0,
                    end_reason="caller_hangup",
                    completed=True,
                    duration_ms=240_000,
                )
            )
        session.flush()
        telemetry.ingest(session, app.state.flag_gate, reports, now=now)
        for report, score in zip(reports, [10, 9, 9, 10, 7, 9, 10, 4, 9, 10, 9, 8], strict=True):
            insights.record_feedback(session, SYSTEM, report.call_id, FeedbackWrite(score=score))
        plan = PlanWrite(
            milestones=[
                Milestone(
                    name="internal alpha", stage="internal", min_dwell_hours=72, min_calls=50
                ),
                Milestone(name="beta 10 %", stage="beta", beta_percentage=10),
                Milestone(name="GA", stage="ga"),
            ]
        )
        releases.put_plan(session, app.state.flag_gate, "grok-realtime-tier", plan, actor="test")
        session.commit()


@pytest.fixture
def site(tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    database = tmp_path / "insights.db"
    shutil.copyfile(sqlite_template, database)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        environment="test",
        database_url=f"sqlite:///{database}",
        master_key_file=tmp_path / "master.key",
        maintenance_interval_seconds=0,
    )
    app = create_app(settings)
    with BackgroundServer(app) as server:
        with Session(app.state.engine) as session:
            seed_demo(session, app.state.passwords)
            session.commit()
        seed_a_launch(app)
        yield server.base_url


def signed_in_admin(browser: Any, site: str) -> Any:
    page = browser.new_page()
    page.goto(f"{site}/login")
    page.get_by_label("Email").fill("admin@example.com")
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{site}/tiers")
    return page


def test_the_insights_page_shows_the_launch_against_its_targets(browser: Any, site: str) -> None:
    page = signed_in_admin(browser, site)
    page.get_by_role("link", name="Insights").click()
    page.wait_for_url(f"{site}/insights")
    adoption = page.locator("#adoption")
    assert "3 of 50" in adoption.inner_text()
    assert adoption.locator("[data-value]").first.get_attribute("data-value") == "0.06"
    assert adoption.locator("[data-verdict=met]").count() == 1
    chart = adoption.locator("svg.chart")
    assert chart.locator("line.target").get_attribute("data-target") == "5"
    assert "target 5.0%" in chart.inner_html()
    nps = page.locator("#nps")
    assert "ratings" in nps.inner_text() and nps.locator("[data-verdict=met]").count() >= 1
    assert nps.locator("svg.chart line.target").get_attribute("data-target") == "40"
    usage = page.locator("#usage tr[data-tier=grok-realtime]")
    assert usage.locator("td").all_inner_texts() == ["grok-realtime", "12", "48.0", "$2.40"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "insights.png"), full_page=True)


def test_the_console_shows_the_plan_timeline_and_why_it_waits(browser: Any, site: str) -> None:
    page = signed_in_admin(browser, site)
    page.goto(f"{site}/rollout")
    steps = page.locator("#flag-grok-realtime-tier .timeline .milestone")
    assert [steps.nth(i).get_attribute("data-state") for i in range(3)] == [
        "current",
        "next",
        "next",
    ]
    page.locator("#flag-grok-realtime-tier").get_by_role("button", name="Check now").click()
    page.wait_for_url("**/rollout?done=*")
    status = page.locator("#flag-grok-realtime-tier [data-plan-status]")
    assert status.get_attribute("data-plan-status") == "waiting"
    assert "h more at internal alpha" in status.inner_text()
    assert page.locator("#flag-grok-realtime-tier svg.chart line.target").count() == 1
    page.screenshot(path=str(SCREENSHOTS / "rollout-plan.png"), full_page=True)
