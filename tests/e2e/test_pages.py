"""The pages in a real Chromium (Debian's, driven by Playwright): sign-in, keys, agents with Grok
voices, the catalogue's gate and the rollout console. Each page is saved as a screenshot under
test-output/screenshots/ (or $SWITCHBOARD_TEST_OUTPUT/screenshots/)."""

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from control_plane.app import create_app
from control_plane.auth.passwords import Passwords
from control_plane.db import make_engine
from control_plane.demo import DEMO_PASSWORD, seed_demo
from control_plane.settings import Settings
from control_plane.telemetry import service as telemetry
from control_plane.telemetry.models import CallReportIn
from tests.conftest import issued_grok_call
from tests.fakes.server import BackgroundServer

pytestmark = pytest.mark.browser

XAI_KEY = "xai-" + "BrowserTestKey0123456789ab" + "Zq7W"
SCREENSHOTS = Path(os.environ.get("SWITCHBOARD_TEST_OUTPUT", "test-output")) / "screenshots"


@contextmanager
def demo_site(
    tmp_path: Path, sqlite_template: Path, prepare: Callable[[Session], None] | None = None
) -> Iterator[str]:
    """The demo on a fresh SQLite copy, served; `prepare` adds to its data first."""
    database = tmp_path / "pages.db"
    shutil.copyfile(sqlite_template, database)
    settings = Settings(
        _env_file=None,
        environment="test",
        database_url=f"sqlite:///{database}",
        master_key_file=tmp_path / "master.key",
    )  # type: ignore[call-arg]
    engine = make_engine(settings)
    with Session(engine) as session:
        seed_demo(session, Passwords(settings.password_hash_cost))
        if prepare is not None:
            prepare(session)
        session.commit()
    engine.dispose()
    with BackgroundServer(create_app(settings)) as server:
        yield server.base_url


@pytest.fixture
def site(tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    with demo_site(tmp_path, sqlite_template) as url:
        yield url


def sign_in(browser: Any, site: str, email: str) -> Any:
    page = browser.new_page()
    page.goto(f"{site}/tiers")
    assert page.url.startswith(f"{site}/login")  # pages need a session
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.keyboard.press("Enter")  # the form works from the keyboard
    page.wait_for_url(f"{site}/tiers")
    return page


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def availability(page: Any, site: str, tier: str, workspace: str | None = None) -> str:
    page.goto(f"{site}/tiers" + (f"?workspace_id={workspace}" if workspace else ""))
    return str(page.locator(f"#tier-{tier} [data-availability]").get_attribute("data-availability"))


def test_sign_in_and_the_catalogue(browser: Any, site: str) -> None:
    page = sign_in(browser, site, "admin@example.com")
    assert page.locator(".card.tier").count() == 5
    grok = page.locator("#tier-grok-realtime")
    assert (
        "Grok Realtime" in grok.inner_text()
        and "$3.00" in grok.inner_text()
        and "~780 ms" in grok.inner_text()
    )
    shot(page, "tiers")
    bad = browser.new_page()
    bad.goto(f"{site}/login")
    bad.get_by_label("Email").fill("admin@example.com")
    bad.get_by_label("Password").fill("wrong password!")
    bad.get_by_role("button", name="Sign in").click()
    assert "Email or password is wrong" in bad.locator("[role=alert]").inner_text()
    response = page.request.get(f"{site}/tiers")
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    assert response.headers["x-frame-options"] == "DENY"


def test_set_an_xai_key_and_see_only_its_last_four(browser: Any, site: str) -> None:
    page = sign_in(browser, site, "ava@acme.example")
    page.goto(f"{site}/workspaces/acme/settings/api-keys")
    field = page.get_by_role("textbox", name="xAI API key")
    assert (
        field.get_attribute("type") == "password"
        and field.get_attribute("placeholder") == "xai-..."
    )
    assert "Required for Grok Realtime tier" in page.locator("#key-xai").inner_text()
    assert page.locator("#key-xai a[href='https://console.x.ai']").count() == 1
    field.fill("not-a-key")
    page.locator("#key-xai").get_by_role("button", name="Save").click()
    assert "start with 'xai-'" in page.locator("#error-xai").inner_text()
    assert "not-a-key" not in page.content()
    page.get_by_role("textbox", name="xAI API key").fill(XAI_KEY)
    page.locator("#key-xai").get_by_role("button", name="Save").click()
    page.wait_for_url("**saved=xai")
    assert page.locator("#key-xai .last4").inner_text() == "Zq7W"
    assert XAI_KEY not in page.content() and XAI_KEY[4:-4] not in page.content()
    shot(page, "api-keys")
    page.locator("#key-xai").get_by_role("button", name="Remove").click()
    assert page.locator("#key-xai [data-key-status]").get_attribute("data-key-status") == "missing"


def test_grok_agent_from_an_openai_voice_gets_the_mapped_voice(browser: Any, site: str) -> None:
    page = sign_in(browser, site, "ava@acme.example")
    page.goto(f"{site}/workspaces/acme/settings/api-keys")
    page.get_by_role("textbox", name="xAI API key").fill(XAI_KEY)
    page.locator("#key-xai").get_by_role("button", name="Save").click()
    page.goto(f"{site}/workspaces/acme/agents/new")
    page.get_by_label("Name").fill("Nova on Grok")
    page.get_by_label("Pricing tier").select_option("premium")
    page.get_by_label("Voice").select_option("shimmer")
    page.get_by_label("Pricing tier").select_option("grok-realtime")
    voices = page.locator("#voice option").all_inner_texts()
    assert voices == ["Ara", "Rex", "Sal", "Eve", "Leo"]
    assert page.get_by_label("Voice").input_value() == "Eve"  # shimmer → Eve
    assert page.locator("#xai-key-warning").is_hidden()
    shot(page, "agent-form")
    page.get_by_role("button", name="Create agent").click()
    page.wait_for_url(f"{site}/workspaces/acme/agents")
    row = page.locator("tr[data-agent='Nova on Grok']")
    assert row.locator(".resolved-voice").inner_text() == "Eve"
    shot(page, "agents")


def test_warning_without_a_key_and_disabled_tiers(browser: Any, site: str) -> None:
    member = sign_in(browser, site, "gus@globex.example")
    member.goto(f"{site}/workspaces/globex/agents/new")
    option = member.locator("#pricing_tier option[value='grok-realtime']")
    assert option.is_disabled()  # globex is outside the internal alpha
    assert "internal alpha" in option.inner_text()

    admin = sign_in(browser, site, "admin@example.com")
    admin.goto(f"{site}/rollout")
    admin.get_by_label("internal", exact=False).first.fill("acme\nglobex")
    admin.get_by_role("button", name="Save internal").click()

    member.goto(f"{site}/workspaces/globex/agents/new")
    member.get_by_label("Pricing tier").select_option("grok-realtime")
    warning = member.locator("#xai-key-warning")
    assert warning.is_visible()
    assert warning.locator("a").get_attribute("href") == "/workspaces/globex/settings/api-keys"
    shot(member, "agent-form-missing-key")


def test_beta_cohort_makes_the_tier_available_and_kill_switch(browser: Any, site: str) -> None:
    admin = sign_in(browser, site, "admin@example.com")
    assert availability(admin, site, "grok-realtime", "globex") == "unavailable"
    assert availability(admin, site, "grok-realtime", "acme") == "available"

    admin.goto(f"{site}/rollout")
    admin.locator("#members-beta-1").fill("globex")
    admin.get_by_role("button", name="Save beta-1").click()
    admin.get_by_label("Move to").select_option("beta")
    admin.get_by_role("button", name="Set stage").click()
    assert admin.locator("[data-stage]").inner_text() == "beta"
    assert admin.locator(".stepper li[aria-current=step]").inner_text() == "Beta"
    split = admin.locator(".first-audio-split").first.inner_text()
    assert "where the time goes" in split and "warm starts" in split
    assert availability(admin, site, "grok-realtime", "globex") == "available"

    admin.goto(f"{site}/rollout")
    admin.get_by_label("Reason").fill("latency spike")
    admin.get_by_label("I understand this turns it off for everyone").check()
    admin.once("dialog", lambda dialog: dialog.accept())
    admin.get_by_role("button", name="Kill switch").click()
    assert admin.locator("[data-flag-state=killed]").is_visible()
    shot(admin, "rollout-killed")
    unavailable = availability(admin, site, "grok-realtime", "acme")
    assert unavailable == "unavailable"
    assert "kill switch" in admin.locator("#tier-grok-realtime").inner_text()

    admin.goto(f"{site}/rollout")
    admin.get_by_role("button", name="Resume (back to beta)").click()
    assert admin.locator("[data-flag-state=killed]").count() == 0
    assert availability(admin, site, "grok-realtime", "globex") == "available"
    admin.goto(f"{site}/rollout?action=flag")
    audit = admin.locator("table").last.inner_text()
    assert "flag.kill" in audit and "flag.resume" in audit
    shot(admin, "rollout")


def test_pages_refuse_forged_forms_and_foreign_workspaces(browser: Any, site: str) -> None:
    page = sign_in(browser, site, "gus@globex.example")
    forged = page.request.post(
        f"{site}/workspaces/globex/settings/api-keys",
        form={"provider": "xai", "api_key": XAI_KEY, "csrf": "forged"},
    )
    assert forged.status == 403
    page.goto(f"{site}/workspaces/acme/settings/api-keys")
    assert "not found" in page.locator("[role=alert]").inner_text()
    page.goto(f"{site}/rollout")
    assert "product admins" in page.locator("[role=alert]").inner_text()


def calls_of_the_last_minutes(session: Session) -> None:
    """acme's 40 calls all failed at xAI, globex's 30 ran fine, 5 of globex's failed on its
    own key; the guard acts from 10 calls."""
    now = datetime.now(UTC)
    telemetry.get_guard(session, "grok-realtime-tier").min_calls = 10
    reports = []
    for workspace_id, count, end_reason in (
        ("acme", 40, "xai_error"),
        ("globex", 30, "caller_hangup"),
        ("globex", 5, "xai_key_refused"),
    ):
        for _ in range(count):
            call = issued_grok_call(workspace_id, now)
            session.add(call)
            reports.append(
                CallReportIn(
                    call_id=call.id,
                    started_at=now - timedelta(minutes=1),
                    time_to_first_audio_ms=600.0,
                    end_reason=end_reason,
                    completed=end_reason == "caller_hangup",
                    duration_ms=60_000,
                )
            )
    session.flush()
    telemetry.ingest(session, None, reports, now=now)


@pytest.fixture
def site_with_calls(tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    with demo_site(tmp_path, sqlite_template, calls_of_the_last_minutes) as url:
        yield url


def test_the_console_says_who_the_calls_came_from(browser: Any, site_with_calls: str) -> None:
    admin = sign_in(browser, site_with_calls, "admin@example.com")
    admin.goto(f"{site_with_calls}/rollout")
    overall = admin.locator(".evidence[data-cohort='all cohorts']").first.inner_text()
    assert overall.startswith("70 calls from 2 workspaces; largest share 57 %")
    assert "(largest: acme)" in overall and "left out, not the tier's fault: 5 workspace" in overall
    held_back = admin.locator(".held-back").first.inner_text()
    assert "overall: call_completion" in held_back and "not without workspace acme" in held_back
    shot(admin, "rollout-evidence")
