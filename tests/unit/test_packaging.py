"""The two distributions agree with the tree and with each other: every package of
control_plane/ is listed for the wheel (they are listed by hand, for the data-folder mapping),
and both carry one version, which the control plane pins the runtime to."""

import tomllib
from pathlib import Path

import switchboard_runtime

ROOT = Path(__file__).resolve().parents[2]
DATA_PACKAGES = {
    "control_plane.templates",
    "control_plane.templates.static",
    "control_plane.flags",
    "control_plane.migrations",
    "control_plane.migrations.versions",
}


def pyproject(path: Path) -> dict:  # type: ignore[type-arg]
    return tomllib.loads(path.read_text())


def test_every_package_of_the_control_plane_ships_in_its_wheel() -> None:
    listed = set(pyproject(ROOT / "pyproject.toml")["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "control_plane").rglob("__init__.py")
    }
    assert listed == on_disk | DATA_PACKAGES


def test_both_distributions_carry_one_version() -> None:
    control_plane = pyproject(ROOT / "pyproject.toml")["project"]
    runtime = pyproject(ROOT / "runtime" / "pyproject.toml")["project"]
    assert control_plane["version"] == runtime["version"] == switchboard_runtime.__version__
    pins = [d for d in control_plane["dependencies"] if d.startswith("switchboard-runtime")]
    assert pins == [f"switchboard-runtime[worker,granian]=={runtime['version']}"]
