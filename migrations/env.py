"""Alembic environment: one chain of revisions for SQLite (batch mode) and PostgreSQL."""

from typing import Any

from alembic import context
from sqlalchemy import DateTime, engine_from_config, pool

from control_plane.settings import Settings
from control_plane.tables import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings().database_url
is_sqlite = url.startswith("sqlite")


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Write plain SQLAlchemy types into revisions, so they never import application code."""
    if type_ == "type" and isinstance(obj, DateTime) and obj.timezone:
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and type(obj).__module__.startswith("sqlmodel"):
        length = getattr(obj, "length", None)
        return f"sa.String(length={length})" if length else "sa.String()"
    if type_ == "type" and type(obj).__module__.startswith("control_plane"):
        impl = obj.impl
        return "sa.DateTime(timezone=True)" if isinstance(impl, DateTime) else f"sa.{impl!r}"
    return False


def run_migrations_offline() -> None:
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=is_sqlite,
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:
        engine = engine_from_config(
            {"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool
        )
        with engine.connect() as connection:
            _run(connection)
        engine.dispose()
    else:
        _run(connectable)


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=is_sqlite,
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
