"""The agent pages obey the services' rules as REST does: a form posted for a tier the workspace
may not use (the option is disabled, but a form can be forged) is refused with the reason and
nothing is stored; a refused edit stays an edit."""

import random
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from control_plane.demo import DEMO_PASSWORD, seed_demo
from control_plane.telemetry import service as telemetry
from control_plane.telemetry.models import CallReportIn
from control_plane.workspaces import service as workspaces_service
from tests.api.test_sign_in import sign_in
from tests.api.test_telemetry import record_as_issued, synthetic_calls

GUS = "gus@globex.example"  # a member of globex, which is outside the internal alpha


@pytest.fixture
def gus(client: TestClient) -> Iterator[TestClient]:
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        seed_demo(session, client.app.state.passwords)  # type: ignore[attr-defined]
        session.commit()
    assert sign_in(client, GUS, DEMO_PASSWORD) == 303
    yield client


def form_token(client: TestClient, path: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert match is not None
    return match[1]


def globex_agent_names(client: TestClient) -> list[str]:
    return re.findall(r'<tr data-agent="([^"]+)"', client.get("/workspaces/globex/agents").text)


def post_agent(client: TestClient, path: str, **fields: str) -> tuple[int, str]:
    form = {"csrf": form_token(client, "/workspaces/globex/agents/new"), **fields}
    response = client.post(path, data=form, follow_redirects=False)
    return response.status_code, response.text


def test_a_forged_form_for_a_closed_tier_is_refused_and_stores_nothing(gus: TestClient) -> None:
    before = globex_agent_names(gus)
    status, page = post_agent(
        gus, "/workspaces/globex/agents", name="Forged", pricing_tier="grok-realtime", voice="Rex"
    )
    assert status == 422
    assert "internal alpha" in page
    assert "Forged" not in globex_agent_names(gus) and globex_agent_names(gus) == before


def test_without_the_service_rule_the_forged_form_gets_through(
    gus: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workspaces_service, "_check_tier_enabled", lambda *args: None)
    status, _ = post_agent(
        gus, "/workspaces/globex/agents", name="Forged", pricing_tier="grok-realtime", voice="Rex"
    )
    assert status == 303
    assert "Forged" in globex_agent_names(gus)


def test_a_refused_edit_stays_an_edit_of_that_agent(gus: TestClient) -> None:
    status, _ = post_agent(
        gus, "/workspaces/globex/agents", name="Gus 2", pricing_tier="premium", voice="alloy"
    )
    assert status == 303
    agent_id = re.findall(
        r"/workspaces/globex/agents/(agt_[0-9a-f]+)/edit", gus.get("/workspaces/globex/agents").text
    )[-1]
    status, page = post_agent(
        gus,
        f"/workspaces/globex/agents/{agent_id}",
        name="Gus 2",
        pricing_tier="premium",
        voice="not-a-voice",
    )
    assert status == 422
    assert f'action="/workspaces/globex/agents/{agent_id}"' in page  # not the create action


def test_the_agents_page_comes_in_pages_with_every_agent_once(gus: TestClient) -> None:
    from control_plane.auth.principal import SYSTEM
    from control_plane.workspaces.models import AgentCreate
    from control_plane.workspaces.pages import AGENTS_PER_PAGE

    created = AGENTS_PER_PAGE + 7
    with Session(gus.app.state.engine) as session:  # type: ignore[attr-defined]
        for index in range(created):
            body = AgentCreate(name=f"Paged {index:03d}", pricing_tier="budget", voice="alloy")
            workspaces_service.create_agent(session, SYSTEM, "globex", body, gate=None)
        session.commit()
    seen: list[str] = []
    path, pages = "/workspaces/globex/agents", 0
    while path:
        page = gus.get(path)
        assert page.status_code == 200
        names = re.findall(r'<tr data-agent="([^"]+)"', page.text)
        assert len(names) <= AGENTS_PER_PAGE
        assert ("First page" in page.text) == (pages > 0)
        seen += names
        pages += 1
        following = re.search(r'href="([^"]+)" rel="next"', page.text)
        path = following[1].replace("&amp;", "&") if following else ""
    paged = [n for n in seen if n.startswith("Paged ")]
    assert paged == [f"Paged {i:03d}" for i in range(created)]  # all of them, once, in order
    assert pages == 2 and len(seen) == len(set(seen))


def test_the_tiers_page_shows_any_workspace_however_many_there_are(client: TestClient) -> None:
    """The admin's workspace field suggests the first page of workspaces and takes any id: the
    501st workspace's availability is shown though it is not among the suggestions."""
    from control_plane.auth.principal import SYSTEM
    from control_plane.workspaces.models import WorkspaceCreate

    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        seed_demo(session, client.app.state.passwords)  # type: ignore[attr-defined]
        for index in range(500):
            body = WorkspaceCreate(id=f"many-{index:03d}", name=f"Many {index}")
            workspaces_service.create_workspace(session, SYSTEM, body)
        session.commit()
    assert sign_in(client, "admin@example.com", DEMO_PASSWORD) == 303
    page = client.get("/tiers", params={"workspace_id": "many-499"})
    assert page.status_code == 200
    assert 'value="many-499"' in page.text  # the field shows the workspace being looked at
    assert '<option value="many-499">' not in page.text  # beyond the suggestions
    assert '<option value="many-000">' in page.text
    assert 'class="card tier unavailable" id="tier-grok-realtime"' in page.text  # not in a cohort
    unknown = client.get("/tiers", params={"workspace_id": "nobody-here"})
    assert unknown.status_code == 404


def test_the_agents_page_shows_the_workspace_what_failed_on_its_own_side(gus: TestClient) -> None:
    own = synthetic_calls(3, ["globex"], rng=random.Random(5), seed_id="gus")
    own[1] |= {"completed": False, "end_reason": "xai_key_refused"}
    own[2] |= {"tool_calls_failed": 2, "tool_calls_failed_in_tool": 2}
    record_as_issued(gus, own)
    engine = gus.app.state.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        telemetry.ingest(session, None, [CallReportIn.model_validate(c) for c in own])
        session.commit()
    page = gus.get("/workspaces/globex/agents").text
    assert "3 calls; failed: 1 xai_key_refused." in page
    assert re.search(r'data-fault="workspace">1 failed on this workspace', page)
    assert re.search(r'data-fault="tools">2 tool calls failed inside', page)
    assert "acme" not in page  # only its own
