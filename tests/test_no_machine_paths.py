"""No tracked file names a place on one machine (a work, home or root folder by its absolute path): commands and
results name places relative to the repository (``../shared/...``) or by Hub id."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from _scripts import ROOT

# Built from pieces, so that this file does not match itself. An absolute path starts a token: after a
# separator such as a space, quote, "=", ":" or "(", not inside a URL or a longer path.
_START = r"(?<![\w.~/\\-])"
_SLASH, _BACKSLASH = "/", r"\\"
MACHINE_PATH = re.compile(
    "|".join([
        _START + _SLASH + "work" + _SLASH,
        _START + _SLASH + "root" + _SLASH,
        _START + _SLASH + "home" + _SLASH + r"[^/\s]+" + _SLASH,
        _START + _SLASH + "Users" + _SLASH + r"[^/\s]+" + _SLASH,
        r"\b[A-Za-z]:" + f"(?:{_BACKSLASH}|{_SLASH})" + "Users" + f"(?:{_BACKSLASH}|{_SLASH})",
    ])
)


def machine_paths(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of every line of ``text`` that names an absolute machine path."""
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if MACHINE_PATH.search(line)]


def tracked_text_files() -> dict[str, str]:
    """``{path: text}`` of every file git tracks in this checkout, binary files (a NUL byte, not UTF-8) left out."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    files = {}
    for name in filter(None, listed.decode().split("\0")):
        path = ROOT / name
        if path.is_symlink() or not path.is_file():
            continue
        content = path.read_bytes()
        if b"\0" in content:
            continue
        try:
            files[name] = content.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return files


def _absolute(*parts: str) -> str:
    return _SLASH + _SLASH.join(parts)  # written in pieces, like the pattern


def test_the_pattern_finds_machine_paths_and_spares_relative_ones():
    found = [
        "--dataset " + _absolute("work", "shared", "data", "cifar10-jpeg"),
        "local-dir:" + _absolute("home", "alice", "checkpoints"),
        '"output_dir": "' + _absolute("root", "outputs") + '"',
        "open('" + _absolute("Users", "bob", "Desktop", "x.png") + "')",
        "C:" + "\\".join(["", "Users", "carol", "data"]),
        "c:" + _absolute("Users", "carol", "data"),
    ]
    spared = [
        "--dataset ../shared/data/cifar10-jpeg", "local-dir:../shared/checkpoints/resnet18",
        "https://example.org" + _absolute("work", "shared"), "src/framework" + _absolute("work", "x.py"),
        "~" + _absolute("work", "x"), "/tmp/select-default",
        "benchmarks/results/v2/report.md", "the home/ folder", "hf-hub:timm/resnet18.a1_in1k",
    ]
    assert [line for line in found if not MACHINE_PATH.search(line)] == []
    assert [line for line in spared if MACHINE_PATH.search(line)] == []
    line = "local-dir:" + _absolute("work", "shared")
    assert machine_paths(f"fine\n{line}\n") == [(2, line)]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_no_tracked_file_names_a_machine_path():
    files = tracked_text_files()
    assert "tests/test_no_machine_paths.py" in files  # the listing works (and this file is checked too)
    hits = [f"{name}:{number}: {line}" for name, text in files.items() for number, line in machine_paths(text)]
    assert hits == [], "absolute machine paths (name them relative to the repository, e.g. ../shared/...):\n" + \
        "\n".join(hits)
