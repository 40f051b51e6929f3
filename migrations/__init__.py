"""The Alembic chain; installed as the package `control_plane.migrations`."""
