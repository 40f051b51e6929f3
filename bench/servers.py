"""uvicorn or granian for the control plane? Side by side in one run (`make bench-servers`).

The same app, database (SQLite, seeded like `make bench`) and load: `switchboard serve` as it runs
today (uvicorn, httptools, uvloop, our header-timeout protocol) and granian (Rust HTTP, ASGI
interface, one worker, its own header-read timeout). wrk -t1 -c16 -d10s after 3 s of the same
load, on the hot reads: session-config, the client API, the tier list, a 304. Any non-2xx/3xx
makes the run invalid. Prints the ratio granian / uvicorn per read path.
"""

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.control_plane import CLIENT_TOKEN, measured, seed  # noqa: E402
from bench.runtime import start  # noqa: E402
from tests.fakes.server import free_port  # noqa: E402

BIN = Path(sys.executable).parent


def command(server: str, port: int) -> list[str]:
    if server == "uvicorn":
        return [str(BIN / "switchboard"), "serve", "--port", str(port)]
    return [
        str(BIN / "granian"),
        "--interface",
        "asgi",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--http1-header-read-timeout",
        "10000",
        "--no-log",
        "control_plane.app:create_app",
    ]


@contextmanager
def serving(server: str, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start(command(server, port), env, f"{base}/healthz")
    try:
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (make bench installs Debian's wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-servers-"))
    seeded = seed(f"sqlite:///{workdir}/servers.db", workdir)
    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": seeded.settings.database_url,
        "SWITCHBOARD_ENVIRONMENT": "test",
        "SWITCHBOARD_MASTER_KEY_FILE": str(workdir / "master.key"),
        "SWITCHBOARD_CLIENT_API_TOKENS": CLIENT_TOKEN,
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
    }
    service = f"Authorization: Bearer {seeded.service_token}"
    results: dict[str, dict[str, Any]] = {}
    for server in ("uvicorn", "granian"):
        with serving(server, env) as base:
            warm = httpx.get(
                f"{base}{seeded.single_agent_path}",
                headers={"Authorization": f"Bearer {seeded.service_token}"},
            )
            assert warm.status_code == 200, warm.text
            etag = httpx.get(f"{base}/api/v1/tiers").headers["etag"]
            results[server] = {
                "session_config": measured(f"{base}{seeded.single_agent_path}", service),
                "client_features": measured(
                    f"{base}/api/client/features", f"Authorization: {CLIENT_TOKEN}"
                ),
                "tiers": measured(f"{base}/api/v1/tiers", "Accept: application/json"),
                "tiers_304": measured(f"{base}/api/v1/tiers", f"If-None-Match: {etag}"),
            }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "servers.json").write_text(json.dumps(results, indent=2))
    header = ("read path", "uvicorn req/s", "p99", "granian req/s", "p99", "ratio")
    print("{:<18}{:>15}{:>8}{:>15}{:>8}{:>7}".format(*header))
    invalid = []
    for path in results["uvicorn"]:
        u, g = results["uvicorn"][path], results["granian"][path]
        print(
            f"{path:<18}{u['requests_per_second']:>15.0f}{u['p99_ms']:>8.2f}"
            f"{g['requests_per_second']:>15.0f}{g['p99_ms']:>8.2f}"
            f"{g['requests_per_second'] / u['requests_per_second']:>7.2f}"
        )
        for server, r in (("uvicorn", u), ("granian", g)):
            if r["non_2xx"] or r["warm_up_non_2xx"] or r["socket_errors"]:
                invalid.append(f"{server} {path}: {r['non_2xx']} non-2xx {r['socket_errors']}")
    shutil.rmtree(workdir, ignore_errors=True)
    if invalid:
        print("INVALID RUN:\n  " + "\n  ".join(invalid))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
