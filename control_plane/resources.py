"""Files the service ships beside its code: page templates and static files, flag definitions,
the database migrations.

They live at the top of the repository (templates/, flags/, migrations/) and the build maps them
into the package as control_plane.templates, control_plane.flags and control_plane.migrations, so
they are found the same way in a checkout (an editable install) and in an installed wheel.
"""

from importlib.resources import files
from pathlib import Path
from typing import Literal


def resource_dir(name: Literal["templates", "flags", "migrations"]) -> Path:
    return Path(str(files(f"control_plane.{name}")))
