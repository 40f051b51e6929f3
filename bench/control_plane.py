"""Switchboard vs unleash-server 7.x, measured side by side in one run on this machine.

Run with `make bench` (it starts PostgreSQL and unleash-server, NODE_ENV=production, on loopback
through scripts/test-services.sh). Both sides run on PostgreSQL; Switchboard runs again on SQLite
as a second row. Switchboard runs as it is deployed: `switchboard serve`, one worker. Every
endpoint is warmed (3 s of the same load) before its measured 10 s.

  - wrk -t1 -c16 -d10s: Unleash's /api/client/features (20 features); Switchboard's
    /api/client/features (the same 20), its session-config for one agent, and its session-config
    over 1,000 agents in 50 workspaces, a random one per request (bench/random_path.lua), again
    in the 5 s right after a tier edit (no warm-up), once another tier's (no config changes) and
    once the agents' own (all 1,000 configs are rebuilt); the
    catalogue the frontend reads (tiers anonymous and for a workspace, a tier, voices, a voice
    map), a conditional read answered 304, and a page of 50 agents from a workspace with 1,000
  - in-process: flag evaluation through the memo and raw through the engine, and an uncached
    session-config resolve, p50/p99

Any non-2xx answer or socket error makes the run invalid (exit 1). Each figure is printed with
PASS/FAIL against its target and written to bench/results/latest.json with response sizes.
"""

import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import create_engine, text
from sqlmodel import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.host import host_reference_us  # noqa: E402
from control_plane.auth import service as auth_service  # noqa: E402
from control_plane.auth.principal import SYSTEM  # noqa: E402
from control_plane.catalogue.seed import seed_catalogue  # noqa: E402
from control_plane.db import make_engine, read_only  # noqa: E402
from control_plane.keys import service as keys_service  # noqa: E402
from control_plane.keys.crypto import Keyring  # noqa: E402
from control_plane.migrate import upgrade  # noqa: E402
from control_plane.rollout import service as rollout  # noqa: E402
from control_plane.rollout.compiler import WORKSPACE_FIELD  # noqa: E402
from control_plane.rollout.engine import UnleashAdmin  # noqa: E402
from control_plane.settings import Settings  # noqa: E402
from control_plane.workspaces import service as workspaces  # noqa: E402
from control_plane.workspaces.models import (  # noqa: E402
    AgentCreate,
    FunctionTool,
    Workspace,
    WorkspaceCreate,
)
from tests.fakes.server import free_port  # noqa: E402

FEATURES = 20
WORKSPACES, AGENTS_PER_WORKSPACE = 50, 20
BIG, BIG_AGENTS = "bench-big", 1_000
WRK = ["wrk", "-t1", "-c16", "--latency"]
CLIENT_TOKEN = "bench-client-token"  # noqa: S105 (a loopback benchmark token)
FLAG = "grok-realtime-tier"
FLAG_TIER = "grok-realtime"  # the bench's agents' tier
# wrk needs a header; this one changes nothing for an anonymous read.
ANONYMOUS = "Accept: application/json"
# What the frontend reads: (result name, path, who asks)
CATALOGUE_READS = [
    ("tiers_anonymous", "/api/v1/tiers", "none"),
    ("tiers_workspace", "/api/v1/tiers", "workspace"),
    ("tier_by_id", "/api/v1/tiers/grok-realtime", "none"),
    ("voices", "/api/v1/voices", "none"),
    ("voice_map", "/api/v1/voice-maps/grok", "none"),
]

# What each figure must reach (the issues that set them: session-config ≥ 2.5x Unleash's
# req/s with p99 ≤ 5 ms; client API ≥ 1.5x; evaluation p99 ≤ 50 µs; resolve p99 ≤ 1 ms).
TARGETS: dict[str, tuple[str, float]] = {
    "session_config_vs_unleash": (">=", 2.5),
    "session_config_p99_ms": ("<=", 5.0),
    # Issue 34: 1,000 random agents >= 10x with p99 <= 2 ms; in the 5 s after a tier edit
    # >= 3x with p99 <= 10 ms.
    "session_config_1000_agents_vs_unleash": (">=", 10.0),
    "session_config_1000_agents_p99_ms": ("<=", 2.0),
    "session_config_after_tier_edit_vs_unleash": (">=", 3.0),
    "session_config_after_tier_edit_p99_ms": ("<=", 10.0),
    "session_config_after_own_tier_edit_vs_unleash": (">=", 3.0),
    "session_config_after_own_tier_edit_p99_ms": ("<=", 10.0),
    "client_features_vs_unleash": (">=", 1.5),
    "flag_evaluation_memoized_p99_us": ("<=", 50.0),
    "flag_evaluation_raw_p99_us": ("<=", 50.0),
    "resolve_uncached_p99_us": ("<=", 1000.0),
    # Issue 21: catalogue reads >= 3x Unleash with p99 <= 3 ms; 304s >= 5x; no read below 1x.
    "catalogue_reads_slowest_vs_unleash": (">=", 3.0),
    "catalogue_reads_worst_p99_ms": ("<=", 3.0),
    "catalogue_304_vs_unleash": (">=", 5.0),
    "every_read_path_slowest_vs_unleash": (">=", 1.0),
}


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
        name = FLAG if index == 0 else f"bench-flag-{index:02d}"
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


def wrk(url: str, header: str, seconds: int = 10, paths: Path | None = None) -> dict[str, Any]:
    script = ["-s", str(ROOT / "bench" / "random_path.lua")] if paths else []
    after = ["--", str(paths)] if paths else []
    output = subprocess.run(
        [*WRK, f"-d{seconds}s", "-H", header, *script, url, *after],
        check=True,
        capture_output=True,
        text=True,
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


def measured(url: str, header: str, paths: Path | None = None) -> dict[str, Any]:
    """3 s of the same load to warm up (discarded, but checked for errors), then 10 s."""
    warm = wrk(url, header, seconds=3, paths=paths)
    result = wrk(url, header, paths=paths)
    result["warm_up_non_2xx"] = warm["non_2xx"]
    return result


def response_bytes(url: str, header: str) -> int:
    name, _, value = header.partition(": ")
    response = httpx.get(url, headers={name: value})
    assert response.status_code == 200, (url, response.status_code, response.text[:300])
    return len(response.content)


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    return {
        "p50_us": ordered[len(ordered) // 2] / 1000,
        "p99_us": ordered[int(len(ordered) * 0.99)] / 1000,
        "mean_us": statistics.fmean(ordered) / 1000,
    }


@dataclass
class Seeded:
    settings: Settings
    service_token: str
    single_agent_path: str
    agent_paths: list[str]
    features: list[dict[str, Any]]
    workspace_token: str = ""
    big_workspace_token: str = ""
    admin_token: str = ""


def seed(database_url: str, workdir: Path) -> Seeded:
    """The benchmark's flags, 50 workspaces with an xAI key in the internal cohort, 20 Grok
    agents each (1,000), and a service token."""
    settings = Settings(
        _env_file=None,
        environment="test",
        database_url=database_url,
        master_key_file=workdir / "master.key",
        client_api_tokens=SecretStr(CLIENT_TOKEN),
    )
    upgrade(database_url)
    engine = make_engine(settings)
    document = flag_documents()
    keyring = Keyring.from_settings(settings)
    tools = [
        FunctionTool(
            name=f"tool_{i}",
            description="d",
            parameters={"type": "object", "properties": {"x": {"type": "string"}}},
        )
        for i in range(5)
    ]
    workspace_ids = [f"bench-{i:02d}" for i in range(WORKSPACES)]
    with Session(engine) as session:
        seed_catalogue(session)
        cohort_members = sorted({w for c in document["cohorts"].values() for w in c["members"]})
        for workspace_id in cohort_members:
            session.add(Workspace(id=workspace_id, name=workspace_id))
        session.flush()
        rollout.import_definitions(session, None, document, actor="bench")
        for workspace_id in workspace_ids:
            workspaces.create_workspace(
                session, SYSTEM, WorkspaceCreate(id=workspace_id, name=workspace_id)
            )
            changes = keys_service.plan_changes(
                session, {"xai_api_key": "xai-" + secrets.token_hex(20)}
            )
            keys_service.apply_changes(session, keyring, SYSTEM, workspace_id, changes)
        rollout.put_cohort(
            session,
            None,
            "cohort-0",
            rollout.CohortWrite(  # type: ignore[attr-defined]
                members=[*document["cohorts"]["cohort-0"]["members"], *workspace_ids]
            ),
            actor="bench",
        )
        agent_paths = []
        for workspace_id in workspace_ids:
            for index in range(AGENTS_PER_WORKSPACE):
                agent = workspaces.create_agent(
                    session,
                    SYSTEM,
                    workspace_id,
                    AgentCreate(
                        name=f"Ava {index}",
                        pricing_tier="grok-realtime",
                        voice="marin",
                        instructions="You are Ava. " * 20,
                        tools=tools,
                    ),
                    gate=None,  # seeding: the flag is staged for these workspaces above
                )
                agent_paths.append(
                    f"/api/v1/workspaces/{workspace_id}/agents/{agent.id}/session-config"
                )
        # One workspace with 1,000 agents, for a page of its agents list.
        workspaces.create_workspace(session, SYSTEM, WorkspaceCreate(id=BIG, name=BIG))
        big_limits = workspaces.AgentLimits(max_agents=2 * BIG_AGENTS)
        for index in range(BIG_AGENTS):
            body = AgentCreate(name=f"Agent {index}", pricing_tier="premium", voice="alloy")
            workspaces.create_agent(session, SYSTEM, BIG, body, big_limits, gate=None)
        _, service_token = auth_service.create_token(session, name="bench", scopes=["service"])
        _, workspace_token = auth_service.create_token(
            session, name="bench-00", scopes=[f"workspace:{workspace_ids[0]}"]
        )
        _, big_token = auth_service.create_token(session, name=BIG, scopes=[f"workspace:{BIG}"])
        _, admin_token = auth_service.create_token(session, name="bench-admin", scopes=["admin"])
        session.commit()
        features = [f.definition for f in rollout.list_flags(session)]
    engine.dispose()
    return Seeded(
        settings,
        service_token,
        agent_paths[0],
        agent_paths,
        features,
        workspace_token,
        big_token,
        admin_token,
    )


@contextmanager
def switchboard_server(seeded: Seeded, workdir: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": seeded.settings.database_url,
        "SWITCHBOARD_ENVIRONMENT": "test",
        "SWITCHBOARD_MASTER_KEY_FILE": str(workdir / "master.key"),
        "SWITCHBOARD_CLIENT_API_TOKENS": CLIENT_TOKEN,
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
    }
    # As deployed: `switchboard serve`, one uvicorn worker with the server's guards and
    # its instant answers (runtime/switchboard_runtime/worker/serving.py).
    switchboard = Path(sys.executable).parent / "switchboard"
    server = subprocess.Popen(
        [str(switchboard), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{base}/healthz", 30)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)


def measure_switchboard(seeded: Seeded, workdir: Path) -> dict[str, Any]:
    service = f"Authorization: Bearer {seeded.service_token}"
    client = f"Authorization: {CLIENT_TOKEN}"
    paths = workdir / "agent-paths.txt"
    paths.write_text("\n".join(seeded.agent_paths) + "\n")
    results: dict[str, Any] = {}
    with switchboard_server(seeded, workdir) as base, httpx.Client(base_url=base) as http:
        for path in seeded.agent_paths:  # every key once: the cache holds all of them
            response = http.get(path, headers={"Authorization": f"Bearer {seeded.service_token}"})
            assert response.status_code == 200, (path, response.text[:300])
        results["client_features"] = measured(f"{base}/api/client/features", client)
        results["client_features"]["bytes"] = response_bytes(f"{base}/api/client/features", client)
        results["session_config"] = measured(f"{base}{seeded.single_agent_path}", service)
        results["session_config"]["bytes"] = response_bytes(
            f"{base}{seeded.single_agent_path}", service
        )
        results["session_config_1000_agents"] = measured(
            f"{base}{seeded.agent_paths[0]}", service, paths=paths
        )
        results["session_config_1000_agents"]["bytes"] = results["session_config"]["bytes"]
        # Every config is kept; a product person edits a tier. The 5 s after it, unwarmed: what
        # every call starting then waits for (issue 34). Premium: another tier than the agents';
        # grok-realtime: theirs, so every one of the 1,000 configs is rebuilt.
        for name, tier in (("after_tier_edit", "premium"), ("after_own_tier_edit", FLAG_TIER)):
            edited = http.patch(
                f"/api/v1/tiers/{tier}",
                json={"name": f"{tier} {time.time_ns()}"},
                headers={"Authorization": f"Bearer {seeded.admin_token}"},
            )
            assert edited.status_code == 200, edited.text[:300]
            after_edit = wrk(f"{base}{seeded.agent_paths[0]}", service, seconds=5, paths=paths)
            results[f"session_config_{name}"] = after_edit | {
                "warm_up_non_2xx": 0,
                "bytes": results["session_config"]["bytes"],
            }
        workspace = f"Authorization: Bearer {seeded.workspace_token}"
        for name, path, header in CATALOGUE_READS:
            header = {"workspace": workspace, "none": ANONYMOUS}[header]
            results[name] = measured(f"{base}{path}", header)
            results[name]["bytes"] = response_bytes(f"{base}{path}", header)
        big = f"Authorization: Bearer {seeded.big_workspace_token}"
        page = f"{base}/api/v1/workspaces/{BIG}/agents?limit=50"
        results["agents_page_50_of_1000"] = measured(page, big)
        results["agents_page_50_of_1000"]["bytes"] = response_bytes(page, big)
        etag = http.get("/api/v1/tiers").headers["etag"]
        results["tiers_304"] = measured(f"{base}/api/v1/tiers", f"If-None-Match: {etag}")
        results["tiers_304"]["bytes"] = 0
    return results


def measure_in_process(seeded: Seeded) -> dict[str, Any]:
    from control_plane.catalogue.snapshot import CatalogueSnapshot
    from control_plane.changes import ChangeFeed
    from control_plane.kept import Generations
    from control_plane.rollout.engine import EmbeddedEvaluator
    from control_plane.rollout.gate import FlagGate
    from control_plane.sessions import service as sessions
    from control_plane.sessions.cache import ConfigParts
    from control_plane.sessions.ephemeral import EphemeralSecrets

    settings = seeded.settings
    engine = make_engine(settings)
    gate = FlagGate(settings, engine, ChangeFeed(settings))
    gate.reload()
    evaluator = gate.evaluator
    assert isinstance(evaluator, EmbeddedEvaluator)
    grid = [f"ws-{i % 3}-{i % 25}" for i in range(100)] + [f"other-{i}" for i in range(100)]
    memoized: list[int] = []
    raw: list[int] = []
    for _round in range(50):
        for workspace_id in grid:
            started = time.perf_counter_ns()
            evaluator.is_enabled(FLAG, workspace_id)
            memoized.append(time.perf_counter_ns() - started)
            context = {"properties": {WORKSPACE_FIELD: workspace_id}}
            started = time.perf_counter_ns()
            evaluator.evaluate(FLAG, context)  # through the engine every time, no memo
            raw.append(time.perf_counter_ns() - started)
    results = {
        # The first round fills the memo: it is warm-up for both.
        "flag_evaluation_memoized": percentiles(memoized[len(grid) :]),
        "flag_evaluation_raw": percentiles(raw[len(grid) :]),
    }
    keyring = Keyring.from_settings(settings)
    generations = Generations(gate)
    resolver = sessions.Resolver(
        settings=settings,
        keyring=keyring,
        gate=gate,
        secrets=EphemeralSecrets(settings),
        catalogue=CatalogueSnapshot(generations),
        parts=ConfigParts(generations, 10_000),
    )
    with Session(engine) as session:
        principal = auth_service.principal_for_token(session, seeded.service_token)
    assert principal is not None
    read_engine = read_only(engine)
    samples = []
    for index in range(2000):
        path = seeded.agent_paths[index % len(seeded.agent_paths)].split("/")
        workspace_id, agent_id = path[4], path[6]
        # The agent and key are read from the database; the catalogue is kept, as in a process.
        # The session reads as the session-config route's does (deps.ReadSessionDep).
        generations.on_change(f"config:{workspace_id}")
        with Session(read_engine) as session:
            started = time.perf_counter_ns()
            sessions.resolve_agent(session, resolver, principal, workspace_id, agent_id)
            samples.append(time.perf_counter_ns() - started)
    results["resolve_uncached"] = percentiles(samples[100:])
    engine.dispose()
    return results


def fresh_postgres_database(server_url: str) -> str:
    name = f"switchboard_bench_{secrets.token_hex(4)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def verdict(value: float, target: tuple[str, float]) -> str:
    op, bound = target
    return "PASS" if (value >= bound if op == ">=" else value <= bound) else "FAIL"


def main() -> None:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (make bench installs Debian's wrk)")
    unleash_url = os.environ["SWITCHBOARD_TEST_UNLEASH_URL"]
    admin_token = os.environ["SWITCHBOARD_TEST_UNLEASH_ADMIN_TOKEN"]
    unleash_client_token = os.environ["SWITCHBOARD_TEST_UNLEASH_CLIENT_TOKEN"]
    postgres_url = os.environ["SWITCHBOARD_TEST_POSTGRES_URL"]
    wait_healthy(f"{unleash_url}/health")
    reference = host_reference_us()  # before anything of ours runs

    workdir = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    databases = {
        "postgresql": fresh_postgres_database(postgres_url),
        "sqlite": f"sqlite:///{workdir}/bench.db",
    }
    seeded = {label: seed(url, workdir / label) for label, url in databases.items()}

    admin = UnleashAdmin(
        seeded["postgresql"].settings.model_copy(
            update={"unleash_url": unleash_url, "unleash_admin_token": SecretStr(admin_token)}
        )
    )
    admin.ensure_context_field()
    for feature in seeded["postgresql"].features:
        admin.push(feature)
    unleash_header = f"Authorization: {unleash_client_token}"
    served = httpx.get(
        f"{unleash_url}/api/client/features", headers={"Authorization": unleash_client_token}
    ).json()
    assert len(served["features"]) >= FEATURES, "unleash-server does not serve the features"

    results: dict[str, Any] = {
        "unleash_client_features": measured(f"{unleash_url}/api/client/features", unleash_header)
    }
    results["unleash_client_features"]["bytes"] = response_bytes(
        f"{unleash_url}/api/client/features", unleash_header
    )
    for label in databases:
        results[f"switchboard_{label}"] = measure_switchboard(seeded[label], workdir / label)
    results["in_process_postgresql"] = measure_in_process(seeded["postgresql"])

    unleash_rps = results["unleash_client_features"]["requests_per_second"]
    ours = results["switchboard_postgresql"]
    in_process = results["in_process_postgresql"]
    figures = {
        "session_config_vs_unleash": ours["session_config"]["requests_per_second"] / unleash_rps,
        "session_config_p99_ms": ours["session_config"]["p99_ms"],
        "session_config_1000_agents_vs_unleash": ours["session_config_1000_agents"][
            "requests_per_second"
        ]
        / unleash_rps,
        "session_config_1000_agents_p99_ms": ours["session_config_1000_agents"]["p99_ms"],
        "session_config_after_tier_edit_vs_unleash": ours["session_config_after_tier_edit"][
            "requests_per_second"
        ]
        / unleash_rps,
        "session_config_after_tier_edit_p99_ms": ours["session_config_after_tier_edit"]["p99_ms"],
        "session_config_after_own_tier_edit_vs_unleash": ours["session_config_after_own_tier_edit"][
            "requests_per_second"
        ]
        / unleash_rps,
        "session_config_after_own_tier_edit_p99_ms": ours["session_config_after_own_tier_edit"][
            "p99_ms"
        ],
        "client_features_vs_unleash": ours["client_features"]["requests_per_second"] / unleash_rps,
        "flag_evaluation_memoized_p99_us": in_process["flag_evaluation_memoized"]["p99_us"],
        "flag_evaluation_raw_p99_us": in_process["flag_evaluation_raw"]["p99_us"],
        "resolve_uncached_p99_us": in_process["resolve_uncached"]["p99_us"],
        "catalogue_reads_slowest_vs_unleash": min(
            ours[name]["requests_per_second"] for name, _, _ in CATALOGUE_READS
        )
        / unleash_rps,
        "catalogue_reads_worst_p99_ms": max(ours[name]["p99_ms"] for name, _, _ in CATALOGUE_READS),
        "catalogue_304_vs_unleash": ours["tiers_304"]["requests_per_second"] / unleash_rps,
        "every_read_path_slowest_vs_unleash": min(r["requests_per_second"] for r in ours.values())
        / unleash_rps,
    }
    results["targets"] = {
        name: {"value": value, "target": f"{TARGETS[name][0]} {TARGETS[name][1]}"}
        | {"verdict": verdict(value, TARGETS[name])}
        for name, value in figures.items()
    }
    results["machine"] = {
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host_reference_us": reference,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2))

    rows = [
        ("unleash-server, PostgreSQL: /api/client/features", results["unleash_client_features"])
    ]
    for label in databases:
        for name, measurement in results[f"switchboard_{label}"].items():
            rows.append((f"switchboard, {label}: {name}", measurement))
    print(f"\n{'measurement':<58}{'req/s':>9}{'p99 ms':>9}{'bytes':>8}{'non-2xx':>9}")
    invalid = []
    for name, r in rows:
        print(
            f"{name:<58}{r['requests_per_second']:>9.0f}{r['p99_ms']:>9.2f}"
            f"{r['bytes']:>8}{r['non_2xx'] + r['warm_up_non_2xx']:>9}"
        )
        if r["non_2xx"] or r["warm_up_non_2xx"] or r["socket_errors"]:
            invalid.append(f"{name}: {r['non_2xx']} non-2xx, {r['socket_errors'] or 'no'} errors")
    for memo in ("flag_evaluation_memoized", "flag_evaluation_raw", "resolve_uncached"):
        p = in_process[memo]
        print(f"in-process {memo}: p50 {p['p50_us']:.1f} us, p99 {p['p99_us']:.1f} us")
    print(f"host reference (bench/host.py; compare runs by it): {reference:.2f} us")
    print()
    for name, outcome in results["targets"].items():
        print(f"{outcome['verdict']}  {name} = {outcome['value']:.2f} (target {outcome['target']})")
    shutil.rmtree(workdir, ignore_errors=True)
    if invalid:
        print("\nINVALID RUN: answers that were not 2xx:\n  " + "\n  ".join(invalid))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
