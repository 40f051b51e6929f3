"""The `switchboard` command: migrate, seed, serve, and manage tokens."""

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, NoReturn

import typer

# Every table's metadata, so foreign keys between domains resolve whichever command runs.
import control_plane.tables  # noqa: F401
from control_plane import migrate as migrations
from control_plane.auth import service as auth_service
from control_plane.auth.passwords import Passwords
from control_plane.catalogue.seed import seed_catalogue
from control_plane.db import make_engine, session_scope
from control_plane.settings import Settings, production_refusals
from switchboard_runtime.worker.settings import SettingsError, load_settings

if TYPE_CHECKING:
    from sqlmodel import Session

    from control_plane.errors import ProblemError
    from control_plane.releases.models import ReleasePlan
    from control_plane.rollout.gate import FlagGate
    from control_plane.rollout.models import Flag

app = typer.Typer(help="Switchboard control plane.", no_args_is_help=True)
tokens_app = typer.Typer(
    help="Machine tokens (admin, service, workspace:<id>).", no_args_is_help=True
)
app.add_typer(tokens_app, name="tokens")
users_app = typer.Typer(help="People who sign in to the pages.", no_args_is_help=True)
app.add_typer(users_app, name="users")
keys_app = typer.Typer(help="Master keys for provider API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@app.command()
def migrate(revision: str = "head") -> None:
    """Bring the database schema up to date (Alembic)."""
    from control_plane.keys import service as keys_service
    from control_plane.keys.crypto import Keyring

    settings = _settings()
    migrations.upgrade(settings.database_url, revision)
    typer.echo(f"database migrated to {revision}")
    if revision != "head":
        return
    # Data that needs the master key, which Alembic does not have: fingerprints stored as plain
    # SHA-256 before they were keyed are recomputed once.
    engine = make_engine(settings)
    with session_scope(engine) as session:
        if keys_service.has_unkeyed_fingerprints(session):
            count = keys_service.refresh_fingerprints(session, Keyring.from_settings(settings))
            typer.echo(f"key fingerprints keyed with the master key: {count}")
    engine.dispose()


@app.command()
def seed(
    demo: Annotated[bool, typer.Option(help="Also add demo workspaces, agents, tokens.")] = False,
) -> None:
    """Load the seed catalogue (idempotent); with --demo, demo data and fresh demo tokens."""
    from control_plane.demo import seed_demo
    from control_plane.rollout.service import seed_flags

    settings = _settings()
    if demo and settings.environment == "production":
        typer.echo(
            "error: demo data (admin@example.com / switchboard-demo and demo tokens) is refused "
            "in production; create users and tokens with `switchboard users` and `tokens`.",
            err=True,
        )
        raise typer.Exit(2)
    engine = make_engine(settings)
    with session_scope(engine) as session:
        added = seed_catalogue(session)
        typer.echo(
            f"catalogue: {added['tiers']} tiers, {added['voices']} voices, "
            f"{added['voice_maps']} voice maps added"
        )
        flags = seed_flags(session)
        typer.echo(f"flags: {flags['flags']} flags, {flags['cohorts']} cohorts added")
        if demo:
            tokens = seed_demo(session, Passwords(settings.password_hash_cost))
    if demo:
        typer.echo("demo workspaces: acme (Acme Support), globex (Globex Sales)")
        typer.echo(
            "demo sign-in at http://127.0.0.1:8000/login (password switchboard-demo): "
            "admin@example.com, ava@acme.example, gus@globex.example"
        )
        typer.echo("demo tokens (shown once; `switchboard seed --demo` issues new ones):")
        for name, token in tokens.items():
            typer.echo(f"  {name:<13} {token}")
    engine.dispose()


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    reload: bool = False,
    server: Annotated[
        Literal["uvicorn", "granian"], typer.Option(help="the HTTP server (see docs/benchmarks.md)")
    ] = "uvicorn",
) -> None:
    """Serve the control plane (uvicorn by default; granian with --server granian)."""
    from control_plane.keys.crypto import Keyring, MasterKeyError
    from switchboard_runtime.worker.serving import serve as serve_app

    settings = _settings()
    refusals = production_refusals(settings)
    try:
        Keyring.from_settings(settings)
    except MasterKeyError as exc:
        refusals.append(str(exc))
    if refusals:
        for refusal in refusals:
            typer.echo(f"refused: {refusal}", err=True)
        raise typer.Exit(2)
    serve_app(
        "control_plane.app:create_app",
        host=host,
        port=port,
        server=server,
        workers=workers,
        reload=reload,
    )


def _settings() -> Settings:
    """The settings; an invalid one is refused like any other: `error (invalid_setting): ...`."""
    try:
        return load_settings(Settings)
    except SettingsError as exc:
        for line in exc.lines:
            typer.echo(f"error (invalid_setting): {line}", err=True)
        raise typer.Exit(2) from None


def _refused(exc: "ProblemError") -> NoReturn:
    """A refusal as the CLI says it: `error (code): detail` on stderr, exit status 2."""
    typer.echo(f"error ({exc.code}): {exc.detail}", err=True)
    raise typer.Exit(2) from exc


@contextlib.contextmanager
def _session() -> Iterator["Session"]:
    """One transaction on the configured database, committed when the block ends; a refusal
    (an unknown token, a taken email, ...) is printed by `_refused`, never as a traceback."""
    from control_plane.errors import ProblemError

    engine = make_engine(_settings())
    try:
        with session_scope(engine) as session:
            yield session
    except ProblemError as exc:
        _refused(exc)
    finally:
        engine.dispose()


@tokens_app.command("create")
def tokens_create(
    scope: Annotated[list[str], typer.Option(help="admin, service or workspace:<id>; repeatable")],
    name: Annotated[str, typer.Option(help="What the token is for")] = "cli",
) -> None:
    """Create a token. The token is printed once, as the last line."""
    engine = make_engine(_settings())
    try:
        with session_scope(engine) as session:
            row, token = auth_service.create_token(session, name=name, scopes=scope)
            token_id = row.id
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()
    typer.echo(f"token {token_id} ({name}) scopes={','.join(scope)}")
    typer.echo(token)


@tokens_app.command("list")
def tokens_list() -> None:
    """List tokens (never the tokens themselves)."""
    with _session() as session:
        cursor: str | None = None
        while True:
            rows, cursor = auth_service.list_tokens(session, cursor=cursor)
            for row in rows:
                state = "revoked" if row.revoked_at else "active"
                typer.echo(
                    f"{row.id}\t{row.name}\t{row.token_prefix}…\t{','.join(row.scopes)}\t{state}"
                )
            if cursor is None:
                break


@tokens_app.command("revoke")
def tokens_revoke(token_id: int) -> None:
    """Revoke a token by id."""
    with _session() as session:
        auth_service.revoke_token(session, token_id)
    typer.echo(f"token {token_id} revoked")


@keys_app.command("generate-master")
def keys_generate_master(
    key_id: Annotated[str, typer.Option(help="Name of the new key")] = "k1",
) -> None:
    """Print a new master key entry for SWITCHBOARD_MASTER_KEYS (or a key file)."""
    from control_plane.keys.crypto import generate_master_key

    typer.echo(f"{key_id}:{generate_master_key()}")


@keys_app.command("rotate-master")
def keys_rotate_master(
    new_key_id: Annotated[
        str | None,
        typer.Option(
            help="With a key file: add a new active key with this id before re-encrypting"
        ),
    ] = None,
) -> None:
    """Re-encrypt every stored provider key under the active master key (one transaction).

    Put the new key first in SWITCHBOARD_MASTER_KEYS (keep the old ones) and run this; with a key
    file, --new-key-id adds the new key for you. Safe to run again if interrupted.
    """
    from control_plane.keys import service as keys_service
    from control_plane.keys.crypto import Keyring, MasterKeyError, prepend_key

    settings = _settings()
    try:
        if new_key_id is not None:
            if settings.master_key_file is None:
                raise MasterKeyError("--new-key-id needs SWITCHBOARD_MASTER_KEY_FILE")
            prepend_key(settings.master_key_file, new_key_id)
        keyring = Keyring.from_settings(settings)
    except MasterKeyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    engine = make_engine(settings)
    with session_scope(engine) as session:
        count = keys_service.rotate_master(session, keyring, actor="cli:rotate-master")
    engine.dispose()
    typer.echo(f"re-encrypted {count} keys under master key '{keyring.active_id}'")


flags_app = typer.Typer(
    help="Feature flags: stages, kill switch, import/export.", no_args_is_help=True
)
cohorts_app = typer.Typer(help="Cohorts: named lists of workspaces.", no_args_is_help=True)
app.add_typer(flags_app, name="flags")
app.add_typer(cohorts_app, name="cohorts")


def _flag_command(change: Callable[["Session", "FlagGate"], object]) -> None:
    """Run a flag change in one transaction; it reaches Unleash (scale mode) and, on
    PostgreSQL, every running Switchboard process. A running SQLite server reloads on restart."""
    from control_plane.changes import ChangeFeed
    from control_plane.errors import ProblemError
    from control_plane.rollout.gate import FlagGate

    settings = _settings()
    engine = make_engine(settings)
    gate = FlagGate(settings, engine, ChangeFeed(settings))
    try:
        with session_scope(engine) as session:
            change(session, gate)
    except ProblemError as exc:
        _refused(exc)
    finally:
        gate.close()
        engine.dispose()


def _print_flag(flag: "Flag") -> None:
    state = "KILLED" if flag.killed else flag.stage
    typer.echo(
        f"{flag.name}\tstage={state}\tinternal={','.join(flag.internal_cohorts) or '-'}"
        f"\tbeta={','.join(flag.beta_cohorts) or '-'}\tpercentage={flag.beta_percentage}"
        f"\tversion={flag.version}"
    )


@flags_app.command("list")
def flags_list() -> None:
    """List flags with their stage."""
    from control_plane.rollout import service as rollout

    engine = make_engine(_settings())
    with session_scope(engine) as session:
        for flag in rollout.list_flags(session):
            _print_flag(flag)
    engine.dispose()


@flags_app.command("show")
def flags_show(name: str) -> None:
    """Show a flag's rollout plan and its compiled Unleash feature."""
    import json

    from control_plane.rollout import service as rollout

    def show(session: "Session", _gate: "FlagGate") -> None:
        flag = rollout.get_flag(session, name)
        _print_flag(flag)
        typer.echo(json.dumps(flag.definition, indent=2))

    _flag_command(show)


@flags_app.command("stage")
def flags_stage(name: str, stage: str, actor: str = "cli") -> None:
    """Move a flag to off, internal, beta or ga."""
    from control_plane.rollout import service as rollout

    _flag_command(
        lambda s, g: _print_flag(rollout.set_stage(s, g, name, stage, actor=f"cli:{actor}"))
    )


@flags_app.command("kill")
def flags_kill(name: str, reason: str = "", actor: str = "cli") -> None:
    """Turn a flag off for everyone at once; its stage is remembered."""
    from control_plane.rollout import service as rollout

    _flag_command(
        lambda s, g: _print_flag(
            rollout.kill(s, g, name, actor=f"cli:{actor}", reason=reason or None)
        )
    )


@flags_app.command("resume")
def flags_resume(name: str, actor: str = "cli") -> None:
    """Undo the kill switch: the remembered stage applies again."""
    from control_plane.rollout import service as rollout

    _flag_command(lambda s, g: _print_flag(rollout.resume(s, g, name, actor=f"cli:{actor}")))


@flags_app.command("export")
def flags_export() -> None:
    """Print flags (Unleash feature format) and cohorts as JSON."""
    import json

    from control_plane.rollout import service as rollout

    engine = make_engine(_settings())
    with session_scope(engine) as session:
        typer.echo(json.dumps(rollout.export_definitions(session), indent=2, sort_keys=True))
    engine.dispose()


@flags_app.command("import")
def flags_import(path: Path, actor: str = "cli") -> None:
    """Load flags and cohorts from a file written by `flags export`."""
    import json

    from control_plane.rollout import service as rollout

    document = json.loads(path.read_text())
    _flag_command(
        lambda s, g: typer.echo(
            f"imported {rollout.import_definitions(s, g, document, actor=f'cli:{actor}')}"
        )
    )


@cohorts_app.command("list")
def cohorts_list() -> None:
    """List cohorts and their workspaces."""
    from control_plane.rollout import service as rollout

    engine = make_engine(_settings())
    with session_scope(engine) as session:
        for cohort in rollout.list_cohorts(session):
            typer.echo(f"{cohort.name}\t{','.join(cohort.members) or '-'}\t{cohort.description}")
    engine.dispose()


@cohorts_app.command("set")
def cohorts_set(name: str, workspaces: list[str], actor: str = "cli") -> None:
    """Replace a cohort's workspaces (creates the cohort if needed)."""
    from control_plane.rollout import service as rollout
    from control_plane.rollout.models import CohortWrite

    def put(session: "Session", gate: "FlagGate") -> None:
        cohort = rollout.put_cohort(
            session, gate, name, CohortWrite(members=workspaces), actor=f"cli:{actor}"
        )
        typer.echo(f"{cohort.name}\t{','.join(cohort.members) or '-'}")

    _flag_command(put)


@app.command()
def worker(
    host: str = "127.0.0.1",
    port: int = 8001,
    server: Annotated[
        Literal["uvicorn", "granian"], typer.Option(help="the HTTP server (see docs/benchmarks.md)")
    ] = "uvicorn",
    media_port: Annotated[
        str | None,
        typer.Option(
            help="the media plane's port for call sockets (default: "
            "SWITCHBOARD_WORKER_MEDIA_PORT, else 8002; 0: a free port; off: on the HTTP port)"
        ),
    ] = None,
) -> None:
    """Serve the call worker: /twiml, /texml on --port; /ws/twilio/{agent_id},
    /ws/telnyx/{agent_id} and /ws/realtime/{agent_id} on the media plane (--media-port).

    The same as `switchboard-worker` from switchboard-runtime[worker]. Needs
    SWITCHBOARD_SERVICE_TOKEN and SWITCHBOARD_CONTROL_PLANE_URL (and
    SWITCHBOARD_WORKER_PUBLIC_URL for the TwiML/TeXML answers).
    """
    from switchboard_runtime.worker.cli import run

    raise typer.Exit(run(host, port, server, media_port))


@users_app.command("set-password")
def users_set_password(
    email: str,
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)
    ] = "",
) -> None:
    """Give a person a new password; every page session they had ends."""
    with _session() as session:
        passwords = Passwords(_settings().password_hash_cost)
        user = auth_service.set_password(session, passwords, email, password)
    typer.echo(f"user {user.id} {user.email}: password changed, sessions ended")


@users_app.command("create")
def users_create(
    email: str,
    role: Annotated[
        str, typer.Option(help="admin (product team) or member (of one workspace)")
    ] = "member",
    workspace: Annotated[str | None, typer.Option(help="The member's workspace id")] = None,
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)
    ] = "",
) -> None:
    """Create a person who can sign in (password hashed with argon2)."""
    with _session() as session:
        user = auth_service.create_user(
            session,
            Passwords(_settings().password_hash_cost),
            email=email,
            password=password,
            role=role,
            workspace_id=workspace,
        )
    typer.echo(f"user {user.id} {user.email} ({user.role}{f', {workspace}' if workspace else ''})")


plans_app = typer.Typer(
    help="Release plans: milestones a flag walks by itself while its gates are green.",
    no_args_is_help=True,
)
flags_app.add_typer(plans_app, name="plan")


def _print_plan(plan: "ReleasePlan") -> None:
    from control_plane.releases import service as releases

    read = releases.read(plan)
    typer.echo(
        f"{read.flag}\t{read.status}{'' if read.enabled else ' (off)'}\t{read.reason or '-'}"
    )
    for step in read.timeline:
        when = step.reached_at.isoformat() if step.reached_at else "-"
        typer.echo(f"  {step.state:<8}{step.name}\t{step.stage} {step.beta_percentage}%\t{when}")


@plans_app.command("show")
def plan_show(name: str) -> None:
    """A flag's release plan: its milestones, where it stands, why it waits."""
    from control_plane.releases import service as releases

    _flag_command(lambda session, _gate: _print_plan(releases.get_plan(session, name)))


@plans_app.command("set")
def plan_set(name: str, path: Path, actor: str = "cli") -> None:
    """Set a flag's plan from a JSON file: {"milestones": [...], "enabled": true}."""
    import json

    from pydantic import ValidationError

    from control_plane.releases import service as releases
    from control_plane.releases.models import PlanWrite

    try:
        body = PlanWrite.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:
        typer.echo(f"error (invalid_plan): {exc}", err=True)
        raise typer.Exit(2) from exc
    _flag_command(
        lambda session, gate: _print_plan(
            releases.put_plan(session, gate, name, body, actor=f"cli:{actor}")
        )
    )


@plans_app.command("check")
def plan_check(name: str) -> None:
    """Look at the plan now: advance the flag, or say why it waits."""
    from control_plane.releases import service as releases

    def check(session: "Session", gate: "FlagGate") -> None:
        releases.get_plan(session, name)
        result = releases.check(session, gate, name)
        typer.echo(f"{result.flag}\t{result.outcome}\t{result.milestone}\t{result.reason}")

    _flag_command(check)


@plans_app.command("resume")
def plan_resume(name: str, actor: str = "cli") -> None:
    """Go on after a hold, from where the flag stands now."""
    from control_plane.releases import service as releases

    _flag_command(
        lambda session, gate: _print_plan(
            releases.resume(session, gate, name, actor=f"cli:{actor}")
        )
    )


transcripts_app = typer.Typer(help="Kept call transcripts (opt-in).", no_args_is_help=True)
app.add_typer(transcripts_app, name="transcripts")


@transcripts_app.command("purge")
def transcripts_purge(
    workspace: Annotated[str | None, typer.Option(help="Delete all of one workspace's")] = None,
) -> None:
    """Delete transcripts past their retention (the service does this every few minutes too)."""
    from control_plane.insights import service as insights

    with _session() as session:
        deleted = insights.purge_transcripts(session, workspace_id=workspace)
    typer.echo(f"transcripts deleted: {deleted}")
