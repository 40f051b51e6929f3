"""The `switchboard` command: migrate, seed, serve, and manage tokens."""

from typing import Annotated

import typer

from control_plane import migrate as migrations
from control_plane.auth import service as auth_service
from control_plane.catalogue.seed import seed_catalogue
from control_plane.db import make_engine, session_scope
from control_plane.settings import Settings

app = typer.Typer(help="Switchboard control plane.", no_args_is_help=True)
tokens_app = typer.Typer(
    help="Machine tokens (admin, service, workspace:<id>).", no_args_is_help=True
)
app.add_typer(tokens_app, name="tokens")
keys_app = typer.Typer(help="Master keys for provider API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@app.command()
def migrate(revision: str = "head") -> None:
    """Bring the database schema up to date (Alembic)."""
    settings = Settings()
    migrations.upgrade(settings.database_url, revision)
    typer.echo(f"database migrated to {revision}")


@app.command()
def seed(
    demo: Annotated[bool, typer.Option(help="Also add demo workspaces, agents, tokens.")] = False,
) -> None:
    """Load the seed catalogue (idempotent); with --demo, demo data and fresh demo tokens."""
    from control_plane.demo import seed_demo

    engine = make_engine(Settings())
    with session_scope(engine) as session:
        added = seed_catalogue(session)
        typer.echo(
            f"catalogue: {added['tiers']} tiers, {added['voices']} voices, "
            f"{added['voice_maps']} voice maps added"
        )
        if demo:
            tokens = seed_demo(session)
    if demo:
        typer.echo("demo workspaces: acme (Acme Support), globex (Globex Sales)")
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
) -> None:
    """Serve the control plane with uvicorn."""
    import uvicorn

    uvicorn.run(
        "control_plane.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        log_level="info",
        access_log=False,
    )


@tokens_app.command("create")
def tokens_create(
    scope: Annotated[list[str], typer.Option(help="admin, service or workspace:<id>; repeatable")],
    name: Annotated[str, typer.Option(help="What the token is for")] = "cli",
) -> None:
    """Create a token. The token is printed once, as the last line."""
    engine = make_engine(Settings())
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
    engine = make_engine(Settings())
    with session_scope(engine) as session:
        for row in auth_service.list_tokens(session):
            state = "revoked" if row.revoked_at else "active"
            typer.echo(
                f"{row.id}\t{row.name}\t{row.token_prefix}…\t{','.join(row.scopes)}\t{state}"
            )
    engine.dispose()


@tokens_app.command("revoke")
def tokens_revoke(token_id: int) -> None:
    """Revoke a token by id."""
    engine = make_engine(Settings())
    with session_scope(engine) as session:
        auth_service.revoke_token(session, token_id)
    engine.dispose()
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

    settings = Settings()
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
