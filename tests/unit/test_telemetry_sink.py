"""A call's report survives a control plane that is busy or briefly away when the call ends:
it is posted again with back-off (the control plane counts a call's report once), and a refusal
for good is not retried."""

import json

import httpx

from switchboard_runtime.contract import CallReport
from switchboard_runtime.session import HttpTelemetrySink

REPORT = CallReport(call_id="call_1", end_reason="caller_hangup", completed=True)


def control_plane(answers: list[int], seen: list[dict[str, object]]) -> httpx.AsyncClient:
    """Answers the telemetry POSTs with these statuses in turn (then 202), timing out on 0."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        status = answers.pop(0) if answers else 202
        if status == 0:
            raise httpx.ReadTimeout("busy", request=request)
        body = {"code": "database_unavailable", "detail": "busy"} if status >= 400 else {}
        return httpx.Response(status, json=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


async def test_a_busy_control_plane_gets_the_report_again() -> None:
    seen: list[dict[str, object]] = []
    async with control_plane([503, 0, 503], seen) as http:
        await HttpTelemetrySink("http://cp", "token", http=http, retry_seconds=30).report(REPORT)
    assert len(seen) == 4  # three busy answers, then it was taken
    assert all(body["call_id"] == "call_1" for body in seen)


async def test_without_retries_that_report_would_have_been_lost() -> None:
    seen: list[dict[str, object]] = []
    async with control_plane([503, 0, 503], seen) as http:
        await HttpTelemetrySink("http://cp", "token", http=http, retry_seconds=0).report(REPORT)
    assert len(seen) == 1


async def test_a_refusal_is_not_retried() -> None:
    seen: list[dict[str, object]] = []
    async with control_plane([422], seen) as http:
        await HttpTelemetrySink("http://cp", "token", http=http, retry_seconds=30).report(REPORT)
    assert len(seen) == 1
