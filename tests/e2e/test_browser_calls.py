"""Test calls and CORS in a real Chromium (Debian's, driven by Playwright).

The agent page's test call with Chromium's fake microphone playing a WAV made here, against the
control plane, the call worker and the fake xAI on loopback: xAI hears non-silent PCM16 at
24 kHz, the agent's audio is played (the page counts the samples), both transcripts appear,
stopping ends the call and a report arrives. A workspace without an xAI key sees the seed's
message; a member of another workspace cannot mint a token for this agent; a used token is
refused. Then CORS as Chromium enforces it: a page on a second loopback origin reads the
catalogue when that origin is listed, is blocked when it is not, and makes a preflighted
authenticated request from a listed origin."""

import math
import struct
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from control_plane.auth import service as auth_service
from control_plane.auth.passwords import Passwords
from control_plane.db import make_engine
from control_plane.settings import Settings
from tests.conftest import auth
from tests.e2e.conftest import launch_chromium
from tests.fakes.fake_xai import rms
from tests.fakes.server import BackgroundServer, free_port
from tests.integration.callstack import Stack, StackOptions, build_stack

pytestmark = pytest.mark.browser

PASSWORD = "browser-call-password"
RATE = 24_000
FRONTEND_PORT, ELSEWHERE_PORT = free_port(), free_port()
# The agent's answer: 0.4 s of a quiet 660 Hz tone as PCM16 at 24 kHz, in 20 ms deltas.
ANSWER = [
    struct.pack(
        "<480h",
        *(int(6000 * math.sin(2 * math.pi * 660 * (i * 480 + n) / RATE)) for n in range(480)),
    )
    for i in range(20)
]


def microphone_wav(path: Path) -> Path:
    """What Chromium's fake microphone plays, on a loop: 0.6 s of speech-loud tone, 2.4 s quiet."""
    rate = 48_000
    tone = [int(16000 * math.sin(2 * math.pi * 440 * n / rate)) for n in range(int(0.6 * rate))]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(struct.pack(f"<{len(tone)}h", *tone) + bytes(2 * int(2.4 * rate)))
    return path


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    wav = microphone_wav(tmp_path_factory.mktemp("mic") / "caller.wav")
    with launch_chromium(
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
    ) as browser:
        yield browser


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """The whole call stack; the control plane lets the frontend's origin read it."""
    options = StackOptions(cors_origins=f"http://127.0.0.1:{FRONTEND_PORT}")
    for stack in build_stack(tmp_path, options):
        stack.xai.reply_audio = list(ANSWER)
        settings = Settings(_env_file=None, database_url=stack.database_url)  # type: ignore[call-arg]
        engine = make_engine(settings)
        passwords = Passwords(settings.password_hash_cost)
        with Session(engine) as session:
            for email, workspace in (
                ("ava@acme.example", "acme"),
                ("gus@globex.example", "globex"),
            ):
                auth_service.create_user(
                    session,
                    passwords,
                    email=email,
                    password=PASSWORD,
                    role="member",
                    workspace_id=workspace,
                )
            session.commit()
        engine.dispose()
        yield stack


def sign_in(chromium: Any, stack: Stack, email: str) -> Any:
    page = chromium.new_context().new_page()
    page.goto(f"{stack.control_plane}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{stack.control_plane}/tiers")
    return page


def test_a_test_call_from_the_agent_page(chromium: Any, stack: Stack) -> None:
    page = sign_in(chromium, stack, "ava@acme.example")
    page.goto(f"{stack.control_plane}/workspaces/acme/agents/{stack.agent_id}/edit")
    panel = page.locator("#test-call")
    page.get_by_role("button", name="Start call").click()
    page.wait_for_selector("#test-call[data-state=connected]", timeout=10_000)
    played = page.locator("#test-call-played")
    wait_until(lambda: int(played.get_attribute("data-samples") or 0) >= 9600)
    page.wait_for_selector("#test-call-transcript li[data-role=agent]", timeout=5_000)
    said = {
        li.get_attribute("data-role"): li.inner_text()
        for li in page.locator("#test-call-transcript li").all()
    }
    assert "Hello, where is my order?" in said["caller"]
    assert "Let me check that for you." in said["agent"]
    assert page.locator("#test-call-first-audio").inner_text().endswith(" ms")
    page.screenshot(path=str(_screenshots() / "test-call.png"), full_page=True)
    page.get_by_role("button", name="Stop").click()
    page.wait_for_selector("#test-call[data-state=ended]", timeout=10_000)
    assert "caller_hangup" in panel.locator("#test-call-end-reason").inner_text()
    page.locator("#test-call-score").select_option("9")
    page.get_by_role("button", name="Rate the call").click()
    page.wait_for_selector("#test-call-rated:has-text('rated 9')", timeout=5_000)

    session = stack.xai.connections[-1].of_type("session.update")[0]["session"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": RATE}
    loud = [frame for frame in stack.xai.pcm_frames if rms(frame) > 1000]
    assert len(loud) >= 10  # the microphone's tone reached xAI as PCM16 at 24 kHz
    assert all(len(frame) % 2 == 0 for frame in stack.xai.pcm_frames)
    poll_reports(stack)


def test_talking_over_the_agent_stops_its_playback(chromium: Any, stack: Stack) -> None:
    """The agent's five-second answer arrives at once and queues in the page; the microphone's
    next burst of speech (3 s into its loop) is a barge-in: the worker sends `clear` and the page
    drops what it had not played yet."""
    stack.xai.reply_audio = [ANSWER[i % len(ANSWER)] for i in range(250)]  # 5 s
    page = sign_in(chromium, stack, "ava@acme.example")
    page.goto(f"{stack.control_plane}/workspaces/acme/agents/{stack.agent_id}/edit")
    page.get_by_role("button", name="Start call").click()
    page.wait_for_selector("#test-call[data-state=connected]", timeout=10_000)
    played = page.locator("#test-call-played")
    wait_until(lambda: int(played.get_attribute("data-dropped") or 0) > 0, seconds=20)
    dropped = int(played.get_attribute("data-dropped") or 0)
    assert dropped >= RATE  # at least a second of the answer was never played
    assert "talked over the agent" in played.inner_text()
    page.get_by_role("button", name="Stop").click()
    page.wait_for_selector("#test-call[data-state=ended]", timeout=10_000)
    assert len(stack.xai.connections[-1].of_type("input_audio_buffer.append")) > 0


def wait_until(condition: Any, seconds: float = 15) -> None:
    """Poll from here: the page's CSP (no eval) rules out Playwright's in-page wait_for_function."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def poll_reports(stack: Stack) -> None:
    wait_until(lambda: len(stack.telemetry.reports) >= 1, seconds=10)
    assert stack.telemetry.reports[-1].end_reason == "caller_hangup"


def _screenshots() -> Path:
    out = Path("test-output") / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


def admin(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.control_plane, headers=auth(stack.admin_token))


def test_the_page_shows_why_a_call_cannot_start(chromium: Any, stack: Stack) -> None:
    with admin(stack) as http:  # globex may use the tier but has no xAI key
        http.put("/api/v1/cohorts/internal", json={"members": ["acme", "globex"]})
        gus = http.post(
            "/api/v1/workspaces/globex/agents",
            json={"name": "Gus", "pricing_tier": "grok-realtime", "voice": "Rex"},
        ).json()["id"]
    page = sign_in(chromium, stack, "gus@globex.example")
    page.goto(f"{stack.control_plane}/workspaces/globex/agents/{gus}/edit")
    page.get_by_role("button", name="Start call").click()
    error = page.locator("#test-call-error")
    error.wait_for(state="visible", timeout=5_000)
    assert error.inner_text() == (
        "xAI API key not configured for this workspace. Please add it in Settings > "
        "Workspace API Keys."
    )
    # gus may not start a call on acme's agent, whatever the page sends.
    status = page.evaluate(
        """async ([url, csrf]) => (await fetch(url, {method: "POST",
             headers: {"Content-Type": "application/x-www-form-urlencoded"},
             body: new URLSearchParams({csrf})})).status""",
        [
            f"/workspaces/acme/agents/{stack.agent_id}/test-calls",
            page.locator("#test-call").get_attribute("data-csrf"),
        ],
    )
    assert status == 404
    assert stack.xai.connections == []


def test_a_used_token_is_refused_in_the_browser(chromium: Any, stack: Stack) -> None:
    page = sign_in(chromium, stack, "ava@acme.example")
    page.goto(f"{stack.control_plane}/workspaces/acme/agents/{stack.agent_id}/edit")
    answers = page.evaluate(
        """async ([url, csrf]) => {
             const minted = await (await fetch(url, {method: "POST",
               headers: {"Content-Type": "application/x-www-form-urlencoded"},
               body: new URLSearchParams({csrf})})).json();
             const open = () => new Promise((resolve) => {
               const ws = new WebSocket(minted.url);
               const seen = [];
               ws.onopen = () => ws.send(JSON.stringify({type: "start", token: minted.token}));
               ws.onmessage = (e) => {
                 if (typeof e.data === "string") { seen.push(JSON.parse(e.data)); }
                 if (seen.length && seen[0].type === "ready") { ws.close(); }
               };
               ws.onclose = (e) => resolve({code: e.code, seen});
             });
             return [await open(), await open()];
           }""",
        [
            f"/workspaces/acme/agents/{stack.agent_id}/test-calls",
            page.locator("#test-call").get_attribute("data-csrf"),
        ],
    )
    first, second = answers
    assert first["seen"][0]["type"] == "ready"
    assert second["code"] == 4401
    assert "expired or was used" in second["seen"][0]["message"]


# --- CORS as Chromium enforces it ---------------------------------------------------------------


def blank_page() -> Starlette:
    return Starlette(
        routes=[Route("/", lambda _r: HTMLResponse("<!doctype html><title>fe</title>"))]
    )


FETCH = """async ([url, token]) => {
  try {
    const headers = token ? {Authorization: `Bearer ${token}`} : {};
    const answer = await fetch(url, {headers});
    return {status: answer.status, body: await answer.json()};
  } catch (e) {
    return {blocked: String(e)};
  }
}"""


def test_a_listed_origin_reads_the_catalogue_and_an_unlisted_one_is_blocked(
    chromium: Any, stack: Stack
) -> None:
    with admin(stack) as http:
        acme = http.post("/api/v1/tokens", json={"name": "fe", "scopes": ["workspace:acme"]})
    token = acme.json()["token"]
    tiers = f"{stack.control_plane}/api/v1/tiers"
    agents = f"{stack.control_plane}/api/v1/workspaces/acme/agents"
    with (
        BackgroundServer(blank_page(), port=FRONTEND_PORT) as frontend,
        BackgroundServer(blank_page(), port=ELSEWHERE_PORT) as elsewhere,
    ):
        page = chromium.new_context().new_page()
        page.goto(frontend.base_url)
        listed = page.evaluate(FETCH, [tiers, None])
        assert listed["status"] == 200 and len(listed["body"]["tiers"]) == 5
        preflighted = page.evaluate(FETCH, [agents, token])  # Authorization: a preflight first
        assert preflighted["status"] == 200
        assert [a["id"] for a in preflighted["body"]["agents"]] == [stack.agent_id]
        page.goto(elsewhere.base_url)
        blocked = page.evaluate(FETCH, [tiers, None])
        assert "blocked" in blocked and "Failed to fetch" in blocked["blocked"]
