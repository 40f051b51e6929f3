"""MkDocs hook: the REST reference page, written from the app's own OpenAPI document at build time.

No hand-kept table can drift from the routes: `mkdocs build` creates the app with throwaway
settings (an in-memory SQLite, a master key in a temporary folder), asks it for its OpenAPI
document and renders every operation, grouped by tag, as `reference.md`.
"""

import logging
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

from control_plane.app import create_app
from control_plane.settings import Settings

METHODS = ("get", "put", "post", "patch", "delete")


def openapi_document() -> dict[str, Any]:
    # The throwaway master key's warning is about this build's settings, not the docs.
    logging.getLogger("control_plane.keys.crypto").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            environment="test",
            database_url="sqlite://",
            master_key_file=Path(folder) / "master.key",
        )
        return create_app(settings).openapi()


def schema_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[1]}`"
    if "anyOf" in schema:
        return " or ".join(schema_name(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {schema_name(schema.get('items', {}))}"
    return f"`{schema.get('type', 'any')}`"


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def operation(method: str, path: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", ""]
    if op.get("summary"):
        lines += [f"**{op['summary']}**", ""]
    if op.get("description"):
        lines += [op["description"].strip(), ""]
    parameters = op.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | required | type | description |", "|---|---|---|---|---|"]
        for p in parameters:
            lines.append(
                f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} | "
                f"{schema_name(p.get('schema', {}))} | {cell(p.get('description', ''))} |"
            )
        lines.append("")
    body = op.get("requestBody", {}).get("content", {})
    for media_type, content in body.items():
        lines += [f"Request body ({media_type}): {schema_name(content.get('schema', {}))}", ""]
    answers = []
    for status, response in op.get("responses", {}).items():
        content = response.get("content", {})
        shape = ", ".join(
            f"{media} {schema_name(c.get('schema', {}))}" for media, c in content.items()
        )
        answers.append(
            f"- **{status}** {cell(response.get('description', ''))}"
            + (f": {shape}" if shape else "")
        )
    return [*lines, "Answers:", "", *answers, ""]


def render(document: dict[str, Any]) -> str:
    by_tag: dict[str, list[str]] = {}
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                op = item[method]
                tag = (op.get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).extend(operation(method, path, op))
    info = document["info"]
    lines = [
        "# REST reference",
        "",
        f"Generated from the OpenAPI document of {info['title']} {info['version']} when this site "
        "was built (`scripts/docs_hooks.py`); a running server serves the same document at "
        "`/openapi.json` and an interactive view at `/docs`. Who may call what, and the error "
        "format, are on [the API at a glance](api.md).",
        "",
    ]
    for tag in sorted(by_tag):
        lines += [f"## {tag}", "", *by_tag[tag]]
    return "\n".join(lines) + "\n"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(File.generated(config, "reference.md", content=render(openapi_document())))
    return files
