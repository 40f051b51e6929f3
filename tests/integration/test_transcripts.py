"""A call's words leave the call only when its workspace keeps transcripts: the session config
says so, the runtime's report carries them, the control plane stores them; otherwise the report
carries none (and a report that carries some anyway is not stored)."""

import httpx

from tests.conftest import auth
from tests.integration.callstack import CALLER_FRAMES, Stack, poll, session_for, wait_for_report


async def one_call(stack: Stack) -> None:
    async with session_for(stack) as call:
        for payload in CALLER_FRAMES:
            await call.send_audio(payload)
        await poll(lambda: len(call.transcripts) >= 2)


async def test_transcripts_travel_only_with_the_opt_in(stack: Stack) -> None:
    await one_call(stack)
    await wait_for_report(stack)
    assert stack.telemetry.reports[-1].transcript is None
    async with httpx.AsyncClient(
        base_url=stack.control_plane, headers=auth(stack.admin_token)
    ) as h:
        opted = await h.patch("/api/v1/workspaces/acme/settings", json={"keep_transcripts": True})
        assert opted.status_code == 200, opted.text
        await one_call(stack)
        await wait_for_report(stack, 2)
        report = stack.telemetry.reports[-1]
        assert [(line.role, line.text) for line in report.transcript or []] == [
            ("caller", "Hello, where is my order?"),
            ("agent", "Let me check that for you."),
        ]
        service = auth(stack.service_token)
        body = report.model_dump(mode="json")
        assert (await h.post("/api/v1/telemetry/calls", json=body, headers=service)).is_success
        kept = await h.get(f"/api/v1/calls/{report.call_id}/transcript")
        assert kept.status_code == 200 and len(kept.json()["entries"]) == 2

        # Opting out forgets what was kept, and a report that still carries words stores none.
        await h.patch("/api/v1/workspaces/acme/settings", json={"keep_transcripts": False})
        assert (await h.get(f"/api/v1/calls/{report.call_id}/transcript")).status_code == 404
        await one_call(stack)
        await wait_for_report(stack, 3)
        late = stack.telemetry.reports[-1].model_copy(update={"transcript": report.transcript})
        posted = await h.post(
            "/api/v1/telemetry/calls", json=late.model_dump(mode="json"), headers=service
        )
        assert posted.is_success
        assert (await h.get(f"/api/v1/calls/{late.call_id}/transcript")).status_code == 404
