"""The import-linter contracts in pyproject.toml hold on this tree (`make test` runs
`lint-imports` too), and each one breaks when the import it forbids is written: the contracts
are checked on a copy of the packages with one such import added."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# One import per contract, each written into a copy of the tree: (file, line to add, contract).
VIOLATIONS = [
    (
        "switchboard_runtime/tools.py",
        "import control_plane.settings",
        "The runtime never imports the control plane",
    ),
    (
        "switchboard_runtime/session.py",
        "import starlette.websockets",
        "The bare runtime needs only httpx, websockets, pydantic and orjson",
    ),
    (
        "control_plane/workspaces/service.py",
        "import control_plane.catalogue.api",
        "Only the app factory imports a domain's REST routes and pages",
    ),
    (
        "control_plane/keys/service.py",
        "import control_plane.web.rendering",
        "Domains do not import the web layer; only their pages do",
    ),
    (
        "control_plane/catalogue/service.py",
        "import fastapi",
        "Services and models do not speak HTTP themselves",
    ),
]


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_contracts_hold_on_this_tree(tmp_path: Path) -> None:
    tree = copy_of_the_packages(tmp_path)
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


def copy_of_the_packages(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "control_plane", tree / "control_plane", ignore=ignore)
    shutil.copytree(
        ROOT / "runtime" / "switchboard_runtime", tree / "switchboard_runtime", ignore=ignore
    )
    return tree


@pytest.mark.parametrize(("module", "line", "contract"), VIOLATIONS)
def test_each_contract_breaks_on_the_import_it_forbids(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    tree = copy_of_the_packages(tmp_path)
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert f"{contract} BROKEN" in result.stdout
