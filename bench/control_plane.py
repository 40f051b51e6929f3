"""Switchboard vs unleash-server 7.x, measured side by side in one run on this machine.

Run with `make bench` (it starts PostgreSQL and unleash-server on loopback through
scripts/test-services.sh). Prints, and writes to bench/results/latest.json:
  - wrk -t1 -c16 -d10s: Unleash's /api/client/features (20 features), Switchboard's
    /api/client/features (the same 20 features) and Switchboard's session-config (warm)
  - in-process: flag evaluation and an uncached session-config resolve, p50/p99
Targets (issues): session-config ≥ 2.5x Unleash's req/s with p99 ≤ 5 ms; client API ≥ 1.5x;
evaluation p99 ≤ 50 µs; resolve p99 ≤ 1 ms.
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlmodel import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from control_plane.auth import service as auth_service  # noqa: E402
from control_plane.catalogue.seed import seed_catalogue  # noqa: E402
from control_plane.db import make_engine  # noqa: E402
from control_plane.migrate import upgrade  # noqa: E402
from control_plane.rollout import service as rollout  # noqa: E402
from control_plane.rollout.engine import UnleashAdmin  # noqa: E402
from control_plane.settings import Settings  # noqa: E402
from tests.fakes.server import free_port  # noqa: E402

FEATURES = 20
WRK = ["wrk", "-t1", "-c16", "-d10s", "--latency"]


def wait_healthy(url: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not become healthy")


def flag_documents() -> dict[str, Any]:
    """20 features: the grok tier flag plus 19 of the same shape, on 3 cohorts."""
    members = {f"cohort-{i}": [f"ws-{i}-{j}" for j in range(25)] for i in range(3)}
    features = []
    for index in range(FEATURES):
        name = "grok-realtime-tier" if index == 0 else f"bench-flag-{index:02d}"
        features.append(
            {
                "name": name,
                "description": "benchmark flag",
                "switchboard": {
                    "stage": "beta",
                    "killed": False,
                    "internal_cohorts": ["cohort-0"],
                    "beta_cohorts": ["cohort-1", "cohort-2"],
                    "beta_percentage": 10 + index,
                },
            }
        )
    cohorts = {name: {"description": "", "members": ws} for name, ws in members.items()}
    return {"version": 1, "features": features, "cohorts": cohorts}


def wrk(url: str, header: str) -> dict[str, float]:
    output = subprocess.run(
        [*WRK, "-H", header, url], check=True, capture_output=True, text=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1])  # type: ignore[index]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99[2]]  # type: ignore[index]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*", output)
    return {
        "requests_per_second": rps,
        "p99_ms": float(p99[1]) * scale,  # type: ignore[index]
        "non_2xx": int(non_2xx[1]) if non_2xx else 0,
        "socket_errors": errors[0] if errors else "",
    }


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    return {
        "p50_us": ordered[len(ordered) // 2] / 1000,
        "p99_us": ordered[int(len(ordered) * 0.99)] / 1000,
        "mean_us": statistics.fmean(ordered) / 1000,
    }


def main() -> None:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (make bench installs Debian's wrk)")
    unleash_url = os.environ["SWITCHBOARD_TEST_UNLEASH_URL"]
    admin_token = os.environ["SWITCHBOARD_TEST_UNLEASH_ADMIN_TOKEN"]
    client_token = os.environ["SWITCHBOARD_TEST_UNLEASH_CLIENT_TOKEN"]
    wait_healthy(f"{unleash_url}/health")

    workdir = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    database_url = f"sqlite:///{workdir}/bench.db"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=database_url,
        master_key_file=workdir / "master.key",
        client_api_tokens=SecretStr("bench-client-token"),
    )
    upgrade(database_url)
    engine = make_engine(settings)
    from control_plane.auth.principal import SYSTEM
    from control_plane.keys import service as keys_service
    from control_plane.keys.crypto import Keyring
    from control_plane.workspaces import service as workspaces
    from control_plane.workspaces.models import (
        AgentCreate,
        FunctionTool,
        Workspace,
        WorkspaceCreate,
    )

    document = flag_documents()
    keyring = Keyring.from_settings(settings)
    with Session(engine) as session:
        seed_catalogue(session)
        workspace_ids = sorted({w for c in document["cohorts"].values() for w in c["members"]})
        for workspace_id in workspace_ids:
            session.add(Workspace(id=workspace_id, name=workspace_id))
        session.flush()
        rollout.import_definitions(session, None, document, actor="bench")
        workspaces.create_workspace(session, SYSTEM, WorkspaceCreate(id="acme", name="Acme"))
        rollout.put_cohort(
            session,
            None,
            "cohort-0",
            rollout.CohortWrite(members=[*document["cohorts"]["cohort-0"]["members"], "acme"]),
            actor="bench",
        )  # type: ignore[attr-defined]
        changes = keys_service.plan_changes(session, {"xai_api_key": "xai-" + "b" * 40})
        keys_service.apply_changes(session, keyring, SYSTEM, "acme", changes)
        agent = workspaces.create_agent(
            session,
            SYSTEM,
            "acme",
            AgentCreate(
                name="Ava",
                pricing_tier="grok-realtime",
                voice="marin",
                instructions="You are Ava." * 20,
                tools=[
                    FunctionTool(
                        name=f"tool_{i}",
                        description="d",
                        parameters={"type": "object", "properties": {"x": {"type": "string"}}},
                    )
                    for i in range(5)
                ],
            ),
        )
        _, service_token = auth_service.create_token(session, name="bench", scopes=["service"])
        session.commit()
        agent_id = agent.id
        features = [f.definition for f in rollout.list_flags(session)]

    admin = UnleashAdmin(
        settings.model_copy(
            update={"unleash_url": unleash_url, "unleash_admin_token": SecretStr(admin_token)}
        )
    )
    admin.ensure_context_field()
    for feature in features:
        admin.push(feature)
    served = httpx.get(
        f"{unleash_url}/api/client/features", headers={"Authorization": client_token}
    ).json()
    assert len(served["features"]) >= FEATURES, (
        "unleash-server does not serve the benchmark features"
    )

    port = free_port()
    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_ENVIRONMENT": "test",
        "SWITCHBOARD_MASTER_KEY_FILE": str(workdir / "master.key"),
        "SWITCHBOARD_CLIENT_API_TOKENS": "bench-client-token",
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "control_plane.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{base}/healthz", 30)
        config_url = f"{base}/api/v1/workspaces/acme/agents/{agent_id}/session-config"
        warm = httpx.get(config_url, headers={"Authorization": f"Bearer {service_token}"})
        assert warm.status_code == 200, warm.text
        ours = httpx.get(
            f"{base}/api/client/features", headers={"Authorization": "bench-client-token"}
        ).json()
        assert len(ours["features"]) == FEATURES

        results: dict[str, Any] = {}
        results["unleash_client_features"] = wrk(
            f"{unleash_url}/api/client/features", f"Authorization: {client_token}"
        )
        results["switchboard_client_features"] = wrk(
            f"{base}/api/client/features", "Authorization: bench-client-token"
        )
        results["switchboard_session_config"] = wrk(
            config_url, f"Authorization: Bearer {service_token}"
        )
    finally:
        server.terminate()
        server.wait(timeout=10)

    # In-process figures, in this process, with the same database.
    from control_plane.catalogue.snapshot import CatalogueSnapshot
    from control_plane.changes import ChangeFeed
    from control_plane.rollout.gate import FlagGate
    from control_plane.sessions import service as sessions
    from control_plane.sessions.ephemeral import EphemeralSecrets

    gate = FlagGate(settings, engine, ChangeFeed(settings))
    gate.reload()
    grid = [f"ws-{i % 3}-{i % 25}" for i in range(100)] + [f"other-{i}" for i in range(100)]
    samples = []
    for _round in range(50):
        for workspace_id in grid:
            started = time.perf_counter_ns()
            gate.evaluator.is_enabled("grok-realtime-tier", workspace_id)
            samples.append(time.perf_counter_ns() - started)
    results["inprocess_flag_evaluation"] = percentiles(
        samples[len(grid) :]
    )  # first round is warm-up
    resolver = sessions.Resolver(
        settings=settings,
        keyring=keyring,
        gate=gate,
        secrets=EphemeralSecrets(settings),
        catalogue=CatalogueSnapshot(),
    )
    principal = auth_service.principal_for_token(Session(engine), service_token)
    assert principal is not None
    samples = []
    for _ in range(2000):
        with Session(engine) as session:
            started = time.perf_counter_ns()
            sessions.resolve_agent(session, resolver, principal, "acme", agent_id)
            samples.append(time.perf_counter_ns() - started)
    results["inprocess_resolve_uncached"] = percentiles(samples[100:])
    engine.dispose()

    unleash_rps = results["unleash_client_features"]["requests_per_second"]
    results["ratios"] = {
        "session_config_vs_unleash": results["switchboard_session_config"]["requests_per_second"]
        / unleash_rps,
        "client_features_vs_unleash": results["switchboard_client_features"]["requests_per_second"]
        / unleash_rps,
    }
    results["machine"] = {
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2))

    print(f"\n{'measurement':<34}{'req/s':>10}{'p99 ms':>10}{'non-2xx':>9}")
    for name in (
        "unleash_client_features",
        "switchboard_client_features",
        "switchboard_session_config",
    ):
        r = results[name]
        print(f"{name:<34}{r['requests_per_second']:>10.0f}{r['p99_ms']:>10.2f}{r['non_2xx']:>9}")
    ratios = results["ratios"]
    e, r = results["inprocess_flag_evaluation"], results["inprocess_resolve_uncached"]
    print(f"\nsession-config / Unleash: {ratios['session_config_vs_unleash']:.2f}x (target >= 2.5)")
    print(f"client API / Unleash:     {ratios['client_features_vs_unleash']:.2f}x (target >= 1.5)")
    print(f"flag evaluation: p50 {e['p50_us']:.1f} us, p99 {e['p99_us']:.1f} us (target <= 50 us)")
    print(
        f"resolve, uncached: p50 {r['p50_us']:.0f} us, p99 {r['p99_us']:.0f} us (target <= 1000 us)"
    )
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
