"""Run Alembic from code, so `switchboard migrate` and the tests need no alembic.ini."""

from alembic import command
from alembic.config import Config

from control_plane.resources import resource_dir

MIGRATIONS_DIR = resource_dir("migrations")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)
