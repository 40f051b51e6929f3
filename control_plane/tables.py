"""Imports every table so SQLModel.metadata is complete (Alembic and tests use this)."""

from sqlmodel import SQLModel

from control_plane.audit import models as audit_models
from control_plane.auth import models as auth_models
from control_plane.calls import models as calls_models
from control_plane.catalogue import models as catalogue_models
from control_plane.insights import models as insights_models
from control_plane.keys import models as keys_models
from control_plane.releases import models as releases_models
from control_plane.rollout import models as rollout_models
from control_plane.telemetry import models as telemetry_models
from control_plane.workspaces import models as workspaces_models

metadata = SQLModel.metadata

__all__ = [
    "audit_models",
    "auth_models",
    "calls_models",
    "catalogue_models",
    "insights_models",
    "keys_models",
    "metadata",
    "releases_models",
    "rollout_models",
    "telemetry_models",
    "workspaces_models",
]
