"""What one look of the rollout guard costs, by how many calls its window holds
(`make bench-guard-look`).

While a flag is in internal or beta, a call report the control plane takes ends with the guard
looking at the flag's health (`telemetry.service.guard_check`) unless it may skip the look
(`telemetry/looks.py`: its calls all meet every target, and the last look is recent): every call
of the flag in the guard's window (15 minutes by default) is read and judged. So a look's cost
grows with the call rate. Here, on SQLite as `make run` has it: the whole look
(`rollout_health`), and beside it the window read two ways, as ORM entities (`CallReport`, how
it was read until 2026-12-08) and as the columns the judgement reads (`window_reports`), each
over WINDOWS calls of five workspaces, min and median of ROUNDS rounds, each round in a fresh
session. Written to bench/results/guard_look.json.
"""

import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, SQLModel, col, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.host import host_reference_us  # noqa: E402
from control_plane.catalogue.seed import seed_catalogue  # noqa: E402
from control_plane.core import utcnow  # noqa: E402
from control_plane.db import make_engine  # noqa: E402
from control_plane.rollout import service as rollout  # noqa: E402
from control_plane.settings import Settings  # noqa: E402
from control_plane.telemetry import service as telemetry  # noqa: E402
from control_plane.telemetry.models import CallReport  # noqa: E402

FLAG = "grok-realtime-tier"
WINDOWS = [int(n) for n in os.environ.get("BENCH_GUARD_WINDOWS", "400,1600,4000").split(",")]
ROUNDS = int(os.environ.get("BENCH_GUARD_ROUNDS", "5"))


def a_report(index: int, started: Any, rng: random.Random) -> CallReport:
    failed = rng.random() < 0.02
    return CallReport(
        call_id=uuid.uuid4().hex,
        workspace_id=f"workspace-{index % 5}",
        agent_id="agent",
        tier="grok-realtime",
        engine="grok",
        flag=FLAG,
        cohort="internal",
        started_at=started,
        time_to_first_audio_ms=rng.uniform(300, 900),
        setup_wait_ms=rng.uniform(0, 20),
        first_audio_relay_ms=rng.uniform(0.1, 2),
        warm_start=rng.random() < 0.9,
        completed=not failed,
        end_reason="xai_disconnected" if failed else "caller_hangup",
        websocket_disconnects=int(failed),
        tool_calls_ok=rng.randint(0, 2),
        duration_ms=rng.uniform(20_000, 120_000),
        fault="provider" if failed else "",
    )


def timed(session: Session, work: Callable[[], object]) -> float:
    """Milliseconds `work` took, started with nothing loaded in the session."""
    session.expire_all()
    started = time.perf_counter()
    work()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    rng = random.Random(7)
    workdir = tempfile.mkdtemp(prefix="switchboard-bench-guard-")
    settings = Settings(database_url=f"sqlite:///{workdir}/guard.db", environment="test")
    engine = make_engine(settings)
    SQLModel.metadata.create_all(engine)
    now = utcnow()
    since = now - timedelta(minutes=15)
    entities = select(CallReport).where(
        CallReport.flag == FLAG, col(CallReport.started_at) >= since
    )
    results: dict[str, Any] = {"host_reference_us": host_reference_us(), "windows": []}
    print(f"host reference (bench/host.py): {results['host_reference_us']:.2f} us")
    print(
        f"{'calls in window':>15}  {'whole look ms':>14}  {'read as entities ms':>20}  "
        f"{'read as columns ms':>19}  (min / median of {ROUNDS})"
    )
    with Session(engine) as session:
        seed_catalogue(session)
        rollout.seed_flags(session)
        guard = telemetry.get_guard(session, FLAG)
        session.commit()
        stored = 0
        for window in WINDOWS:
            for index in range(stored, window):
                started = now - timedelta(seconds=rng.uniform(0, 14 * 60))
                session.add(a_report(index, started, rng))
            session.commit()
            stored = window
            costs: dict[str, list[float]] = {"look": [], "entities": [], "columns": []}
            for _ in range(ROUNDS):
                costs["look"].append(
                    timed(session, lambda: telemetry.rollout_health(session, FLAG, now=now))
                )
                costs["entities"].append(timed(session, lambda: session.exec(entities).all()))
                costs["columns"].append(
                    timed(session, lambda: telemetry.window_reports(session, FLAG, guard, since))
                )
            assert len(telemetry.window_reports(session, FLAG, guard, since)) == window
            row = {
                "calls_in_window": window,
                **{f"{k}_ms": [min(v), statistics.median(v)] for k, v in costs.items()},
            }
            results["windows"].append(row)
            print(
                f"{window:>15}  "
                + "  ".join(
                    f"{min(costs[k]):>{w - 8}.1f} / {statistics.median(costs[k]):>5.1f}"
                    for k, w in (("look", 14), ("entities", 20), ("columns", 19))
                )
            )
    engine.dispose()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "guard_look.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
