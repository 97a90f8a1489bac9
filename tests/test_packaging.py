"""The wheel carries every package and data folder of the repository.

CI installs the project non-editable, so a package folder missing from pyproject.toml's list imports
in a checkout and fails in the installed copy. These checks read the list and the tree and compare.
"""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
ROOTS = {"planner": "fitplan", "validate": "fitplan.validate", "data": "fitplan.data"}


def _tree_packages() -> set[str]:
    found = set()
    for folder, name in ROOTS.items():
        base = ROOT / folder
        for path in [base, *sorted(p for p in base.rglob("*") if p.is_dir())]:
            if "__pycache__" in path.parts:
                continue
            has_code = (path / "__init__.py").exists()
            has_data = folder == "data" and any(p.is_file() for p in path.iterdir())
            if has_code or has_data or path == base:
                rel = path.relative_to(base).parts
                found.add(".".join((name, *rel)))
    return found


def test_every_package_folder_is_listed():
    listed = set(CONFIG["packages"])
    missing = _tree_packages() - listed
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_every_listed_package_exists():
    listed = set(CONFIG["packages"])
    stale = listed - _tree_packages()
    assert not stale, f"listed in pyproject.toml but not in the tree: {sorted(stale)}"


def test_every_data_file_kind_ships():
    data = CONFIG["package-data"]
    for name in CONFIG["packages"]:
        if not name.startswith("fitplan.data."):
            continue
        folder = ROOT / "data" / Path(*name.split(".")[2:])
        patterns = data.get(name, [])
        for path in folder.iterdir():
            if path.is_file():
                assert any(path.match(p) for p in patterns), (
                    f"{path.relative_to(ROOT)} is not in package-data for {name}: {patterns}"
                )
