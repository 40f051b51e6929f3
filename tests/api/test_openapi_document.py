"""The OpenAPI document a frontend depends on: valid OpenAPI (openapi-spec-validator), and the
TypeScript types openapi-typescript generates from it compile under `tsc --strict`."""

import json
import subprocess
from pathlib import Path

from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from tests.conftest import skip_or_fail

FRONTEND = Path(__file__).resolve().parents[1] / "frontend"
USES_THE_TYPES = """
import type { components, paths } from "./switchboard";

type Tier = components["schemas"]["TierRead"];
type TestCall = components["schemas"]["BrowserCall"];
type Tiers = paths["/api/v1/tiers"]["get"];

export function names(tiers: Tier[]): string[] {
  return tiers.map((tier) => `${tier.name}: $${tier.cost_per_hour}/h`);
}
export function socketOf(call: TestCall): string {
  return call.url;
}
export type TiersQuery = NonNullable<Tiers["parameters"]["query"]>;
"""


def document(client: TestClient) -> dict:  # type: ignore[type-arg]
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    return answer.json()  # type: ignore[no-any-return]


def test_the_document_is_valid_openapi(client: TestClient) -> None:
    spec = document(client)
    validate(spec)
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/workspaces/{workspace_id}/agents/{agent_id}/test-calls" in spec["paths"]


def frontend_tool(name: str) -> Path:
    tool = FRONTEND / "node_modules" / ".bin" / name
    if not tool.exists():
        skip_or_fail("openapi-typescript is not installed: make test runs npm ci in tests/frontend")
    return tool


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_openapi_typescript_cli_generates_types_without_errors(
    client: TestClient, tmp_path: Path
) -> None:
    (tmp_path / "openapi.json").write_text(json.dumps(document(client)))
    generated = run(
        [str(frontend_tool("openapi-typescript")), "openapi.json", "-o", "cli.ts"], tmp_path
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "error" not in (generated.stdout + generated.stderr).lower()
    assert "TierRead: {" in (tmp_path / "cli.ts").read_text()


def test_the_generated_types_compile_under_strict_typescript(
    client: TestClient, tmp_path: Path
) -> None:
    """With tests/frontend/generate.mjs (openapi-typescript's Node API, JsonValue as a
    recursive alias: see the script for why), the types and code using them compile."""
    (tmp_path / "openapi.json").write_text(json.dumps(document(client)))
    generated = run(
        ["node", str(FRONTEND / "generate.mjs"), "openapi.json", "switchboard.ts"], tmp_path
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    (tmp_path / "uses.ts").write_text(USES_THE_TYPES)
    compiled = run(
        [
            str(frontend_tool("tsc")),
            "--noEmit",
            "--strict",
            "--target",
            "es2022",
            "--module",
            "esnext",
            "--moduleResolution",
            "bundler",
            "switchboard.ts",
            "uses.ts",
        ],
        tmp_path,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
