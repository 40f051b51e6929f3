"""The worker keeps a call's lease while the call runs (`switchboard_runtime.client.keep_lease`).

The waits between renewals are recorded instead of slept, so nothing here depends on the
machine's timing.
"""

import asyncio
from typing import Any

import pytest

from switchboard_runtime import client as client_module
from switchboard_runtime.client import ClaimedCall, ControlPlaneError, keep_lease

LEASE = 90
REAL_SLEEP = asyncio.sleep
CALL = ClaimedCall(call_id="call_1", workspace_id="acme", agent_id="ag_1", lease_seconds=LEASE)


class RecordingClient:
    def __init__(self, failures: int = 0) -> None:
        self.renewed: list[str] = []
        self.failures = failures

    async def renew_lease(self, call_id: str) -> None:
        if self.failures:
            self.failures -= 1
            raise ControlPlaneError(503, "unavailable", "the control plane is restarting")
        self.renewed.append(call_id)


def record_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []

    async def recorded(delay: float) -> None:
        waits.append(delay)
        await REAL_SLEEP(0)

    monkeypatch.setattr(client_module.asyncio, "sleep", recorded)
    return waits


async def run_until(renewals: int, client: RecordingClient) -> None:
    async with asyncio.timeout(5), keep_lease(client, CALL):  # type: ignore[arg-type]
        while len(client.renewed) < renewals:
            await REAL_SLEEP(0)


async def test_the_lease_is_renewed_while_the_call_runs_and_no_longer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits = record_waits(monkeypatch)
    client = RecordingClient()
    await run_until(40, client)
    renewed = len(client.renewed)
    for _ in range(10):
        await REAL_SLEEP(0)
    assert client.renewed[:40] == ["call_1"] * 40
    assert len(client.renewed) == renewed  # stopped with the call
    # Every wait leaves at least two renewals inside one lease...
    assert all(LEASE / 3 * 0.8 <= wait <= LEASE / 3 * 1.2 for wait in waits), waits
    # ...and calls that start together do not renew together.
    assert len({round(wait, 3) for wait in waits}) > len(waits) // 2


async def test_a_renewal_the_control_plane_refuses_is_logged_and_the_next_one_goes_out(
    monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    record_waits(monkeypatch)
    client = RecordingClient(failures=2)
    await run_until(1, client)
    assert client.renewed == ["call_1"]
    assert [r.getMessage() for r in caplog.records].count(
        "lease of call call_1 not renewed: unavailable"
    ) == 2
