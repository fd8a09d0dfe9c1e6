"""The installed distribution is one package, ``docnum``, mapped from the repository's folders."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {"docnum.api": "api", "docnum.cli": "cli", "docnum.shared": "shared",
           "docnum.workers": "workers"}


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed() -> None:
    """A new sub-package folder must be added to ``packages``, or the wheel silently lacks it."""
    config = _setuptools()
    assert config["package-dir"] == FOLDERS
    expected = {"docnum"}
    for package, folder in FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            expected.add(".".join([package, *relative.parts]))
    assert set(config["packages"]) == expected


@pytest.mark.e2e
def test_wheel_holds_only_docnum(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "var", "build", "node_modules", "__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("docnum-*.whl")
    tops = {name.split("/", 1)[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"docnum", wheel.name.split("-py3")[0] + ".dist-info"}
    names = zipfile.ZipFile(wheel).namelist()
    # Data files travel with their packages: migrations and the console's templates.
    assert "docnum/shared/migrations/env.py" in names
    assert any(n.startswith("docnum/api/console/templates/") for n in names)
