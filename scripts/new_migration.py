"""Autogenerate the next Alembic revision against a scratch SQLite database, tidy and format it.

Usage: .venv/bin/python scripts/new_migration.py "what the revision does"
"""

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command

from control_plane.migrate import MIGRATIONS_DIR, alembic_config, upgrade


def main() -> None:
    message = sys.argv[1]
    existing = sorted(
        p.name[:4] for p in (MIGRATIONS_DIR / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")
    )
    rev_id = f"{int(existing[-1]) + 1:04d}" if existing else "0001"
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{scratch}/scratch.db"
        upgrade(url)
        script = command.revision(
            alembic_config(url), message=message, autogenerate=True, rev_id=rev_id
        )
    path = Path(script.path)  # type: ignore[union-attr]
    text = path.read_text()
    text = re.sub(r"^import sqlmodel\n|^Create Date: .*\n|^\s*# ### .*\n", "", text, flags=re.M)
    path.write_text(text)
    subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(path)], check=True)
    subprocess.run([sys.executable, "-m", "ruff", "check", "-q", "--fix", str(path)], check=True)
    print(path)


if __name__ == "__main__":
    main()
