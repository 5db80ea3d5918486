"""Packaging: every folder of the package is a declared package, so `pip install` ships it without warnings."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_declared():
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(settings["packages"])
    folders = {
        ".".join(path.relative_to(ROOT).parts)
        for path in (ROOT / "hf_structguard").rglob("*")
        if path.is_dir() and path.name != "__pycache__" and any(child.is_file() for child in path.iterdir())
    } | {"hf_structguard"}
    assert folders - declared == set()  # setuptools: "Package would be ignored" for each one missing
    data = settings["package-data"]
    assert data["hf_structguard.anchors.attributes"] == ["*.json"]
