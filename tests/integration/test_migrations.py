"""Migrations run up, down and up again on SQLite and PostgreSQL, and match the models."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from control_plane.migrate import downgrade, upgrade
from control_plane.tables import metadata


def schema_drift(url: str) -> list[object]:
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = list(compare_metadata(context, metadata))
    engine.dispose()
    return diff


def test_upgrade_downgrade_upgrade_without_drift(database_url: str) -> None:
    # database_url arrives migrated and seeded; go all the way down and back up again.
    downgrade(database_url, "base")
    engine = create_engine(database_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    upgrade(database_url)
    assert schema_drift(database_url) == []


def test_add_xai_api_key_is_its_own_revision(database_url: str) -> None:
    downgrade(database_url, "0001")
    engine = create_engine(database_url)
    tables = set(inspect(engine).get_table_names())
    assert "workspace_api_keys" not in tables and "workspace_settings" in tables
    engine.dispose()
    upgrade(database_url, "0002")
    engine = create_engine(database_url)
    with engine.connect() as connection:
        providers = {row[0] for row in connection.execute(text("SELECT id FROM key_providers"))}
    engine.dispose()
    assert providers == {"xai", "openai"}
    upgrade(database_url)
    assert schema_drift(database_url) == []
